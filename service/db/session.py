"""Engines, sessions and migrations of the registry.

`get_engine(url)` keeps one engine per URL (the settings' URL when none is given);
`session_scope(url)` is the unit of work (commit on success, roll back on error);
`upgrade_to_head(url)` runs the Alembic migrations shipped in the `migrations` package,
so it works from a source checkout and from an installed wheel alike. Tables come only
from those migrations. Upgrades of one database are serialised across processes (containers
starting together all run `zooens db upgrade`): see `migration_lock`.
"""

from __future__ import annotations

import importlib.util
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import FileLock, Timeout
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from zooens.settings import get_settings

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 30.0

MIGRATION_LOCK_KEY = 0x7A6F6F656E73
"""The PostgreSQL advisory lock every `upgrade_to_head` holds while it migrates ("zooens" in ASCII)."""

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
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})
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


def _sqlite_lock_path(url: str) -> Path | None:
    """The lock file beside a SQLite database file; None for an in-memory database."""
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path).expanduser().with_name(Path(path).name + ".upgrade.lock")


@contextmanager
def _file_lock(path: Path | None, shown: str) -> Iterator[None]:
    if path is None:
        yield
        return
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("another process is migrating %s; waiting for it to finish", shown)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextmanager
def migration_lock(url: str) -> Iterator[Connection]:
    """A connection in a transaction that holds the database's migration lock until that transaction has
    ended, waiting for the lock if another process holds it. Run the migrations on it.

    - PostgreSQL: the transaction-level advisory lock `MIGRATION_LOCK_KEY`, released by PostgreSQL when the
      transaction commits or rolls back, so a crashed upgrade never leaves it held. The next process in
      line then reads the committed revision and has nothing left to do.
    - SQLite (a file): an OS file lock on `<database>.upgrade.lock` beside it, taken before the transaction
      begins and released after it ends (by the OS if the process dies). In-memory SQLite: nothing to
      share, no lock.
    - Other databases: no lock; run one `zooens db upgrade` at a time.
    """
    engine = get_engine(url)
    shown = make_url(url).render_as_string(hide_password=True)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            key = {"key": MIGRATION_LOCK_KEY}
            if not conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), key).scalar():
                logger.info("another process is migrating %s; waiting for it to finish", shown)
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), key)
            yield conn
        return
    with _file_lock(_sqlite_lock_path(url) if is_sqlite(url) else None, shown), engine.begin() as conn:
        yield conn


def upgrade_to_head(url: str | None = None) -> None:
    """Apply every migration not applied yet (checked once per process and URL), under `migration_lock`,
    so any number of processes may upgrade the same database at once: one migrates, the others wait
    and then find it at head."""
    url = database_url(url)
    if url in _upgraded:
        return
    cfg = alembic_config(url)
    with migration_lock(url) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    _upgraded.add(url)
    logger.debug("registry at %s is at head %s", make_url(url).render_as_string(hide_password=True), head_revision())


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
