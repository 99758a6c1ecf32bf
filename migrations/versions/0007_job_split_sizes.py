"""the sizes a job really used: `jobs.n_train_used` and `jobs.n_val_used`.

`params` keeps the sizes the user asked for (`n_train`, `n_val`: caps on the split drawn from train
when the dataset has no val split); these columns hold the sizes of the train and val splits the job
ran on, written when its first model is embedded (a 99-image folder asked for 800/200 uses 79/20;
a dataset with its own val split uses its splits whatever was asked). Nullable: a job that has not
embedded yet, or that ran before this revision, has none. Added with native ALTERs
(`recreate="never"`), as 0002 explains.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = ("n_train_used", "n_val_used")


def upgrade() -> None:
    with op.batch_alter_table("jobs", recreate="never") as b:
        for name in COLUMNS:
            b.add_column(sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", recreate="never") as b:
        for name in reversed(COLUMNS):
            b.drop_column(name)
