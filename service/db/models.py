"""The registry's tables (SQLAlchemy 2). Tables are created only by the Alembic migrations."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC: the only clock the registry uses."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend.

    PostgreSQL stores `timestamptz`; SQLite has no time zones, so values are stored as UTC
    and read back with `tzinfo=UTC`. Aware values in another zone are converted to UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class EmptyJSONList(ClauseElement):
    """The server default of a JSON list column: `'[]'`, cast to `json` on PostgreSQL.

    Written out as the server stores it, so comparing the models with the migrated schema
    needs no round trip (PostgreSQL's `json` has no `=` to compare a literal with).
    """

    inherit_cache = True


@compiles(EmptyJSONList)
def _empty_json_list(element: EmptyJSONList, compiler: SQLCompiler, **kw: Any) -> str:
    return "'[]'"


@compiles(EmptyJSONList, "postgresql")
def _empty_json_list_postgresql(element: EmptyJSONList, compiler: SQLCompiler, **kw: Any) -> str:
    return "'[]'::json"


class Base(DeclarativeBase):
    """Declarative base: JSON columns are portable `JSON`, timestamps are `UTCDateTime`.

    Tables whose ids name things in URLs and commands (`datasets`, `jobs`, `finetune_runs`, `ensembles`,
    `api_tokens`) never give an id twice: `sqlite_autoincrement` (migration 0008); PostgreSQL's sequences never
    go back.
    """

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
UNIT_STATUSES = ("pending", "running", "done", "failed")


def _status_enum(values: tuple[str, ...], name: str) -> Enum:
    """A string enum stored as VARCHAR with a CHECK constraint (same DDL on SQLite and PostgreSQL)."""
    return Enum(*values, name=name, native_enum=False, create_constraint=True, length=16, validate_strings=True)


class ZooModel(Base):
    """One weight set of the zoo (`zoo.WeightSet.to_dict()`), as last seen by a job or the CLI."""

    __tablename__ = "zoo_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    arch: Mapped[str] = mapped_column(String(255))
    tag: Mapped[str | None] = mapped_column(String(255))
    origin: Mapped[str] = mapped_column(String(32))
    source_kind: Mapped[str | None] = mapped_column(String(32))
    source_path: Mapped[str | None] = mapped_column(Text)
    hub_id: Mapped[str | None] = mapped_column(String(255))
    sha256: Mapped[str | None] = mapped_column(String(64))
    input_config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    embed_dim: Mapped[int | None] = mapped_column(Integer)
    num_params: Mapped[int | None] = mapped_column(BigInteger)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Dataset(Base):
    """A registered dataset: where it came from, where it is stored, its content fingerprint."""

    __tablename__ = "datasets"
    __table_args__ = (
        UniqueConstraint("fingerprint", "source", name="uq_datasets_fingerprint_source"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(Text)
    storage_path: Mapped[str | None] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    classes: Mapped[list[Any]] = mapped_column(JSON)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    jobs: Mapped[list[Job]] = relationship(back_populates="dataset", cascade="all, delete-orphan", passive_deletes=True)


class Job(Base):
    """One selection job: rank a zoo on a dataset, fine-tune the best, build an ensemble.

    `zoo` is the zoo as the user gave it (a spec or a comma-separated list of names);
    `zoo_models` the weight-set names it resolved to when the job was submitted.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_created", "status", "created_at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    zoo: Mapped[str] = mapped_column(Text)
    zoo_models: Mapped[list[str]] = mapped_column(JSON, server_default=EmptyJSONList())
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(_status_enum(JOB_STATUSES, "job_status"), default="queued")
    stage: Mapped[str | None] = mapped_column(String(32))
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    ranking_audit: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    warnings: Mapped[list[str] | None] = mapped_column(JSON)  # why not to trust its val numbers (0006)
    # the train and val sizes it ran on (0007), once its first model is embedded; `params` has the ones asked for
    n_train_used: Mapped[int | None] = mapped_column(Integer)
    n_val_used: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    dataset: Mapped[Dataset] = relationship(back_populates="jobs")
    units: Mapped[list[JobUnit]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class JobUnit(Base):
    """One unit of work of a job (`embed:<model>`, `finetune:...`, `ensemble`); its result once done."""

    __tablename__ = "job_units"
    __table_args__ = (
        UniqueConstraint("job_id", "key", name="uq_job_units_job_key"),
        Index("ix_job_units_job_status", "job_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(_status_enum(UNIT_STATUSES, "unit_status"), default="pending")
    worker_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Embedding(Base):
    """The index of the on-disk embedding cache."""

    __tablename__ = "embeddings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cache_key: Mapped[str] = mapped_column(String(64), unique=True)
    model_name: Mapped[str] = mapped_column(String(255), index=True)
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    dataset_fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    split: Mapped[str] = mapped_column(String(16))
    preprocessing: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    path: Mapped[str] = mapped_column(Text)
    n: Mapped[int] = mapped_column(Integer)
    dim: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float | None] = mapped_column(Float)
    images_per_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KnnScore(Base):
    """One model's ranking scores within a job."""

    __tablename__ = "knn_scores"
    __table_args__ = (UniqueConstraint("job_id", "model_name", name="uq_knn_scores_job_model"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(255))
    k: Mapped[int | None] = mapped_column(Integer)
    knn_accuracy: Mapped[float] = mapped_column(Float)
    val_accuracy: Mapped[float | None] = mapped_column(Float)
    logme: Mapped[float | None] = mapped_column(Float)
    embed_seconds: Mapped[float | None] = mapped_column(Float)
    images_per_s: Mapped[float | None] = mapped_column(Float)
    params: Mapped[int | None] = mapped_column(BigInteger)
    embed_dim: Mapped[int | None] = mapped_column(Integer)
    knn_queries: Mapped[int | None] = mapped_column(Integer)
    knn1_accuracy: Mapped[float | None] = mapped_column(Float)  # leave-one-out 1-NN, beside kNN@k
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class FinetuneRun(Base):
    """One fine-tuning run of the sweep, with its metrics and where its artifact and probabilities are."""

    __tablename__ = "finetune_runs"
    __table_args__ = (
        UniqueConstraint("job_id", "unit_key", name="uq_finetune_runs_job_unit"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    unit_key: Mapped[str] = mapped_column(String(512))
    model_name: Mapped[str] = mapped_column(String(255))
    strategy: Mapped[str] = mapped_column(String(32))
    hparams: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    val_ce: Mapped[float] = mapped_column(Float)
    val_acc: Mapped[float] = mapped_column(Float)
    test_acc: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    updated_params: Mapped[int] = mapped_column(BigInteger)
    update_bytes: Mapped[int] = mapped_column(BigInteger)
    artifact_path: Mapped[str] = mapped_column(Text)
    probs_path: Mapped[str] = mapped_column(Text)
    gflops: Mapped[float | None] = mapped_column(Float)
    params_count: Mapped[int | None] = mapped_column(BigInteger)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    backbone_key: Mapped[str | None] = mapped_column(String(512))
    calibration: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Ensemble(Base):
    """The greedy ensemble a job built from its fine-tune runs."""

    __tablename__ = "ensembles"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    val_ce: Mapped[float] = mapped_column(Float)
    val_acc: Mapped[float | None] = mapped_column(Float)
    test_acc: Mapped[float | None] = mapped_column(Float)
    size: Mapped[int] = mapped_column(Integer)
    loss_curve: Mapped[list[Any]] = mapped_column(JSON)
    max_gflops: Mapped[float | None] = mapped_column(Float)
    max_latency_ms: Mapped[float | None] = mapped_column(Float)
    gflops: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    front: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # calibration (0006): the temperature (fitted on the selection rows), the calibrated ensemble's metrics,
    # the reliability diagram
    temperature: Mapped[float | None] = mapped_column(Float)
    val_nll: Mapped[float | None] = mapped_column(Float)
    val_brier: Mapped[float | None] = mapped_column(Float)
    val_ece: Mapped[float | None] = mapped_column(Float)
    test_nll: Mapped[float | None] = mapped_column(Float)
    test_brier: Mapped[float | None] = mapped_column(Float)
    test_ece: Mapped[float | None] = mapped_column(Float)
    uncalibrated_val_ece: Mapped[float | None] = mapped_column(Float)
    uncalibrated_test_nll: Mapped[float | None] = mapped_column(Float)
    uncalibrated_test_ece: Mapped[float | None] = mapped_column(Float)
    reliability: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    members: Mapped[list[EnsembleMember]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="EnsembleMember.position"
    )


class EnsembleMember(Base):
    """One member of an ensemble: a fine-tune run and its weight, in selection order."""

    __tablename__ = "ensemble_members"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ensemble_id: Mapped[int] = mapped_column(ForeignKey("ensembles.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("finetune_runs.id", ondelete="CASCADE"))
    weight: Mapped[float] = mapped_column(Float)
    position: Mapped[int] = mapped_column(Integer)


class Worker(Base):
    """A worker process's liveness: when it started, when it was last seen, which job it runs.

    `id` is the public worker id (random, also written to `jobs.worker_id`); `host` and `pid`
    help an operator find the process and are never shown by the API.
    """

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    job_id: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)


class ApiToken(Base):
    """An API token; only its sha256 is stored, `prefix` lets people tell tokens apart."""

    __tablename__ = "api_tokens"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
