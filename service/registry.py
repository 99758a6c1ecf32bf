"""Reading and writing the registry: plain functions over a SQLAlchemy session.

The pipeline, workers, CLI and API all go through these. Job and unit claiming is a
compare-and-set UPDATE (safe on SQLite's single writer and on PostgreSQL), with
`FOR UPDATE SKIP LOCKED` on PostgreSQL so that concurrent workers look at different rows.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from service.db.models import (
    FINISHED,
    JOB_STATUSES,
    ApiToken,
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

# --------------------------------------------------------------------------------------
# Zoo models and datasets


def upsert_zoo_model(s: Session, facts: dict[str, Any]) -> ZooModel:
    """Insert or refresh a weight set's facts (from `WeightSet.to_dict()`)."""
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


def list_zoo_models(s: Session) -> list[ZooModel]:
    return list(s.scalars(select(ZooModel).order_by(ZooModel.name)))


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
    row = s.scalar(select(Dataset).where(Dataset.fingerprint == fingerprint, Dataset.source == source))
    if row is None:
        row = Dataset(name=name, source=source, fingerprint=fingerprint, classes=classes, counts=counts,
                      storage_path=storage_path)
        s.add(row)
        s.flush()
    return row


def get_dataset(s: Session, dataset_id: int) -> Dataset:
    row = s.get(Dataset, dataset_id)
    if row is None:
        raise NotFoundError(f"No dataset with id {dataset_id}; list them with GET /api/v1/datasets.")
    return row


def list_datasets(s: Session, *, limit: int = 100, offset: int = 0) -> tuple[list[Dataset], int]:
    count = s.scalar(select(func.count(Dataset.id))) or 0
    rows = list(s.scalars(select(Dataset).order_by(Dataset.id.desc()).limit(limit).offset(offset)))
    return rows, count


# --------------------------------------------------------------------------------------
# Jobs


def create_job(s: Session, *, dataset_id: int, zoo_spec: str, params: dict[str, Any]) -> Job:
    get_dataset(s, dataset_id)
    job = Job(dataset_id=dataset_id, zoo_spec=zoo_spec, params=params, status="queued", progress={})
    s.add(job)
    s.flush()
    return job


def get_job(s: Session, job_id: int) -> Job:
    job = s.get(Job, job_id)
    if job is None:
        raise NotFoundError(f"No job with id {job_id}; list them with GET /api/v1/jobs or `zooens jobs list`.")
    s.refresh(job)
    return job


def list_jobs(
    s: Session, *, status: str | None = None, limit: int = 50, offset: int = 0
) -> tuple[list[Job], int]:
    query = select(Job)
    count_query = select(func.count(Job.id))
    if status is not None:
        if status not in JOB_STATUSES:
            raise ConfigError(f"Unknown job status {status!r}; use one of {', '.join(JOB_STATUSES)}.")
        query = query.where(Job.status == status)
        count_query = count_query.where(Job.status == status)
    rows = list(s.scalars(query.order_by(Job.id.desc()).limit(limit).offset(offset)))
    return rows, s.scalar(count_query) or 0


def set_job_status(
    s: Session, job_id: int, status: str, *, worker_id: str | None = None, error: str | None = None
) -> Job:
    job = get_job(s, job_id)
    now = utcnow()
    job.status = status
    if worker_id is not None:
        job.worker_id = worker_id
    if status == "running":
        job.heartbeat_at = now
        job.started_at = job.started_at or now
        job.error = None
    if status in FINISHED:
        job.finished_at = now
        job.error = error
    s.flush()
    return job


def set_job_progress(s: Session, job_id: int, *, stage: str, progress: dict[str, Any]) -> None:
    s.execute(update(Job).where(Job.id == job_id).values(stage=stage, progress=progress))


def request_cancel(s: Session, job_id: int) -> Job:
    """Queued jobs are cancelled at once; running ones stop after their current unit."""
    job = get_job(s, job_id)
    if job.status in FINISHED:
        raise ConflictError(f"Job {job_id} has already {job.status}; only queued or running jobs can be cancelled.")
    job.cancel_requested = True
    if job.status == "queued":
        job.status = "cancelled"
        job.finished_at = utcnow()
    s.flush()
    return job


