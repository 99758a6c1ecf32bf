"""workers: each worker process's liveness (started, last seen, current job), for `/readyz`.

`id` is the worker's public id (random; the same text as `jobs.worker_id`); `host` and `pid`
are kept for operators only. No foreign key to `jobs`: a worker row outlives the jobs it ran,
and a beat must never wait on a job's row lock.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("workers") as b:
        b.create_index(b.f("ix_workers_last_seen"), ["last_seen"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("workers") as b:
        b.drop_index(b.f("ix_workers_last_seen"))
    op.drop_table("workers")
