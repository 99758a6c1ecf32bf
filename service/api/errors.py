"""Domain errors to HTTP answers, in one place: JSON `{"detail": message}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from zooens.errors import (
    ConfigError,
    ConflictError,
    DatasetError,
    JobError,
    MissingWeightsError,
    NotFoundError,
    OfflineError,
    PullError,
    TooLargeError,
    UnknownModelError,
    WeightsMismatchError,
    ZooensError,
)

logger = logging.getLogger(__name__)

INTERNAL_ERROR_DETAIL = (
    "The server failed on this request; the error is in its log (nothing about it is sent back). "
    "Try again, and if it persists report it with the time of the request."
)
"""What an unexpected error answers: never the exception's text, which may hold server paths or SQL."""

STATUS = [
    (NotFoundError, 404),
    (UnknownModelError, 404),
    (ConflictError, 409),
    (TooLargeError, 413),
    (DatasetError, 422),
    (ConfigError, 422),
    (MissingWeightsError, 422),
    (WeightsMismatchError, 422),
    (JobError, 409),
    (OfflineError, 503),  # this server cannot reach the hub: nothing the request can change
    (PullError, 507),  # the hub cache's disk lacks the space
]


def status_for(exc: ZooensError) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 400


def install(app: FastAPI) -> None:
    @app.exception_handler(ZooensError)
    async def _domain(_: Request, exc: ZooensError) -> JSONResponse:
        return JSONResponse(status_code=status_for(exc), content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        """A body that a domain check refused (an unknown strategy, a bad option) answers with that
        check's message, as the CLI prints it; other validation errors keep FastAPI's answer."""
        for error in exc.errors():
            cause = (error.get("ctx") or {}).get("error")
            if isinstance(cause, ZooensError):
                return JSONResponse(status_code=status_for(cause), content={"detail": str(cause)})
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        """The last resort (the guard middleware normally answers first): a generic 500, the traceback logged."""
        logger.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(status_code=500, content={"detail": INTERNAL_ERROR_DETAIL})
