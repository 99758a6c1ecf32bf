"""Dependencies: settings, a database session, token checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Request
from sqlalchemy.orm import Session

from zooens.service.api.middleware import VERIFIED_TOKEN
from zooens.service.auth import SESSION_COOKIE, token_name
from zooens.service.db.session import session_scope
from zooens.settings import Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session() -> Iterator[Session]:
    with session_scope() as s:
        yield s


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
"""A session committed when the route function returns, before the response is sent (FastAPI's default
"request" scope commits after it: a client reading back what it just created could get a 404)."""


def _check_token(authorization: str | None, verified: tuple[str, str] | None = None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(
            status_code=401,
            detail="This request needs an API token: send 'Authorization: Bearer <token>'. "
            "Create one with `zooens tokens create NAME`.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    plain = authorization.split(" ", 1)[1].strip()
    if verified is not None and plain == verified[0]:
        return verified[1]  # the guard middleware looked this token up for this very request
    name = token_name(plain)
    if name is None:
        raise HTTPException(
            status_code=401,
            detail="The API token is unknown or revoked; create a new one with `zooens tokens create NAME`.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return name


def _verified(request: Request) -> tuple[str, str] | None:
    return getattr(request.state, VERIFIED_TOKEN, None)


def require_token(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """Every request that changes state must carry a valid token."""
    return _check_token(authorization, _verified(request))


def read_access(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Reads are public unless ZOOENS_PROTECT_READS is set; then a bearer token, or for GET/HEAD the dashboard's
    session cookie (browsers send no header when they follow a link or load an image)."""
    if not get_settings().protect_reads:
        return
    if authorization is None and request.method in ("GET", "HEAD"):
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            authorization = f"Bearer {cookie}"
    _check_token(authorization, _verified(request))


TokenDep = Annotated[str, Depends(require_token)]

MAX_ID = 2**31 - 1


def _id_path(description: str):
    return Annotated[int, Path(ge=1, le=MAX_ID, description=description)]


JobId = _id_path("A job's id.")
DatasetId = _id_path("A dataset's id.")
EnsembleId = _id_path("An ensemble's id.")
