"""Reading and writing the registry: plain functions over a SQLAlchemy session.

The pipeline, workers, CLI and API all go through these; none of them commits (the
caller's `session_scope()` does), so several calls form one transaction.

Claiming work is safe with many workers on both backends:

- PostgreSQL: candidates are selected `FOR UPDATE SKIP LOCKED`, so concurrent workers
  look at different rows and never wait for each other;
- SQLite: the claim runs in a `BEGIN IMMEDIATE` transaction, which takes the database's
  single write lock before reading, so claims are serialised (waiting up to the busy
  timeout) and never read a stale snapshot;
- on both, the row is taken with a compare-and-set `UPDATE ... WHERE <still claimable>`
  and the claim counts only if it changed exactly one row.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence

from sqlalchemy import ColumnElement, and_, func, inspect, or_, select, update
from sqlalchemy.orm import Session

from zooens.service.db.models import (
    FINISHED,
    JOB_STATUSES,
    ApiToken,
    Base,
    Dataset,
    Embedding,
    Ensemble,
    EnsembleMember,
    FinetuneRun,
    Job,
    JobUnit,
    KnnScore,
    ZooModel,
    utcnow,
)
from zooens.errors import ConfigError, ConflictError, NotFoundError
from zooens.settings import get_settings

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "zoo_"
_CLAIM_BATCH = 8


def _begin_write(s: Session) -> None:
    """On SQLite, make the session's transaction a writer's (`BEGIN IMMEDIATE`) before it reads.

    pysqlite opens transactions lazily, right before the first INSERT/UPDATE/DELETE; a
    session that has written already holds the write lock and needs nothing more.
    """
    conn = s.connection()
    if conn.dialect.name != "sqlite":
        return
    dbapi_conn = conn.connection.driver_connection
    if dbapi_conn is not None and not dbapi_conn.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _skip_locked(s: Session) -> bool:
    return s.get_bind().dialect.name == "postgresql"


def _column_values(model: type[Base], fields: dict[str, Any]) -> dict[str, Any]:
    """The entries of `fields` that are columns of `model` (results may carry extra keys)."""
    columns = set(inspect(model).columns.keys())
    return {k: v for k, v in fields.items() if k in columns}


# --------------------------------------------------------------------------------------
# Zoo models and datasets


def upsert_zoo_model(s: Session, facts: dict[str, Any]) -> ZooModel:
    """Insert or refresh a weight set's facts (from `WeightSet.to_dict()`), keyed by name."""
    row = s.scalar(select(ZooModel).where(ZooModel.name == facts["name"]))
    if row is None:
        row = ZooModel(name=facts["name"])
        s.add(row)
    source = facts.get("source") or {}
    row.arch = facts.get("arch") or facts["name"].split(".")[0]
    row.tag = facts.get("tag")
    row.origin = facts.get("origin") or "catalogue"
    row.source_kind = source.get("kind")
    row.source_path = None if source.get("path") is None else str(source.get("path"))
    row.hub_id = source.get("hub_id")
    row.sha256 = source.get("sha256")
    row.input_config = facts.get("input")
    row.embed_dim = facts.get("embed_dim")
    row.num_params = facts.get("num_params")
    row.meta = {k: facts.get(k) for k in ("upstream_data", "license", "paper") if facts.get(k) is not None}
    s.flush()
    return row


def get_zoo_model(s: Session, name: str) -> ZooModel:
    """A zoo model row by name; NotFoundError if no job or command has recorded it."""
    row = s.scalar(select(ZooModel).where(ZooModel.name == name))
    if row is None:
        raise NotFoundError(f"No zoo model named {name!r} in the registry; see `zooens zoo list`.")
    return row


def list_zoo_models(s: Session) -> list[ZooModel]:
    """Every zoo model the registry has seen, by name."""
    return list(s.scalars(select(ZooModel).order_by(ZooModel.name)))


