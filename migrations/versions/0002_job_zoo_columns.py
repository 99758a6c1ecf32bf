"""the job's zoo in real columns: `jobs.zoo_spec` -> `jobs.zoo`, and `jobs.zoo_models`.

`zoo` is the zoo as the user gave it; `zoo_models` (JSON list, NOT NULL, default `[]`)
the weight-set names it resolved to, which earlier versions kept in
`params["_zoo_models"]`: existing rows have them moved out of `params`. The downgrade
puts them back.

On SQLite both changes are native ALTERs (`recreate="never"`: RENAME COLUMN needs
SQLite 3.25, DROP COLUMN 3.35). A copy-and-move of `jobs` would drop the old table while
foreign keys are enforced, and that DROP's implicit DELETE cascades to every job's units,
scores, runs and ensembles.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ZOO_MODELS_KEY = "_zoo_models"

# A frozen view of the columns this revision reads and writes.
_jobs = sa.table(
    "jobs", sa.column("id", sa.Integer()), sa.column("params", sa.JSON()), sa.column("zoo_models", sa.JSON())
)


def _rewrite_rows(change: Callable[[dict[str, Any], list[str]], tuple[dict[str, Any], list[str]] | None]) -> None:
    """Apply `change(params, zoo_models)` to every job; it returns the new pair, or None to leave the row."""
    conn = op.get_bind()
    for job_id, params, zoo_models in conn.execute(sa.select(_jobs.c.id, _jobs.c.params, _jobs.c.zoo_models)).all():
        changed = change(dict(params or {}), list(zoo_models or []))
        if changed is not None:
            new_params, new_zoo_models = changed
            conn.execute(
                sa.update(_jobs).where(_jobs.c.id == job_id).values(params=new_params, zoo_models=new_zoo_models)
            )


def _out_of_params(params: dict[str, Any], zoo_models: list[str]) -> tuple[dict[str, Any], list[str]] | None:
    if ZOO_MODELS_KEY not in params:
        return None
    names = params.pop(ZOO_MODELS_KEY)
    return params, [str(n) for n in (names or [])]


def _into_params(params: dict[str, Any], zoo_models: list[str]) -> tuple[dict[str, Any], list[str]] | None:
    if not zoo_models:
        return None
    return {**params, ZOO_MODELS_KEY: zoo_models}, zoo_models


def upgrade() -> None:
    with op.batch_alter_table("jobs", recreate="never") as b:
        b.alter_column("zoo_spec", new_column_name="zoo", existing_type=sa.Text(), existing_nullable=False)
        b.add_column(sa.Column("zoo_models", sa.JSON(), server_default="[]", nullable=False))
    _rewrite_rows(_out_of_params)


def downgrade() -> None:
    _rewrite_rows(_into_params)
    with op.batch_alter_table("jobs", recreate="never") as b:
        b.drop_column("zoo_models")
        b.alter_column("zoo", new_column_name="zoo_spec", existing_type=sa.Text(), existing_nullable=False)
