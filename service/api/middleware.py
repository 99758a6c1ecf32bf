"""The guard in front of every route: authentication and size limits before the body, security headers, no
internals in unexpected errors.

A pure ASGI middleware (not `BaseHTTPMiddleware`): it decides from the request line and the headers alone, so a
request without a valid token, or whose `Content-Length` is over its route's limit, is answered before a single byte
of its body is read; a chunked body is counted as it streams and cut at the limit. The per-route dependencies
(`require_token`, `read_access`) still run: this is the first line, not the only one.

Who may do what:

- writes (POST/PUT/PATCH/DELETE) need `Authorization: Bearer <token>`; the exceptions are reads that happen to be
  POSTs (predict) and the dashboard's sign-in and sign-out forms;
- reads (GET/HEAD, predict) are public unless `ZOOENS_PROTECT_READS` is set; then they need the bearer token or,
  for GET/HEAD only, the dashboard's session cookie (so the cookie can never be used for a cross-site write);
- always public: the dashboard's static JS/CSS, `/healthz`, `/readyz` and the OpenAPI document (no data in them).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from zooens.service.api.errors import (
    DATABASE_UNAVAILABLE_DETAIL,
    INTERNAL_ERROR_DETAIL,
    RETRY_AFTER_SECONDS,
    is_database_outage,
)
from zooens.service.auth import SESSION_COOKIE, token_name
from zooens.settings import Settings, get_settings

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

VERIFIED_TOKEN = "zooens_verified_token"
"""Key in the request's state: the token the guard verified for this request (the route dependencies then skip a
second look-up and a second `last_used_at` write)."""

API_PREFIX = "/api/v1"
MULTIPART_OVERHEAD = 64 * 1024
"""Room for the multipart boundaries and the form's other fields around an upload of `max_upload_bytes`."""

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PREDICT = re.compile(r"^/api/v1/ensembles/[^/]+/predict/?$")
_PUBLIC_PATHS = frozenset({f"{API_PREFIX}/healthz", f"{API_PREFIX}/readyz", "/openapi.json", "/docs", "/redoc"})
_SIGN_IN_PATHS = frozenset({"/dashboard/session", "/dashboard/session/end"})

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""Every page of ours: scripts and styles only from our own files (no inline code), no framing."""

DOCS_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'"
).replace("object-src", "worker-src 'self' blob:; object-src")
"""/docs and /redoc: Swagger UI and ReDoc come from our own server (files of the installed `fastapi-offline`
package, under /docs/static/) and start from script files, so scripts stay 'self' only. Both apply inline styles
as they render (ReDoc injects its stylesheet; Swagger UI sets style attributes), and ReDoc runs its search index
in a worker made from a blob: URL; inline *styles* and a worker of the page's own code cannot load anything from
elsewhere. They show only the OpenAPI document (no data, no token storage)."""

PLOT_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
"""A job's page only, for plotly.js: it applies inline styles while it draws (SVG text and hover labels; the
global stylesheet it would inject is served as a file instead, static/plotly.css). Scripts stay 'self' only, and
every value on that page is inserted as text, never as markup; inline *styles* alone cannot run code."""

_PLOT_PAGE = re.compile(r"^/dashboard/jobs/[^/]+/?$")

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


def body_limit(method: str, path: str, settings: Settings) -> tuple[int, str]:
    """The most bytes the body of this request may have, and the sentence naming the setting behind it: a dataset
    upload (plus room for the multipart framing), a predict, or anything else."""
    if method == "POST" and path.rstrip("/") == f"{API_PREFIX}/datasets":
        return (
            settings.max_upload_bytes + MULTIPART_OVERHEAD,
            f"the upload limit of {settings.max_upload_bytes:,} bytes (ZOOENS_MAX_UPLOAD_BYTES) plus "
            f"{MULTIPART_OVERHEAD:,} for the form",
        )
    if method == "POST" and _PREDICT.match(path):
        return (
            settings.max_predict_bytes,
            f"the limit of {settings.max_predict_bytes:,} bytes "
            "(ZOOENS_MAX_PREDICT_BYTES): send fewer or smaller images per request",
        )
    return settings.max_request_bytes, f"the limit of {settings.max_request_bytes:,} bytes (ZOOENS_MAX_REQUEST_BYTES)"


def is_public(path: str) -> bool:
    """Paths that never need a token: static assets (the dashboard's, Swagger UI's and ReDoc's), health probes, the
    OpenAPI document and its /docs and /redoc pages."""
    return path in _PUBLIC_PATHS or path.startswith(("/dashboard/static/", "/docs/static/"))


def needs_write_token(method: str, path: str) -> bool:
    """State-changing requests, except the POSTs that only read (predict) and the sign-in forms."""
    if method not in WRITE_METHODS:
        return False
    return not (_PREDICT.match(path) or path in _SIGN_IN_PATHS)


def bearer_token(headers: Headers) -> str | None:
    value = headers.get("authorization")
    if not value or not value.lower().startswith("bearer "):
        return None
    return value.split(" ", 1)[1].strip() or None


def cookie_token(headers: Headers) -> str | None:
    raw = headers.get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed Cookie header is simply no session
        return None
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value if morsel is not None and morsel.value else None


def _security_headers(path: str, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    present = {k.lower() for k, _ in headers}
    if path in ("/docs", "/redoc"):
        csp = DOCS_CONTENT_SECURITY_POLICY
    elif _PLOT_PAGE.match(path):
        csp = PLOT_CONTENT_SECURITY_POLICY
    else:
        csp = CONTENT_SECURITY_POLICY
    extra = [(b"content-security-policy", csp.encode())] + list(SECURITY_HEADERS)
    return headers + [(k, v) for k, v in extra if k not in present]


class _BodyTooLarge(Exception):
    """Raised inside the counting `receive` when a streamed body passes its limit."""


class GuardMiddleware:
    """Auth and size checks before the body, security headers on every answer, a generic 500 for the unexpected.

    `unauthorised_page(scope, message)` renders the dashboard's sign-in page for page requests (HTML 401); API
    requests get JSON. It is passed in so that this module does not depend on the dashboard.
    """

    def __init__(self, app: ASGIApp, unauthorised_page: Callable[[Scope, str], Awaitable[Any]] | None = None) -> None:
        self.app = app
        self.unauthorised_page = unauthorised_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        state = {"started": False, "cut": False}

        async def send_with_headers(message: Message) -> None:
            if state["cut"]:
                return  # we already answered 413: whatever the app says next is dropped
            if message["type"] == "http.response.start":
                state["started"] = True
                message = {**message, "headers": _security_headers(path, list(message.get("headers", [])))}
            await send(message)

        try:
            refusal = await self._refusal(scope)
        except Exception as exc:  # the token look-up needs the database
            if not is_database_outage(exc):
                raise
            logger.warning("database unavailable while checking a token for %s %s", scope.get("method"), path)
            refusal = 503, DATABASE_UNAVAILABLE_DETAIL, {"retry-after": str(RETRY_AFTER_SECONDS)}
        if refusal is not None:
            await self._answer(scope, send_with_headers, *refusal)
            return

        settings = get_settings()
        limit, why = body_limit(scope["method"], path, settings)
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            if state["cut"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # answer now: whatever the app makes of the exception (FastAPI turns it into a 400) is dropped
                    if not state["started"]:
                        await self._json(send_with_headers, 413, _too_large_message(why))
                    state["cut"] = True
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, counting_receive, send_with_headers)
        except Exception:
            if state["cut"]:
                return  # the body was cut at its limit and 413 already sent
            logger.exception("unexpected error in %s %s", scope.get("method"), path)
            if not state["started"]:
                await self._json(send_with_headers, 500, INTERNAL_ERROR_DETAIL)

    async def _refusal(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        """Why this request is refused before its body is read (status, message, headers), or None."""
        method: str = scope["method"]
        path: str = scope.get("path", "")
        headers = Headers(scope=scope)
        settings = get_settings()

        if not is_public(path):
            bearer = bearer_token(headers)
            if needs_write_token(method, path):
                if bearer is None:
                    return (
                        401,
                        (
                            "This request changes state and needs an API token: send 'Authorization: Bearer "
                            "<token>'. Create one with `zooens tokens create NAME`."
                        ),
                        {"www-authenticate": "Bearer"},
                    )
                name = await run_in_threadpool(token_name, bearer)
                if name is None:
                    return 401, _UNKNOWN_TOKEN, {"www-authenticate": "Bearer"}
                scope.setdefault("state", {})[VERIFIED_TOKEN] = (bearer, name)
            elif settings.protect_reads and path not in _SIGN_IN_PATHS:
                # GET/HEAD may use the dashboard's cookie; a POST that reads (predict) needs the bearer header
                candidate = bearer or (cookie_token(headers) if method in ("GET", "HEAD") else None)
                if candidate is None:
                    return (
                        401,
                        (
                            "Reads need an API token here (ZOOENS_PROTECT_READS is set): send 'Authorization: "
                            "Bearer <token>', or sign in on the dashboard."
                        ),
                        {"www-authenticate": "Bearer"},
                    )
                name = await run_in_threadpool(token_name, candidate)
                if name is None:
                    return 401, _UNKNOWN_TOKEN, {"www-authenticate": "Bearer"}
                scope.setdefault("state", {})[VERIFIED_TOKEN] = (candidate, name)

        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                return 400, f"Content-Length {length[:40]!r} is not a byte count; send the body's size in bytes.", {}
            limit, why = body_limit(method, path, settings)
            if int(length) > limit:
                return 413, _too_large_message(why), {}
        return None

    async def _answer(self, scope: Scope, send: Send, status: int, message: str, headers: dict[str, str]) -> None:
        path: str = scope.get("path", "")
        if (
            status == 401
            and self.unauthorised_page is not None
            and not path.startswith("/api/")
            and path not in _PUBLIC_PATHS
        ):
            response = await self.unauthorised_page(scope, message)
            await response(scope, _no_body, send)
            return
        await self._json(send, status, message, headers)

    @staticmethod
    async def _json(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"detail": detail}).encode()
        raw = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


_UNKNOWN_TOKEN = "The API token is unknown or revoked; create a new one with `zooens tokens create NAME`."


def _too_large_message(why: str) -> str:
    return f"The request body is larger than {why}; send less, or have the operator raise that setting."


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
