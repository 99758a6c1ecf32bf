"""kNN@1 beside kNN@k: `knn_scores.knn1_accuracy`.

The leave-one-out 1-NN accuracy of a model's embeddings, measured on the same queries and from the
same neighbour search as `knn_accuracy` (whose `k` the job may now choose from the class sizes:
`k="auto"`, recorded in `knn_scores.k` as before). Nullable: rows written before this revision have
none. Added with a native ALTER (`recreate="never"`), as 0002 explains.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("knn_scores", recreate="never") as b:
        b.add_column(sa.Column("knn1_accuracy", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("knn_scores", recreate="never") as b:
        b.drop_column("knn1_accuracy")