def _find_dataset(s: Session, fingerprint: str, source: str) -> Dataset | None:
    return s.scalar(select(Dataset).where(Dataset.fingerprint == fingerprint, Dataset.source == source))


def create_dataset(
    s: Session,
    *,
    name: str,
    source: str,
    fingerprint: str,
    classes: list[str],
    counts: dict[str, Any],
    storage_path: str | None = None,
) -> Dataset:
    """Register a dataset; ConflictError if the same content from the same source exists."""
    existing = _find_dataset(s, fingerprint, source)
    if existing is not None:
        raise ConflictError(
            f"Dataset {existing.name!r} (id {existing.id}) already holds this content from {source!r}; "
            "use it instead of registering it again."
        )
    row = Dataset(name=name, source=source, fingerprint=fingerprint, classes=classes, counts=counts,
                  storage_path=storage_path)
    s.add(row)
    s.flush()
    return row


def get_or_create_dataset(
    s: Session,
    *,
    name: str,
    source: str,
    fingerprint: str,
    classes: list[str],
    counts: dict[str, Any],
    storage_path: str | None = None,
) -> Dataset:
    """The dataset with this fingerprint and source, registered first if new."""
    row = _find_dataset(s, fingerprint, source)
    if row is None:
        row = create_dataset(s, name=name, source=source, fingerprint=fingerprint, classes=classes,
                             counts=counts, storage_path=storage_path)
    return row


def get_dataset(s: Session, dataset_id: int) -> Dataset:
    """A dataset by id; NotFoundError if there is none."""
    row = s.get(Dataset, dataset_id)
    if row is None:
        raise NotFoundError(f"No dataset with id {dataset_id}; list them with GET /api/v1/datasets.")
    return row


def list_datasets(s: Session, *, limit: int = 100, offset: int = 0) -> tuple[list[Dataset], int]:
    """A page of datasets, newest first, and the total count."""
    count = s.scalar(select(func.count(Dataset.id))) or 0
    rows = list(s.scalars(select(Dataset).order_by(Dataset.id.desc()).limit(limit).offset(offset)))
    return rows, count


# --------------------------------------------------------------------------------------
# Jobs


def create_job(s: Session, *, dataset_id: int, zoo_spec: str, params: dict[str, Any]) -> Job:
    """Queue a job on a registered dataset; NotFoundError if the dataset does not exist."""
    get_dataset(s, dataset_id)
    job = Job(dataset_id=dataset_id, zoo_spec=zoo_spec, params=params, status="queued", progress={})
    s.add(job)
    s.flush()
    return job


def get_job(s: Session, job_id: int) -> Job:
    """A job by id, re-read from the database (workers change jobs behind the session's back)."""
    job = s.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"No job with id {job_id}; list them with GET /api/v1/jobs or `zooens jobs list`.")
    s.refresh(job)
    return job


def _check_status(status: str) -> None:
    if status not in JOB_STATUSES:
        raise ConfigError(f"Unknown job status {status!r}; use one of {', '.join(JOB_STATUSES)}.")


def list_jobs(
    s: Session, *, status: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[Job], int]:
    """A page of jobs, newest first, optionally of one status, and the total count."""
    query = select(Job)
    count_query = select(func.count(Job.id))
    if status is not None:
        _check_status(status)
        query = query.where(Job.status == status)
        count_query = count_query.where(Job.status == status)
    rows = list(s.scalars(query.order_by(Job.id.desc()).limit(limit).offset(offset)))
    return rows, s.scalar(count_query) or 0


def set_job_status(
    s: Session, job_id: int, status: str, *, worker_id: str | None = None, error: str | None = None
) -> Job:
    """Move a job to `status`; `running` stamps start and heartbeat, a final status the end and error."""
    _check_status(status)
    job = get_job(s, job_id)
    now = utcnow()
    job.status = status
    if worker_id is not None:
        job.worker_id = worker_id
    if status == "running":
        job.heartbeat_at = now
        job.started_at = job.started_at or now
        job.finished_at = None
        job.error = None
    elif status in FINISHED:
        job.finished_at = now
        job.error = error
    s.flush()
    return job


