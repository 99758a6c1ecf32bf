"""Engines, sessions and migrations of the registry.

`get_engine(url)` keeps one engine per URL (the settings' URL when none is given);
`session_scope(url)` is the unit of work (commit on success, roll back on error);
`upgrade_to_head(url)` runs the Alembic migrations shipped in the `migrations` package,
so it works from a source checkout and from an installed wheel alike. Tables come only
from those migrations.
"""
from __future__ import annotations

import importlib.util
import logging
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from zooens.settings import get_settings

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 30.0

_engines: dict[str, Engine] = {}
_lock = threading.Lock()
_upgraded: set[str] = set()


def database_url(url: str | None = None) -> str:
    """The given URL, or the configured one (`ZOOENS_DATABASE_URL`, else a SQLite file in `home`)."""
    return url or get_settings().resolved_database_url


def is_sqlite(url_or_engine: str | Engine) -> bool:
    """Whether a URL or engine talks to SQLite."""
    if isinstance(url_or_engine, Engine):
        return url_or_engine.dialect.name == "sqlite"
    return make_url(url_or_engine).get_backend_name() == "sqlite"


def _set_sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def get_engine(url: str | None = None) -> Engine:
    """One engine per URL, created on first use and cached.

    SQLite: the parent directory is created, WAL journal (readers never block the
    writer), foreign keys enforced (needed for ON DELETE CASCADE) and a busy timeout so
    concurrent writers wait for each other instead of failing. PostgreSQL and others:
    pre-ping pooled connections so a restarted server is survived.
    """
    url = database_url(url)
    with _lock:
        engine = _engines.get(url)
        if engine is not None:
            return engine
        if is_sqlite(url):
            path = make_url(url).database
            if path and path != ":memory:" and not path.startswith("file:"):
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
            )
            event.listen(engine, "connect", _set_sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every cached engine's connections and forget them (tests, forked processes)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _upgraded.clear()


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back if it raises.

    Objects stay readable after the block (`expire_on_commit=False`).
    """
    session = sessionmaker(bind=get_engine(url), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def migrations_dir() -> Path:
    """The Alembic script directory, found (not imported: it imports our models) as `zooens.migrations`."""
    spec = importlib.util.find_spec("zooens.migrations")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("zooens.migrations is not installed; reinstall zooens.")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def alembic_config(url: str | None = None) -> Config:
    """An Alembic configuration for `url` that needs no `alembic.ini`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", database_url(url).replace("%", "%%"))
    return cfg


def upgrade_to_head(url: str | None = None) -> None:
    """Apply every migration not applied yet (checked once per process and URL)."""
    url = database_url(url)
    if url in _upgraded:
        return
    cfg = alembic_config(url)
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    _upgraded.add(url)
    logger.debug("registry at %s is at head %s", make_url(url).render_as_string(hide_password=True),
                 head_revision())


def downgrade_to_base(url: str | None = None) -> None:
    """Undo every migration: drops all registry tables (tests, or starting over)."""
    url = database_url(url)
    cfg = alembic_config(url)
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    _upgraded.discard(url)


def head_revision() -> str:
    """The newest revision shipped with this version of zooens."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "the migrations package holds no revision"
    return head


def current_revision(url: str | None = None) -> str | None:
    """The revision the database is at; None for an empty database."""
    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_at_head(url: str | None = None) -> bool:
    """Whether the database is fully migrated; raises the driver's error when it is unreachable."""
    return current_revision(url) == head_revision()


def table_names(url: str | None = None) -> list[str]:
    """The tables the database holds, sorted."""
    return sorted(inspect(get_engine(url)).get_table_names())
