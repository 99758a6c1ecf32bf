"""Registry fixtures: an empty, migrated registry per test, on SQLite and on the local PostgreSQL.

Use `db_url` in any test that touches the registry; it runs the test twice:

- `sqlite`: a fresh SQLite file in the test's own ZOOENS_HOME;
- `postgresql` (marked `postgres`): one throw-away database `zooens_test_<random>` per
  test session, created and migrated once, emptied before each test (identities
  restarted, so ids start at 1), dropped at the end of the session. Skipped, with the
  reason, only when the server at ZOOENS_TEST_POSTGRES is unreachable.

`ZOOENS_DATABASE_URL` points at the database for the duration of the test, so code that
calls `session_scope()` without a URL uses it too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from tests.conftest import POSTGRES_ADMIN_URL


def _postgres_error() -> str | None:
    """None if the admin database answers, else why not."""
    engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        return None
    except Exception as exc:  # any failure means: skip the PostgreSQL half
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    """Whether the local PostgreSQL server answers (tests that need it skip otherwise)."""
    return _postgres_error() is None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL database for this test session, migrated to head, dropped at the end."""
    from zooens.service.db.session import dispose_engines, upgrade_to_head

    error = _postgres_error()
    if error is not None:
        pytest.skip(
            f"PostgreSQL is not reachable at {make_url(POSTGRES_ADMIN_URL).render_as_string()} "
            f"({error}); set ZOOENS_TEST_POSTGRES to a server's admin URL to run these tests"
        )
    name = f"zooens_test_{uuid.uuid4().hex[:12]}"
    admin: Engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_to_head(url)
        yield url
    finally:
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def empty_postgres(url: str) -> None:
    """Bring a shared test database to head and delete every row (identities restart at 1)."""
    from zooens.service.db.models import Base
    from zooens.service.db.session import get_engine, upgrade_to_head

    upgrade_to_head(url)  # a test may have downgraded it
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with get_engine(url).begin() as conn:
        conn.execute(text("SET LOCAL lock_timeout = '20s'"))
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, zooens_home, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The URL of an empty registry at the head migration; ZOOENS_DATABASE_URL points at it."""
    from zooens.service.db.session import dispose_engines, upgrade_to_head
    from zooens.settings import get_settings

    if request.param == "sqlite":
        url = f"sqlite:///{zooens_home / 'registry.db'}"
        upgrade_to_head(url)
    else:
        url = request.getfixturevalue("postgres_url")
        empty_postgres(url)
    monkeypatch.setenv("ZOOENS_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        yield url
    finally:
        dispose_engines()
        get_settings.cache_clear()
