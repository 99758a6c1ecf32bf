"""What every claim needs on both backends: a writer's transaction on SQLite, row locks on PostgreSQL.

Claiming work is safe with many workers on both backends:

- PostgreSQL: candidates are selected `FOR UPDATE SKIP LOCKED`, so concurrent workers
  look at different rows and never wait for each other;
- SQLite: the claim runs in a `BEGIN IMMEDIATE` transaction, which takes the database's
  single write lock before reading, so claims are serialised (waiting up to the busy
  timeout) and never read a stale snapshot;
- on both, the row is taken with a compare-and-set `UPDATE ... WHERE <still claimable>`
  and the claim counts only if it changed exactly one row.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

CLAIM_BATCH = 8
"""How many candidates a claim looks at before giving up (others may take them first)."""


def begin_write(s: Session) -> None:
    """On SQLite, make the session's transaction a writer's (`BEGIN IMMEDIATE`) before it reads.

    pysqlite opens transactions lazily, right before the first INSERT/UPDATE/DELETE; a
    session that has written already holds the write lock and needs nothing more.
    """
    conn = s.connection()
    if conn.dialect.name != "sqlite":
        return
    dbapi_conn = conn.connection.driver_connection
    if dbapi_conn is not None and not dbapi_conn.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def skip_locked(s: Session) -> bool:
    """Whether candidates can be selected `FOR UPDATE SKIP LOCKED` (PostgreSQL)."""
    return s.get_bind().dialect.name == "postgresql"
