"""inference cost, budgets, the accuracy-against-cost front, the ranking audit, kNN queries.

- `finetune_runs`: `gflops` and `params_count` of one forward pass at the job's resolution (counted by
  `torch.utils.flop_counter`), `latency_ms` (batch-1, measured on the worker's device) and
  `backbone_key` (runs with the same key share one forward pass).
- `ensembles`: the budget it was built under (`max_gflops`, `max_latency_ms`), its own cost
  (`gflops`, `latency_ms`: distinct forward passes) and `front` (JSON: the greedy path's prefixes
  and the accuracy-against-cost front over budgets).
- `jobs.ranking_audit` (JSON): how well kNN and LogME predicted the fine-tuned order.
- `knn_scores.knn_queries`: leave-one-out queries behind `knn_accuracy` (fewer than the training
  examples when a large dataset was subsampled).

All columns are nullable: rows written before this revision have no cost or audit. Added with
native ALTERs (`recreate="never"`), as 0002 explains.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = {
    "finetune_runs": [
        sa.Column("gflops", sa.Float(), nullable=True),
        sa.Column("params_count", sa.BigInteger(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("backbone_key", sa.String(length=512), nullable=True),
    ],
    "ensembles": [
        sa.Column("max_gflops", sa.Float(), nullable=True),
        sa.Column("max_latency_ms", sa.Float(), nullable=True),
        sa.Column("gflops", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("front", sa.JSON(), nullable=True),
    ],
    "jobs": [sa.Column("ranking_audit", sa.JSON(), nullable=True)],
    "knn_scores": [sa.Column("knn_queries", sa.Integer(), nullable=True)],
}


def upgrade() -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table, recreate="never") as b:
            for column in columns:
                b.add_column(column.copy())


def downgrade() -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table, recreate="never") as b:
            for column in reversed(columns):
                b.drop_column(column.name)
