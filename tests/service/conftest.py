"""Registry fixtures: a fresh database per test, on SQLite and on the local PostgreSQL."""
from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import POSTGRES_ADMIN_URL


def _postgres_reachable() -> bool:
    try:
        with create_engine(POSTGRES_ADMIN_URL).connect() as conn:
            conn.execute(text("select 1"))
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    return _postgres_reachable()


def _fresh_postgres_db():
    name = f"zooens_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    return admin, name, f"{base}/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, zooens_home, monkeypatch, postgres_available):
    """A migrated, empty registry; ZOOENS_DATABASE_URL points at it for the test."""
    from service.db.session import dispose_engines, upgrade_to_head
    from zooens.settings import get_settings

    if request.param == "sqlite":
        url = f"sqlite:///{zooens_home / 'registry.db'}"
        admin = name = None
    else:
        if not postgres_available:
            pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}")
        admin, name, url = _fresh_postgres_db()
    monkeypatch.setenv("ZOOENS_DATABASE_URL", url)
    get_settings.cache_clear()
    upgrade_to_head(url)
    yield url
    dispose_engines()
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
