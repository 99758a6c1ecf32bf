"""Who a request is: the API token checks and the dashboard's session cookie, shared by the API's guard and
dependencies (`zooens.service.api.middleware`, `.deps`) and the dashboard's sign-in
(`zooens.service.dashboard.router`), which never import each other."""

from __future__ import annotations

from zooens.service import registry
from zooens.service.db.session import session_scope

__all__ = ["SESSION_COOKIE", "token_is_valid", "token_name"]

SESSION_COOKIE = "zooens_session"
"""The dashboard's read session: an HttpOnly, SameSite=Strict cookie holding the API token (reads only)."""


def token_name(plain: str) -> str | None:
    """The name of the live API token `plain`, or None (the registry's own check; run it in a worker thread)."""
    with session_scope() as s:
        token = registry.verify_token(s, plain)
        return None if token is None else token.name


def token_is_valid(plain: str) -> bool:
    return token_name(plain) is not None