def _stale_cutoff() -> datetime:
    return utcnow() - timedelta(seconds=get_settings().stale_after_seconds)


def claim_job(s: Session, worker_id: str) -> Job | None:
    """Take the oldest queued job, or a running one whose worker went silent; None if none."""
    claimable = or_(
        Job.status == "queued",
        and_(Job.status == "running", or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < _stale_cutoff())),
    )
    candidates = select(Job.id).where(claimable, Job.cancel_requested.is_(False)).order_by(Job.id).limit(8)
    if s.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    for job_id in list(s.scalars(candidates)):
        now = utcnow()
        result = s.execute(
            update(Job)
            .where(Job.id == job_id, claimable)
            .values(status="running", worker_id=worker_id, heartbeat_at=now, attempts=Job.attempts + 1,
                    started_at=func.coalesce(Job.started_at, now))
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            s.flush()
            return get_job(s, job_id)
    return None


def heartbeat(s: Session, job_id: int, worker_id: str) -> bool:
    """Refresh a job's heartbeat if this worker still owns it."""
    result = s.execute(
        update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
        .values(heartbeat_at=utcnow())
    )
    return result.rowcount == 1


# --------------------------------------------------------------------------------------
# Units of work


def ensure_units(s: Session, job_id: int, units: Iterable[tuple[str, str]]) -> None:
    existing = set(s.scalars(select(JobUnit.key).where(JobUnit.job_id == job_id)))
    start = s.scalar(select(func.count(JobUnit.id)).where(JobUnit.job_id == job_id)) or 0
    for i, (key, kind) in enumerate((u for u in units if u[0] not in existing)):
        s.add(JobUnit(job_id=job_id, key=key, kind=kind, position=start + i))
        existing.add(key)
    s.flush()


def list_units(s: Session, job_id: int) -> list[JobUnit]:
    return list(s.scalars(select(JobUnit).where(JobUnit.job_id == job_id).order_by(JobUnit.position)))


def get_unit(s: Session, job_id: int, key: str) -> JobUnit:
    unit = s.scalar(select(JobUnit).where(JobUnit.job_id == job_id, JobUnit.key == key))
    if unit is None:
        raise NotFoundError(f"Job {job_id} has no unit {key!r}.")
    return unit


def done_units(s: Session, job_id: int) -> dict[str, dict[str, Any]]:
    rows = s.scalars(
        select(JobUnit).where(JobUnit.job_id == job_id, JobUnit.status == "done").order_by(JobUnit.position)
    )
    return {u.key: (u.result or {}) for u in rows}


def claim_unit(s: Session, job_id: int, worker_id: str) -> JobUnit | None:
    """The next pending unit of a job, marked running for this worker (compare-and-set)."""
    candidates = select(JobUnit.id).where(JobUnit.job_id == job_id, JobUnit.status == "pending").order_by(JobUnit.position).limit(8)
    if s.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    for unit_id in list(s.scalars(candidates)):
        result = s.execute(
            update(JobUnit).where(JobUnit.id == unit_id, JobUnit.status == "pending")
            .values(status="running", worker_id=worker_id, started_at=utcnow(), attempts=JobUnit.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            return s.get(JobUnit, unit_id)
    return None


def finish_unit(s: Session, unit_id: int, result: dict[str, Any]) -> None:
    s.execute(update(JobUnit).where(JobUnit.id == unit_id).values(status="done", result=result, finished_at=utcnow(), error=None))


def fail_unit(s: Session, unit_id: int, error: str) -> None:
    s.execute(update(JobUnit).where(JobUnit.id == unit_id).values(status="failed", error=error, finished_at=utcnow()))


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
    """Index one cache entry (idempotent by cache key)."""
    row = s.scalar(select(Embedding).where(Embedding.cache_key == cache_key))
    if row is None:
        row = Embedding(cache_key=cache_key, model_name=model_name, dataset_fingerprint=dataset_fingerprint,
                        split=split, path=path, n=n, dim=dim, weights_sha256=weights_sha256,
                        preprocessing=preprocessing, seconds=seconds, images_per_s=images_per_s)
        s.add(row)
        s.flush()
    return row


def add_knn_score(s: Session, job_id: int, **fields: Any) -> KnnScore:
    row = s.scalar(select(KnnScore).where(KnnScore.job_id == job_id, KnnScore.model_name == fields["model_name"]))
    if row is None:
        row = KnnScore(job_id=job_id)
        s.add(row)
    for key, value in fields.items():
        setattr(row, key, value)
    s.flush()
    return row


def get_ranking(s: Session, job_id: int) -> list[KnnScore]:
    """kNN scores best first (kNN accuracy, then val accuracy, then name)."""
    rows = list(s.scalars(select(KnnScore).where(KnnScore.job_id == job_id)))
    return sorted(rows, key=lambda r: (-r.knn_accuracy, -(r.val_accuracy or 0.0), r.model_name))


def add_finetune_run(s: Session, job_id: int, *, unit_key: str, **fields: Any) -> FinetuneRun:
    row = s.scalar(select(FinetuneRun).where(FinetuneRun.job_id == job_id, FinetuneRun.unit_key == unit_key))
    if row is None:
        row = FinetuneRun(job_id=job_id, unit_key=unit_key)
        s.add(row)
    row.model_name = fields.pop("model")
    for key, value in fields.items():
        setattr(row, key, value)
    s.flush()
    return row


def list_finetune_runs(s: Session, job_id: int) -> list[FinetuneRun]:
    return list(s.scalars(select(FinetuneRun).where(FinetuneRun.job_id == job_id).order_by(FinetuneRun.id)))


def get_finetune_run(s: Session, run_id: int) -> FinetuneRun:
    row = s.get(FinetuneRun, run_id)
    if row is None:
        raise NotFoundError(f"No fine-tune run with id {run_id}.")
    return row


def create_ensemble(
    s: Session,
    job_id: int,
    *,
    members: list[tuple[int, float]],
    val_ce: float,
    val_acc: float | None,
    test_acc: float | None,
    size: int,
    loss_curve: list[float],
) -> Ensemble:
    ens = Ensemble(job_id=job_id, val_ce=val_ce, val_acc=val_acc, test_acc=test_acc, size=size, loss_curve=loss_curve)
    s.add(ens)
    s.flush()
    for position, (run_id, weight) in enumerate(members):
        s.add(EnsembleMember(ensemble_id=ens.id, run_id=run_id, weight=weight, position=position))
    s.flush()
    s.refresh(ens)
    return ens


def get_ensemble(s: Session, ensemble_id: int) -> Ensemble:
    ens = s.get(Ensemble, ensemble_id)
    if ens is None:
        raise NotFoundError(f"No ensemble with id {ensemble_id}; a finished job's ensemble is at GET /api/v1/jobs/{{id}}/ensemble.")
    return ens


def get_job_ensemble(s: Session, job_id: int) -> Ensemble | None:
    return s.scalar(select(Ensemble).where(Ensemble.job_id == job_id).order_by(Ensemble.id.desc()).limit(1))


# --------------------------------------------------------------------------------------
# API tokens


def _hash_token(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


def create_token(s: Session, name: str) -> tuple[str, ApiToken]:
    """A new token; only its sha256 is stored, the plain token is returned once."""
    if s.scalar(select(ApiToken).where(ApiToken.name == name)) is not None:
        raise ConflictError(f"A token named {name!r} exists; revoke it or choose another name.")
    plain = "zoo_" + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=_hash_token(plain), prefix=plain[:10])
    s.add(row)
    s.flush()
    return plain, row


def verify_token(s: Session, plain: str) -> ApiToken | None:
    digest = _hash_token(plain)
    row = s.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_hash, digest):
        return None
    row.last_used_at = utcnow()
    s.flush()
    return row


def revoke_token(s: Session, name_or_id: str | int) -> ApiToken:
    query = select(ApiToken).where(ApiToken.name == str(name_or_id))
    row = s.scalar(query)
    if row is None and str(name_or_id).isdigit():
        row = s.get(ApiToken, int(name_or_id))
    if row is None:
        raise NotFoundError(f"No token named {name_or_id!r}; see `zooens tokens list`.")
    row.revoked_at = row.revoked_at or datetime.now(timezone.utc)
    s.flush()
    return row


def list_tokens(s: Session) -> list[ApiToken]:
    return list(s.scalars(select(ApiToken).order_by(ApiToken.id)))