def set_job_stage(s: Session, job_id: int, stage: str) -> None:
    """Record the stage a job is in (`embed`, `finetune`, `ensemble`)."""
    if s.execute(update(Job).where(Job.id == job_id).values(stage=stage)).rowcount != 1:
        raise NotFoundError(f"No job with id {job_id}.")


def set_job_progress(s: Session, job_id: int, *, stage: str, progress: dict[str, Any]) -> None:
    """Record a job's stage and its per-stage progress (`{stage: {done, total, current}}`)."""
    if s.execute(update(Job).where(Job.id == job_id).values(stage=stage, progress=progress)).rowcount != 1:
        raise NotFoundError(f"No job with id {job_id}.")


def request_cancel(s: Session, job_id: int) -> Job:
    """Cancel a job: queued jobs at once, running ones after their current unit.

    ConflictError if the job has already finished.
    """
    job = get_job(s, job_id)
    if job.status in FINISHED:
        raise ConflictError(f"Job {job_id} has already {job.status}; only queued or running jobs can be cancelled.")
    job.cancel_requested = True
    if job.status == "queued":
        job.status = "cancelled"
        job.finished_at = utcnow()
    s.flush()
    return job


def stale_cutoff() -> datetime:
    """Heartbeats older than this mean the job's worker is gone (`stale_after_seconds`)."""
    return utcnow() - timedelta(seconds=get_settings().stale_after_seconds)


def _claimable_job(cutoff: datetime) -> ColumnElement[bool]:
    stale = and_(Job.status == "running", or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff))
    return and_(or_(Job.status == "queued", stale), Job.cancel_requested.is_(False))


