"""API tokens: only a token's sha256 is stored; the plain token is shown once, at creation."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from zooens.errors import ConflictError, NotFoundError
from zooens.service.db.models import ApiToken, utcnow

__all__ = ["TOKEN_PREFIX", "create_token", "hash_token", "list_tokens", "revoke_token", "verify_token"]

TOKEN_PREFIX = "zoo_"


def hash_token(plain: str) -> str:
    """The sha256 hex digest under which a token is stored."""
    return hashlib.sha256(plain.encode()).hexdigest()


def create_token(s: Session, name: str) -> tuple[str, ApiToken]:
    """A new token named `name`: the plain token (shown once, never stored) and its row.

    ConflictError if a token with that name exists (revoked ones included: names stay unique).
    """
    if s.scalar(select(ApiToken).where(ApiToken.name == name)) is not None:
        raise ConflictError(f"A token named {name!r} exists; revoke it or choose another name.")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(plain), prefix=plain[: len(TOKEN_PREFIX) + 6])
    s.add(row)
    s.flush()
    return plain, row


def verify_token(s: Session, plain: str) -> ApiToken | None:
    """The live token matching `plain` (its last use stamped), or None if unknown or revoked."""
    if not plain:
        return None
    digest = hash_token(plain)
    row = s.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at is not None:
        return None
    row.last_used_at = utcnow()
    s.flush()
    return row


def revoke_token(s: Session, name_or_id: str | int) -> ApiToken:
    """Revoke a token by name (or by id); revoking twice keeps the first time."""
    row = s.scalar(select(ApiToken).where(ApiToken.name == str(name_or_id)))
    if row is None and str(name_or_id).isdigit():
        row = s.get(ApiToken, int(name_or_id))
    if row is None:
        raise NotFoundError(f"No token named {name_or_id!r}; see `zooens tokens list`.")
    row.revoked_at = row.revoked_at or utcnow()
    s.flush()
    return row


def list_tokens(s: Session) -> list[ApiToken]:
    """Every token, revoked ones included, oldest first."""
    return list(s.scalars(select(ApiToken).order_by(ApiToken.id)))
