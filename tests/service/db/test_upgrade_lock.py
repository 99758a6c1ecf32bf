"""`zooens db upgrade` run by several processes at once (containers starting together): one migrates under the
migration lock, the others wait for it and find the database at head. Real processes, real PostgreSQL and SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_ADMIN_URL
from zooens.service.db.models import Base
from zooens.service.db.session import MIGRATION_LOCK_KEY, head_revision

ZOOENS = Path(sys.executable).parent / "zooens"
N_PROCESSES = 3
WAIT_S = 120.0  # bound on waits for the processes (they take a few seconds each); never reached when all is well


@pytest.fixture
def fresh_postgres_url(postgres_available: bool) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database (no migration applied), dropped after the test."""
    if not postgres_available:
        pytest.skip(
            f"PostgreSQL is not reachable at {make_url(POSTGRES_ADMIN_URL).render_as_string()}; "
            "set ZOOENS_TEST_POSTGRES to a server's admin URL to run this test"
        )
    name = f"zooens_test_upgrade_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def start_upgrades(url: str, home: Path) -> list[tuple[subprocess.Popen, Path, Path]]:
    """Start N_PROCESSES `zooens -v db upgrade` at once; each with its stdout and stderr files."""
    env = {**os.environ, "ZOOENS_DATABASE_URL": url, "ZOOENS_HOME": str(home)}
    started = []
    for i in range(N_PROCESSES):
        out, err = home / f"upgrade-{i}.out", home / f"upgrade-{i}.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            started.append(
                (
                    subprocess.Popen([str(ZOOENS), "-v", "db", "upgrade"], env=env, stdout=stdout, stderr=stderr),
                    out,
                    err,
                )
            )
    return started


def finish(started: list[tuple[subprocess.Popen, Path, Path]]) -> list[tuple[int, str, str]]:
    return [(p.wait(timeout=WAIT_S), out.read_text(), err.read_text()) for p, out, err in started]


def wait_until(condition, started: list[tuple[subprocess.Popen, Path, Path]], what: str) -> None:
    """Poll `condition` until true; fail at once if an upgrade ends first (it must be waiting)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        ended = [(p.returncode, err.read_text()[-500:]) for p, _, err in started if p.poll() is not None]
        assert not ended, f"an upgrade ended while the migration lock was held: {ended}"
        assert time.monotonic() < deadline, f"the upgrades never {what}"
        time.sleep(0.1)


def assert_all_succeeded_at_head(results: list[tuple[int, str, str]], url: str) -> None:
    for code, out, err in results:
        assert code == 0, f"a concurrent `zooens db upgrade` failed:\n{err[-3000:]}"
        assert f"database at revision {head_revision()}" in out
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head_revision()]
            tables = set(conn.dialect.get_table_names(conn))
    finally:
        engine.dispose()
    assert {t.name for t in Base.metadata.sorted_tables} <= tables


@pytest.mark.slow
@pytest.mark.postgres
def test_three_concurrent_upgrades_of_a_fresh_postgres_database_all_succeed(fresh_postgres_url, tmp_path):
    """Without the lock, 2 of 3 failed with UniqueViolation / "already exists" in nearly every try."""
    assert_all_succeeded_at_head(finish(start_upgrades(fresh_postgres_url, tmp_path)), fresh_postgres_url)


@pytest.mark.slow
@pytest.mark.postgres
def test_upgrades_wait_for_the_advisory_lock_then_all_succeed(fresh_postgres_url, tmp_path):
    """Deterministic contention: the test holds the advisory lock until all three processes are seen waiting
    for it in pg_locks (and none has migrated anything), then lets them go."""
    waiting = text(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database() "
        "AND ((l.classid::bigint << 32) | l.objid::bigint) = :key"
    )
    engine = create_engine(fresh_postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as holder:
            holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            started = start_upgrades(fresh_postgres_url, tmp_path)
            wait_until(
                lambda: holder.execute(waiting, {"key": MIGRATION_LOCK_KEY}).scalar() == N_PROCESSES,
                started,
                "waited for the advisory lock",
            )
            assert holder.execute(text("SELECT to_regclass('alembic_version')")).scalar() is None
            assert all("another process is migrating" in err.read_text() for _, _, err in started)
            holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            assert_all_succeeded_at_head(finish(started), fresh_postgres_url)
    finally:
        engine.dispose()


@pytest.mark.slow
def test_three_concurrent_upgrades_of_a_fresh_sqlite_file_all_succeed(tmp_path):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    assert_all_succeeded_at_head(finish(start_upgrades(url, tmp_path)), url)


@pytest.mark.slow
def test_sqlite_upgrades_wait_for_the_lock_file(tmp_path):
    """While the lock file beside the database is held, every upgrade says it waits and none opens the database;
    released, all three complete."""
    db = tmp_path / "registry.db"
    url = f"sqlite:///{db}"
    with FileLock(tmp_path / "registry.db.upgrade.lock"):
        started = start_upgrades(url, tmp_path)
        wait_until(
            lambda: all("another process is migrating" in err.read_text() for _, _, err in started),
            started,
            "said they wait for the lock file",
        )
        assert not db.exists()
    assert_all_succeeded_at_head(finish(started), url)
