"""Each fine-tune run's own calibration: `finetune_runs.calibration`.

A JSON object: the run's temperature fitted on val (`ensemble.calibration.fit_temperature`) and the NLL,
Brier score and ECE of its temperature-scaled probabilities on val and test, with the ECE before scaling
(`pipeline.stages.calibrate`). Nullable: runs recorded before this revision have none. Added with a
native ALTER (`recreate="never"`), as 0002 explains.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("finetune_runs", recreate="never") as b:
        b.add_column(sa.Column("calibration", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("finetune_runs", recreate="never") as b:
        b.drop_column("calibration")
