"""Engines and sessions: SQLite settings, caching, commit and rollback, UTC timestamps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text

from zooens.service import registry
from zooens.service.db import models
from zooens.service.db.session import get_engine, session_scope


def test_sqlite_engine_uses_wal_foreign_keys_and_a_busy_timeout(tmp_path):
    url = f"sqlite:///{tmp_path / 'sub' / 'r.db'}"
    engine = get_engine(url)
    assert get_engine(url) is engine
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000
    assert (tmp_path / "sub" / "r.db").exists()
    engine.dispose()


def test_default_url_comes_from_the_settings(db_url):
    assert str(get_engine().url.render_as_string(hide_password=False)) == db_url


def test_session_scope_commits_or_rolls_back(db_url):
    with pytest.raises(RuntimeError):
        with session_scope() as s:
            registry.create_token(s, "lost")
            raise RuntimeError("boom")
    with session_scope() as s:
        registry.create_token(s, "kept")
    with session_scope() as s:
        assert [t.name for t in registry.list_tokens(s)] == ["kept"]


def test_timestamps_are_aware_utc_on_the_way_back(db_url):
    berlin = timezone(timedelta(hours=2))
    local_noon = datetime(2030, 6, 1, 12, 0, tzinfo=berlin)
    with session_scope() as s:
        _, tok = registry.create_token(s, "t")
        tok.revoked_at = local_noon
        tok.last_used_at = datetime(2030, 6, 1, 10, 0)  # naive values are taken as UTC
    with session_scope() as s:
        tok = s.scalars(select(models.ApiToken)).one()
        assert tok.revoked_at == local_noon and tok.revoked_at.utcoffset() == timedelta(0)
        assert tok.last_used_at == datetime(2030, 6, 1, 10, 0, tzinfo=timezone.utc)
        assert tok.created_at.tzinfo is not None
