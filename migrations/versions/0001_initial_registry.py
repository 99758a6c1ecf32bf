"""initial registry: zoo models, datasets, jobs and their units, embeddings, kNN scores,
fine-tune runs, ensembles and their members, API tokens.

Written to run unchanged on PostgreSQL and on SQLite (index changes in batch mode).
Timestamps are `timestamptz`; JSON columns are the portable `JSON` type; statuses are
VARCHAR with a CHECK constraint (no native enum types to create or drop).

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

# Frozen copies: a later change to the models must come with a new revision.
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
UNIT_STATUSES = ("pending", "running", "done", "failed")


revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("storage_path", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint", "source", name="uq_datasets_fingerprint_source"),
    )
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_datasets_fingerprint"), ["fingerprint"], unique=False)

    op.create_table(
        "embeddings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cache_key", sa.String(length=64), nullable=False),
        sa.Column("model_name", sa.String(length=255), nullable=False),
        sa.Column("weights_sha256", sa.String(length=64), nullable=True),
        sa.Column("dataset_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("split", sa.String(length=16), nullable=False),
        sa.Column("preprocessing", sa.JSON(), nullable=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("images_per_s", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("cache_key"),
    )
    with op.batch_alter_table("embeddings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_embeddings_dataset_fingerprint"), ["dataset_fingerprint"], unique=False)
        batch_op.create_index(batch_op.f("ix_embeddings_model_name"), ["model_name"], unique=False)

    op.create_table(
        "zoo_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("arch", sa.String(length=255), nullable=False),
        sa.Column("tag", sa.String(length=255), nullable=True),
        sa.Column("origin", sa.String(length=32), nullable=False),
        sa.Column("source_kind", sa.String(length=32), nullable=True),
        sa.Column("source_path", sa.Text(), nullable=True),
        sa.Column("hub_id", sa.String(length=255), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("input_config", sa.JSON(), nullable=True),
        sa.Column("embed_dim", sa.Integer(), nullable=True),
        sa.Column("num_params", sa.BigInteger(), nullable=True),
        sa.Column("meta", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("zoo_spec", sa.Text(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(*JOB_STATUSES, name="job_status", native_enum=False, create_constraint=True, length=16),
            nullable=False,
        ),
        sa.Column("stage", sa.String(length=32), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker_id", sa.String(length=255), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_index("ix_jobs_status_created", ["status", "created_at"], unique=False)

    op.create_table(
        "ensembles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("val_ce", sa.Float(), nullable=False),
        sa.Column("val_acc", sa.Float(), nullable=True),
        sa.Column("test_acc", sa.Float(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("loss_curve", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ensembles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ensembles_job_id"), ["job_id"], unique=False)

    op.create_table(
        "finetune_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("unit_key", sa.String(length=512), nullable=False),
        sa.Column("model_name", sa.String(length=255), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=False),
        sa.Column("hparams", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("val_ce", sa.Float(), nullable=False),
        sa.Column("val_acc", sa.Float(), nullable=False),
        sa.Column("test_acc", sa.Float(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("updated_params", sa.BigInteger(), nullable=False),
        sa.Column("update_bytes", sa.BigInteger(), nullable=False),
        sa.Column("artifact_path", sa.Text(), nullable=False),
        sa.Column("probs_path", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "unit_key", name="uq_finetune_runs_job_unit"),
    )
    with op.batch_alter_table("finetune_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_finetune_runs_job_id"), ["job_id"], unique=False)

    op.create_table(
        "job_units",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(*UNIT_STATUSES, name="unit_status", native_enum=False, create_constraint=True, length=16),
            nullable=False,
        ),
        sa.Column("worker_id", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "key", name="uq_job_units_job_key"),
    )
    with op.batch_alter_table("job_units", schema=None) as batch_op:
        batch_op.create_index("ix_job_units_job_status", ["job_id", "status"], unique=False)

    op.create_table(
        "knn_scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=255), nullable=False),
        sa.Column("k", sa.Integer(), nullable=True),
        sa.Column("knn_accuracy", sa.Float(), nullable=False),
        sa.Column("val_accuracy", sa.Float(), nullable=True),
        sa.Column("logme", sa.Float(), nullable=True),
        sa.Column("embed_seconds", sa.Float(), nullable=True),
        sa.Column("images_per_s", sa.Float(), nullable=True),
        sa.Column("params", sa.BigInteger(), nullable=True),
        sa.Column("embed_dim", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "model_name", name="uq_knn_scores_job_model"),
    )
    with op.batch_alter_table("knn_scores", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_knn_scores_job_id"), ["job_id"], unique=False)

    op.create_table(
        "ensemble_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ensemble_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["ensemble_id"], ["ensembles.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["finetune_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("ensemble_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ensemble_members_ensemble_id"), ["ensemble_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ensemble_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ensemble_members_ensemble_id"))

    op.drop_table("ensemble_members")
    with op.batch_alter_table("knn_scores", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_knn_scores_job_id"))

    op.drop_table("knn_scores")
    with op.batch_alter_table("job_units", schema=None) as batch_op:
        batch_op.drop_index("ix_job_units_job_status")

    op.drop_table("job_units")
    with op.batch_alter_table("finetune_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_finetune_runs_job_id"))

    op.drop_table("finetune_runs")
    with op.batch_alter_table("ensembles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ensembles_job_id"))

    op.drop_table("ensembles")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_created")
        batch_op.drop_index(batch_op.f("ix_jobs_dataset_id"))

    op.drop_table("jobs")
    op.drop_table("zoo_models")
    with op.batch_alter_table("embeddings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_embeddings_model_name"))
        batch_op.drop_index(batch_op.f("ix_embeddings_dataset_fingerprint"))

    op.drop_table("embeddings")
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_datasets_fingerprint"))

    op.drop_table("datasets")
    op.drop_table("api_tokens")