def claim_job(s: Session, worker_id: str) -> Job | None:
    """Take the oldest queued job, or a running one whose worker went silent; None if none.

    The job becomes `running` for `worker_id` with a fresh heartbeat and one more attempt.
    A job taken over from a silent worker gets its unfinished `running` units back to
    `pending`, so the new worker redoes only those. Silent jobs whose cancel was requested
    are closed as `cancelled` instead of being claimed. Commit promptly after claiming:
    until then the claim holds SQLite's write lock (or the PostgreSQL row lock).
    """
    _begin_write(s)
    now = utcnow()
    cutoff = stale_cutoff()
    s.execute(
        update(Job)
        .where(Job.status == "running", Job.cancel_requested.is_(True),
               or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff))
        .values(status="cancelled", finished_at=now)
        .execution_options(synchronize_session=False)
    )
    claimable = _claimable_job(cutoff)
    candidates = select(Job.id, Job.status).where(claimable).order_by(Job.created_at, Job.id).limit(_CLAIM_BATCH)
    if _skip_locked(s):
        candidates = candidates.with_for_update(skip_locked=True)
    for job_id, status in s.execute(candidates).all():
        taken = s.execute(
            update(Job)
            .where(Job.id == job_id, claimable)
            .values(status="running", worker_id=worker_id, heartbeat_at=now, attempts=Job.attempts + 1,
                    started_at=func.coalesce(Job.started_at, now), finished_at=None)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:
            continue
        if status == "running":
            n = requeue_running_units(s, job_id)
            logger.warning("job %s: its worker went silent; %s takes it over (%d units re-queued)",
                           job_id, worker_id, n)
        return get_job(s, job_id)
    return None


def heartbeat(s: Session, job_id: int, worker_id: str) -> bool:
    """Refresh a running job's heartbeat; False if this worker no longer owns the job."""
    result = s.execute(
        update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


# --------------------------------------------------------------------------------------
# Units of work


def ensure_units(s: Session, job_id: int, units: Iterable[tuple[str, str]]) -> None:
    """Add the `(key, kind)` units a job does not have yet, after the ones it has (idempotent)."""
    existing = set(s.scalars(select(JobUnit.key).where(JobUnit.job_id == job_id)))
    start = s.scalar(select(func.coalesce(func.max(JobUnit.position) + 1, 0)).where(JobUnit.job_id == job_id)) or 0
    for key, kind in units:
        if key in existing:
            continue
        s.add(JobUnit(job_id=job_id, key=key, kind=kind, position=start))
        existing.add(key)
        start += 1
    s.flush()


def list_units(s: Session, job_id: int) -> list[JobUnit]:
    """Every unit of a job, in planning order."""
    return list(s.scalars(select(JobUnit).where(JobUnit.job_id == job_id).order_by(JobUnit.position)))


def get_unit(s: Session, job_id: int, key: str) -> JobUnit:
    """A job's unit by key; NotFoundError if the job has no such unit."""
    unit = s.scalar(select(JobUnit).where(JobUnit.job_id == job_id, JobUnit.key == key))
    if unit is None:
        raise NotFoundError(f"Job {job_id} has no unit {key!r}.")
    return unit


def pending_units(s: Session, job_id: int) -> list[JobUnit]:
    """A job's units still to do (pending), in planning order."""
    return list(s.scalars(
        select(JobUnit).where(JobUnit.job_id == job_id, JobUnit.status == "pending").order_by(JobUnit.position)
    ))


def done_units(s: Session, job_id: int) -> dict[str, dict[str, Any]]:
    """The results of a job's finished units, by key, in planning order."""
    rows = s.scalars(
        select(JobUnit).where(JobUnit.job_id == job_id, JobUnit.status == "done").order_by(JobUnit.position)
    )
    return {u.key: (u.result or {}) for u in rows}


def claim_unit(s: Session, job_id: int, worker_id: str) -> JobUnit | None:
    """The next pending unit of a job, marked `running` for this worker; None if none is left."""
    _begin_write(s)
    candidates = (
        select(JobUnit.id).where(JobUnit.job_id == job_id, JobUnit.status == "pending")
        .order_by(JobUnit.position).limit(_CLAIM_BATCH)
    )
    if _skip_locked(s):
        candidates = candidates.with_for_update(skip_locked=True)
    for unit_id in list(s.scalars(candidates)):
        taken = s.execute(
            update(JobUnit).where(JobUnit.id == unit_id, JobUnit.status == "pending")
            .values(status="running", worker_id=worker_id, started_at=utcnow(), finished_at=None,
                    attempts=JobUnit.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount == 1:
            unit = s.get(JobUnit, unit_id)
            assert unit is not None
            s.refresh(unit)
            return unit
    return None


def requeue_running_units(s: Session, job_id: int) -> int:
    """Put a job's `running` units back to `pending` (their worker is gone); returns how many."""
    result = s.execute(
        update(JobUnit).where(JobUnit.job_id == job_id, JobUnit.status == "running")
        .values(status="pending", worker_id=None, started_at=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def _end_unit(s: Session, unit_id: int, worker_id: str | None, values: dict[str, Any]) -> None:
    query = update(JobUnit).where(JobUnit.id == unit_id)
    if worker_id is not None:
        query = query.where(JobUnit.worker_id == worker_id, JobUnit.status == "running")
    if s.execute(query.values(**values).execution_options(synchronize_session=False)).rowcount == 1:
        return
    unit = s.get(JobUnit, unit_id)
    if unit is None:
        raise NotFoundError(f"No job unit with id {unit_id}.")
    raise ConflictError(f"Unit {unit.key!r} of job {unit.job_id} belongs to worker {unit.worker_id!r} "
                        f"({unit.status}), not to {worker_id!r}; its result was not recorded.")


def finish_unit(s: Session, unit_id: int, result: dict[str, Any], *, worker_id: str | None = None) -> None:
    """Mark a unit done with its (JSON) result.

    With `worker_id`, only while that worker still owns the running unit (ConflictError
    otherwise), so a unit taken over by another worker is never recorded twice.
    """
    _end_unit(s, unit_id, worker_id, {"status": "done", "result": result, "finished_at": utcnow(), "error": None})


def fail_unit(s: Session, unit_id: int, error: str, *, worker_id: str | None = None) -> None:
    """Mark a unit failed with its reason (same ownership rule as `finish_unit`)."""
    _end_unit(s, unit_id, worker_id, {"status": "failed", "error": error, "finished_at": utcnow()})


# --------------------------------------------------------------------------------------
# Results


def record_embedding(
    s: Session,
    *,
    cache_key: str,
    model_name: str,
    dataset_fingerprint: str,
    split: str,
    path: str,
    n: int,
    dim: int,
    weights_sha256: str | None = None,
    preprocessing: dict[str, Any] | None = None,
    seconds: float | None = None,
    images_per_s: float | None = None,
) -> Embedding:
    """Index one embedding-cache entry; recording the same cache key again returns the first row."""
    row = s.scalar(select(Embedding).where(Embedding.cache_key == cache_key))
    if row is None:
        row = Embedding(cache_key=cache_key, model_name=model_name, dataset_fingerprint=dataset_fingerprint,
                        split=split, path=path, n=n, dim=dim, weights_sha256=weights_sha256,
                        preprocessing=preprocessing, seconds=seconds, images_per_s=images_per_s)
        s.add(row)
        s.flush()
    return row


def get_embedding(s: Session, cache_key: str) -> Embedding | None:
    """The cache entry recorded under `cache_key`, if any."""
    return s.scalar(select(Embedding).where(Embedding.cache_key == cache_key))


def add_knn_score(s: Session, job_id: int, **fields: Any) -> KnnScore:
    """Record (or replace) a model's ranking scores in a job; `model_name` and `knn_accuracy` required.

    Keys that are not columns of `knn_scores` are ignored.
    """
    row = s.scalar(select(KnnScore).where(KnnScore.job_id == job_id, KnnScore.model_name == fields["model_name"]))
    if row is None:
        row = KnnScore(job_id=job_id)
        s.add(row)
    for key, value in _column_values(KnnScore, fields).items():
        setattr(row, key, value)
    s.flush()
    return row


def get_ranking(s: Session, job_id: int) -> list[KnnScore]:
    """A job's kNN scores best first: kNN accuracy, then val accuracy, then model name."""
    return list(s.scalars(
        select(KnnScore).where(KnnScore.job_id == job_id).order_by(
            KnnScore.knn_accuracy.desc(), func.coalesce(KnnScore.val_accuracy, 0.0).desc(), KnnScore.model_name)
    ))


def add_finetune_run(s: Session, job_id: int, *, unit_key: str, **fields: Any) -> FinetuneRun:
    """Record (or replace) the fine-tune run of a unit; takes a `RunResult`-like dict.

    The model's name may come as `model` (as the pipeline's results carry it) or
    `model_name`; keys that are not columns of `finetune_runs` are ignored.
    """
    row = s.scalar(select(FinetuneRun).where(FinetuneRun.job_id == job_id, FinetuneRun.unit_key == unit_key))
    if row is None:
        row = FinetuneRun(job_id=job_id, unit_key=unit_key)
        s.add(row)
    if "model" in fields:
        fields = {**fields, "model_name": fields["model"]}
    for key, value in _column_values(FinetuneRun, fields).items():
        if key not in ("id", "job_id", "unit_key"):
            setattr(row, key, value)
    s.flush()
    return row


def list_finetune_runs(s: Session, job_id: int) -> list[FinetuneRun]:
    """A job's fine-tune runs in the order they were recorded."""
    return list(s.scalars(select(FinetuneRun).where(FinetuneRun.job_id == job_id).order_by(FinetuneRun.id)))


def get_finetune_run(s: Session, run_id: int) -> FinetuneRun:
    """A fine-tune run by id; NotFoundError if there is none."""
    row = s.get(FinetuneRun, run_id)
    if row is None:
        raise NotFoundError(f"No fine-tune run with id {run_id}.")
    return row


def create_ensemble(
    s: Session,
    job_id: int,
    *,
    members: Sequence[tuple[int, float]],
    val_ce: float,
    val_acc: float | None,
    test_acc: float | None,
    size: int,
    loss_curve: list[float],
) -> Ensemble:
    """Record a job's ensemble: `members` are `(run_id, weight)` in selection order."""
    get_job(s, job_id)
    run_ids = {run_id for run_id, _ in members}
    found = set(s.scalars(select(FinetuneRun.id).where(FinetuneRun.id.in_(run_ids), FinetuneRun.job_id == job_id)))
    if found != run_ids:
        raise NotFoundError(f"Job {job_id} has no fine-tune runs {sorted(run_ids - found)}; "
                            "an ensemble is built from its own job's runs.")
    ens = Ensemble(job_id=job_id, val_ce=val_ce, val_acc=val_acc, test_acc=test_acc, size=size,
                   loss_curve=list(loss_curve))
    s.add(ens)
    s.flush()
    for position, (run_id, weight) in enumerate(members):
        s.add(EnsembleMember(ensemble_id=ens.id, run_id=run_id, weight=float(weight), position=position))
    s.flush()
    s.refresh(ens)
    return ens


def get_ensemble(s: Session, ensemble_id: int) -> Ensemble:
    """An ensemble with its members; NotFoundError if there is none."""
    ens = s.get(Ensemble, ensemble_id)
    if ens is None:
        raise NotFoundError(f"No ensemble with id {ensemble_id}; a finished job's ensemble is at GET /api/v1/jobs/{{id}}/ensemble.")
    return ens


def get_job_ensemble(s: Session, job_id: int) -> Ensemble | None:
    """A job's latest ensemble, or None before its ensemble stage has run."""
    return s.scalar(select(Ensemble).where(Ensemble.job_id == job_id).order_by(Ensemble.id.desc()).limit(1))


# --------------------------------------------------------------------------------------
# API tokens


def hash_token(plain: str) -> str:
    """The sha256 hex digest under which a token is stored."""
    return hashlib.sha256(plain.encode()).hexdigest()


def create_token(s: Session, name: str) -> tuple[str, ApiToken]:
    """A new token named `name`: the plain token (shown once, never stored) and its row.

    ConflictError if a token with that name exists (revoked ones included: names stay unique).
    """
    if s.scalar(select(ApiToken).where(ApiToken.name == name)) is not None:
        raise ConflictError(f"A token named {name!r} exists; revoke it or choose another name.")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(plain), prefix=plain[: len(TOKEN_PREFIX) + 6])
    s.add(row)
    s.flush()
    return plain, row


def verify_token(s: Session, plain: str) -> ApiToken | None:
    """The live token matching `plain` (its last use stamped), or None if unknown or revoked."""
    if not plain:
        return None
    digest = hash_token(plain)
    row = s.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at is not None:
        return None
    row.last_used_at = utcnow()
    s.flush()
    return row


def revoke_token(s: Session, name_or_id: str | int) -> ApiToken:
    """Revoke a token by name (or by id); revoking twice keeps the first time."""
    row = s.scalar(select(ApiToken).where(ApiToken.name == str(name_or_id)))
    if row is None and str(name_or_id).isdigit():
        row = s.get(ApiToken, int(name_or_id))
    if row is None:
        raise NotFoundError(f"No token named {name_or_id!r}; see `zooens tokens list`.")
    row.revoked_at = row.revoked_at or utcnow()
    s.flush()
    return row


def list_tokens(s: Session) -> list[ApiToken]:
    """Every token, revoked ones included, oldest first."""
    return list(s.scalars(select(ApiToken).order_by(ApiToken.id)))
