"""Domain errors to HTTP answers, in one place: JSON `{"detail": message}`."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from zooens.errors import (
    ConfigError,
    ConflictError,
    DatasetError,
    JobError,
    MissingWeightsError,
    NotFoundError,
    TooLargeError,
    UnknownModelError,
    WeightsMismatchError,
    ZooensError,
)

logger = logging.getLogger(__name__)

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
