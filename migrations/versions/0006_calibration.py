"""calibration: the ensemble's temperature and calibration metrics, and the job's warnings.

- `ensembles`: `temperature` (fitted on val by minimising its NLL, Guo et al. 2017; predictions
  apply it), the calibrated ensemble's `val_nll`, `val_brier`, `val_ece`, `test_nll`, `test_brier`,
  `test_ece`, the ECE (and test NLL) before scaling (`uncalibrated_val_ece`, `uncalibrated_test_nll`,
  `uncalibrated_test_ece`), and `reliability` (JSON: 15 confidence bins of [count, mean confidence,
  accuracy] on test, or val without a test split).
- `jobs.warnings` (JSON, a list of strings): why the job's val numbers may not be trusted (a val split
  under 50 images, an ensemble val cross-entropy under 1e-3).

All columns are nullable: rows written before this revision have none (an ensemble without a
temperature predicts with T = 1). Added with native ALTERs (`recreate="never"`), as 0002 explains.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = {
    "ensembles": [
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("val_nll", sa.Float(), nullable=True),
        sa.Column("val_brier", sa.Float(), nullable=True),
        sa.Column("val_ece", sa.Float(), nullable=True),
        sa.Column("test_nll", sa.Float(), nullable=True),
        sa.Column("test_brier", sa.Float(), nullable=True),
        sa.Column("test_ece", sa.Float(), nullable=True),
        sa.Column("uncalibrated_val_ece", sa.Float(), nullable=True),
        sa.Column("uncalibrated_test_nll", sa.Float(), nullable=True),
        sa.Column("uncalibrated_test_ece", sa.Float(), nullable=True),
        sa.Column("reliability", sa.JSON(), nullable=True),
    ],
    "jobs": [sa.Column("warnings", sa.JSON(), nullable=True)],
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
