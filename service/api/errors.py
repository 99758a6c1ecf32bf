"""Errors to HTTP answers, in one place.

Every error answer is JSON `{"detail": message}`, a sentence saying what was wrong and what to change (the
`Message` schema). A request the schema refuses (422) carries the same sentence and, beside it, the list of
problems as `errors: [{loc, msg, type}]` (never the values sent: they may be anything, NaN included, which JSON
cannot encode). The statuses:

- the domain errors (`zooens.errors`) by `STATUS`;
- a database that cannot be reached: 503 with Retry-After, as /readyz says;
- 405 with an `Allow` header naming every method of that path (OPTIONS answers 204 with the same header);
- anything unexpected: a generic 500, the traceback only in the server's log.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, get_route_path

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

DATABASE_UNAVAILABLE_DETAIL = (
    "The registry's database cannot be reached right now, so this request was not served; try again in a few "
    "seconds (GET /api/v1/readyz answers 200 once it is back). If it persists, the operator should check the "
    "database server and ZOOENS_DATABASE_URL."
)
"""What a request answers while the database is down (503): never the driver's text, which names the server."""

RETRY_AFTER_SECONDS = 5

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


class ValidationIssue(BaseModel):
    """One problem with a request: where (`loc`, e.g. `["body", "max_gflops"]`), what, and its kind."""

    loc: list[str | int]
    msg: str
    type: str


class Message(BaseModel):
    """Every error answer: `detail` says what was wrong and what to change."""

    detail: str
    errors: list[ValidationIssue] | None = Field(
        default=None, description="For a request the schema refused (422): each problem, where and what."
    )


def status_for(exc: ZooensError) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 400


def is_database_outage(exc: BaseException) -> bool:
    """Whether `exc` means the database cannot be reached (down, refusing, a lost connection, a full pool), as
    opposed to a bug in a query."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)


def database_unavailable() -> JSONResponse:
    return JSONResponse(
        status_code=503,
        content={"detail": DATABASE_UNAVAILABLE_DETAIL},
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def validation_issues(exc: RequestValidationError) -> list[ValidationIssue]:
    """The problems, without the values sent (which may not be JSON: NaN, bytes)."""
    out = []
    for error in exc.errors():
        loc = [
            part if isinstance(part, (str, int)) and not isinstance(part, bool) else _text(part)
            for part in error.get("loc", ())
        ]
        out.append(
            ValidationIssue(
                loc=loc, msg=_text(error.get("msg", "invalid")), type=_text(error.get("type", "value_error"))
            )
        )
    return out


def validation_detail(issues: list[ValidationIssue]) -> str:
    """One readable sentence: 'body.max_gflops: Input should be a finite number; query.limit: ...'."""
    parts = []
    for issue in issues[:10]:
        where = ".".join(str(p) for p in issue.loc) or "request"
        parts.append(f"{where}: {issue.msg}")
    more = f" (and {len(issues) - 10} more)" if len(issues) > 10 else ""
    return "The request is invalid: " + "; ".join(parts) + more + "."


PROBED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """The methods some route answers at this request's path.

    A path the API documents as it is (`/api/v1/datasets/register`) has the methods the OpenAPI document gives
    it, though a parametrised path (`/api/v1/datasets/{dataset_id}`) matches it too; any other path has those
    for which the app's router finds a route."""
    path = get_route_path(request.scope)
    documented_here = request.app.openapi().get("paths", {}).get(path)
    if documented_here is not None and "{" not in path:
        return [method for method in PROBED_METHODS if method.lower() in documented_here]
    methods = []
    for method in PROBED_METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            methods.append(method)
    return methods


def _method_not_allowed(request: Request, methods: list[str]) -> Response:
    allow = ", ".join([*methods, "OPTIONS"])
    if request.method == "OPTIONS":
        return Response(status_code=204, headers={"Allow": allow})
    return JSONResponse(
        status_code=405,
        content={"detail": f"{request.method} is not allowed on {request.url.path}; use {', '.join(methods)}."},
        headers={"Allow": allow},
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(ZooensError)
    async def _domain(_: Request, exc: ZooensError) -> JSONResponse:
        return JSONResponse(status_code=status_for(exc), content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        """A body that a domain check refused (an unknown strategy, a bad option) answers with that check's
        message, as the CLI prints it; other problems are listed (`Message.errors`) and summed up in `detail`.

        A path a static route owns (`GET /datasets/register`) but a parametrised route matched for another method
        (`/datasets/{dataset_id}`) is a wrong method, 405, not an invalid id."""
        if any(error.get("loc", ())[:1] == ("path",) for error in exc.errors()):
            methods = allowed_methods(request)
            if methods and request.method not in methods:
                return _method_not_allowed(request, methods)
        for error in exc.errors():
            cause = (error.get("ctx") or {}).get("error")
            if isinstance(cause, ZooensError):
                return JSONResponse(status_code=status_for(cause), content={"detail": str(cause)})
        issues = validation_issues(exc)
        body = Message(detail=validation_detail(issues), errors=issues)
        return JSONResponse(status_code=422, content=body.model_dump())

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            methods = allowed_methods(request)
            if methods:
                return _method_not_allowed(request, methods)
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        """The last resort (the guard middleware normally answers first): a generic 500, the traceback logged."""
        logger.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(status_code=500, content={"detail": INTERNAL_ERROR_DETAIL})

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if not is_database_outage(exc):
            return await _unexpected(request, exc)
        logger.warning("database unavailable in %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return database_unavailable()

    for cls in (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, sa_exc.DBAPIError):
        app.add_exception_handler(cls, _database)


ERROR_DESCRIPTIONS = {
    400: "The request is malformed: a header or a multipart body that cannot be parsed.",
    401: "No API token, or an unknown or revoked one (reads too, when ZOOENS_PROTECT_READS is set).",
    404: "No such resource, or one the request names does not exist.",
    409: "The resource's state does not allow this now.",
    413: "The request body, or an image or archive in it, is over its limit; `detail` names the setting.",
    422: "The request is invalid: `detail` says why; `errors` lists each problem when the schema refused it.",
    503: "The database cannot be reached: Retry-After says when to try again, GET /api/v1/readyz when it is back.",
    507: "The server lacks the disk space for this.",
}
"""What each error status means on any operation; an operation may say more of its own."""

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}}


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these error statuses, each with the `Message` schema and its general meaning."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"model": Message, "description": ERROR_DESCRIPTIONS[code]}
        if code == 503:
            entry["headers"] = _RETRY_AFTER
        out[code] = entry
    return out


def described(code: int, description: str) -> dict[int | str, dict[str, Any]]:
    """One error status with an operation's own description (and the `Message` schema)."""
    entry = documented(code)[code]
    entry["description"] = description
    return {code: entry}


COMMON_ERRORS = documented(400, 401, 413, 422, 503)
"""What any API operation may answer: a malformed request, no token, a body over its limit, invalid parameters,
the database down."""
