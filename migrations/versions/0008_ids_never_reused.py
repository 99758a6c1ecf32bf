"""ids are never given twice: SQLite's `AUTOINCREMENT` on the tables whose ids name things in URLs.

SQLite gives a new row the largest id in its table plus one, so deleting the newest job gave its id
to the next one and old links (`/dashboard/jobs/7`, `zooens jobs show 7`) pointed at another job.
With `AUTOINCREMENT` it takes the largest id the table ever held plus one (kept in
`sqlite_sequence`). PostgreSQL's sequences never go back: nothing changes there.

Tables: `datasets`, `jobs`, `finetune_runs`, `ensembles`, `api_tokens` (`AUTOINCREMENT`), and
`job_units`, `knn_scores`, `ensemble_members` rebuilt unchanged because their foreign keys point
at the first ones. SQLite can add `AUTOINCREMENT` only by building the table again. A batch
copy-and-move drops the old table, and with foreign keys enforced that DROP's implicit DELETE
cascades to every child row (0002 explains); the pragma that turns them off does nothing inside a
transaction. So each table is renamed aside first (SQLite then points the children's foreign keys
at the renamed parents), built again from its own stored `CREATE TABLE` with only the `id` column's
clause changed, filled parents first, and the renamed tables are dropped children first, when
nothing refers to them any more. Ids already freed before this revision cannot be known; the
sequence starts after each table's largest id.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Callable

from alembic import op
from sqlalchemy import text
from sqlalchemy.engine import Connection

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

AUTOINCREMENT = ("datasets", "jobs", "finetune_runs", "ensembles", "api_tokens")
"""Tables whose ids appear in URLs and commands."""

REBUILT = (
    "datasets",
    "jobs",
    "job_units",
    "knn_scores",
    "finetune_runs",
    "ensembles",
    "ensemble_members",
    "api_tokens",
)
"""Every table rebuilt, parents before children (each table referring to one of AUTOINCREMENT is here)."""

ASIDE = "_0008_old_"

PLAIN_ID = "\tid INTEGER NOT NULL, \n"
AUTO_ID = "\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, \n"
TABLE_KEY = "\tPRIMARY KEY (id), \n"


def _with_autoincrement(table: str, sql: str) -> str:
    if sql.count(PLAIN_ID) != 1 or sql.count(TABLE_KEY) != 1:
        raise RuntimeError(f"Table {table} is not as migrations 0001-0007 left it; cannot add AUTOINCREMENT:\n{sql}")
    return sql.replace(PLAIN_ID, AUTO_ID).replace(TABLE_KEY, "")


def _without_autoincrement(table: str, sql: str) -> str:
    if sql.count(AUTO_ID) != 1:
        raise RuntimeError(f"Table {table} is not as migration 0008 left it; cannot remove AUTOINCREMENT:\n{sql}")
    sql = sql.replace(AUTO_ID, PLAIN_ID)
    # the table's key goes back where CREATE TABLE put it: before its first table constraint
    starts = [sql.find(word) for word in ("\tFOREIGN KEY", "\tCONSTRAINT", "\tUNIQUE", "\tCHECK")]
    first = min((i for i in starts if i >= 0), default=-1)
    if first < 0:
        raise RuntimeError(f"Table {table} has no table constraint to put its key before:\n{sql}")
    return sql[:first] + TABLE_KEY + sql[first:]


def _rebuild(conn: Connection, change: Callable[[str, str], str], tables: tuple[str, ...]) -> None:
    """Build each of REBUILT again from its stored SQL (`change`d for `tables`), keeping every row."""
    stored = {
        name: conn.execute(
            text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :n"), {"n": name}
        ).scalar_one()
        for name in REBUILT
    }
    indexes = [
        (name, sql)
        for name, table, sql in conn.execute(
            text("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
        ).all()
        if table in REBUILT
    ]
    for table in REBUILT:  # renamed aside: SQLite points the children's foreign keys at the renamed tables
        conn.execute(text(f'ALTER TABLE "{table}" RENAME TO "{ASIDE}{table}"'))
    for name, _ in indexes:  # index names are global: free them for the new tables
        conn.execute(text(f'DROP INDEX "{name}"'))
    for table in REBUILT:
        sql = stored[table]
        conn.exec_driver_sql(change(table, sql) if table in tables else sql)
        columns = ", ".join(f'"{c[1]}"' for c in conn.execute(text(f'PRAGMA table_info("{ASIDE}{table}")')).all())
        conn.execute(text(f'INSERT INTO "{table}" ({columns}) SELECT {columns} FROM "{ASIDE}{table}"'))
    for _, sql in indexes:
        conn.exec_driver_sql(sql)
    for table in reversed(REBUILT):  # children first: nothing refers to a renamed table when it goes
        conn.execute(text(f'DROP TABLE "{ASIDE}{table}"'))


def _sqlite() -> Connection | None:
    """The connection to migrate when it is SQLite; None on other databases (nothing to do)."""
    if op.get_context().dialect.name != "sqlite":
        return None
    if op.get_context().as_sql:
        raise RuntimeError("Migration 0008 reads SQLite's stored schema: run it on the database, not with --sql.")
    return op.get_bind()


def upgrade() -> None:
    conn = _sqlite()
    if conn is not None:
        _rebuild(conn, _with_autoincrement, AUTOINCREMENT)


def downgrade() -> None:
    conn = _sqlite()
    if conn is not None:
        _rebuild(conn, _without_autoincrement, AUTOINCREMENT)
