"""Jobs: queued, claimed by one worker at a time, kept alive by heartbeats, cancelled on request.

A job whose worker goes silent (no heartbeat for `stale_after_seconds`) is claimed again
by another worker, which redoes only the units that were running.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from zooens.errors import ConfigError, ConflictError, NotFoundError
from zooens.service.db.models import FINISHED, JOB_STATUSES, Job, JobUnit, utcnow
from zooens.service.registry._claims import CLAIM_BATCH, begin_write, skip_locked
from zooens.service.registry.datasets import get_dataset
from zooens.service.registry.units import requeue_running_units
from zooens.settings import get_settings

__all__ = [
    "check_finished",
    "claim_job",
    "create_job",
    "delete_job",
    "get_job",
    "heartbeat",
    "is_cancel_requested",
    "list_jobs",
    "release_job",
    "reopen_job",
    "request_cancel",
    "set_job_progress",
    "set_ranking_audit",
    "set_job_split_sizes",
    "set_job_status",
    "set_job_warnings",
    "add_job_warnings",
]

logger = logging.getLogger(__name__)


def create_job(
    s: Session,
    *,
    dataset_id: int,
    zoo: str,
    zoo_models: list[str],
    params: dict[str, Any],
    warnings: list[str] | None = None,
) -> Job:
    """Queue a job on a registered dataset; NotFoundError if the dataset does not exist.

    `zoo` is the zoo as the user gave it; `zoo_models` the weight-set names it resolved to; `warnings` what
    its submission checks found (stored as `set_job_warnings` stores them: none as None).
    """
    get_dataset(s, dataset_id)
    job = Job(
        dataset_id=dataset_id,
        zoo=zoo,
        zoo_models=list(zoo_models),
        params=params,
        status="queued",
        progress={},
        warnings=list(warnings) if warnings else None,
    )
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


def list_jobs(s: Session, *, status: str | None = None, limit: int = 50, offset: int = 0) -> tuple[list[Job], int]:
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


def set_job_progress(s: Session, job_id: int, *, stage: str, progress: dict[str, Any]) -> None:
    """Record a job's stage and its per-stage progress (`{stage: {done, total, current}}`)."""
    if s.execute(update(Job).where(Job.id == job_id).values(stage=stage, progress=progress)).rowcount != 1:
        raise NotFoundError(f"No job with id {job_id}.")


def set_ranking_audit(s: Session, job_id: int, audit: dict[str, Any] | None) -> None:
    """Record how well the job's ranking predicted its fine-tuned order (`selection.audit`, as JSON)."""
    if s.execute(update(Job).where(Job.id == job_id).values(ranking_audit=audit)).rowcount != 1:
        raise NotFoundError(f"No job with id {job_id}.")


def set_job_warnings(s: Session, job_id: int, warnings: list[str] | None) -> None:
    """Record the job's warnings: what its submission checks found (`pipeline.checks.check_counts`) and why
    its val numbers may not be trusted (`pipeline.stages.ensemble_warnings`); an empty list is stored as None."""
    values = list(warnings) if warnings else None
    if s.execute(update(Job).where(Job.id == job_id).values(warnings=values)).rowcount != 1:
        raise NotFoundError(f"No job with id {job_id}.")


def add_job_warnings(s: Session, job_id: int, warnings: list[str] | None) -> None:
    """Add warnings to the job's (its submission checks', then its ensemble's), each once, in order."""
    job = get_job(s, job_id)
    merged = list(job.warnings or [])
    merged += [w for w in warnings or [] if w not in merged]
    set_job_warnings(s, job_id, merged)


def set_job_split_sizes(s: Session, job_id: int, *, n_train: int, n_val: int) -> None:
    """Record the train and val sizes the job really runs on (`n_train_used`, `n_val_used`), once its split is
    drawn: its `params` keep the sizes asked for, which a smaller dataset (or one with its own val split) does not
    give."""
    values = {"n_train_used": int(n_train), "n_val_used": int(n_val)}
    if s.execute(update(Job).where(Job.id == job_id).values(**values)).rowcount != 1:
        raise NotFoundError(f"No job with id {job_id}.")


def request_cancel(s: Session, job_id: int) -> Job:
    """Cancel a job: a queued one at once, and a running one that no live worker holds (no owner, or its
    heartbeat older than `stale_after_seconds`: its worker died or was stopped) at once too, its started
    units back to pending; a running one whose worker is alive after its current step (the worker sees
    the flag within a heartbeat). Asking again closes a job whose worker has died since.

    ConflictError if the job has already finished.
    """
    begin_write(s)
    job = get_job(s, job_id)
    if job.status in FINISHED:
        raise ConflictError(f"Job {job_id} has already {job.status}; only queued or running jobs can be cancelled.")
    now = utcnow()
    unheld = or_(Job.status == "queued", and_(Job.status == "running", _no_live_owner(_stale_cutoff())))
    closed = s.execute(
        update(Job)
        .where(Job.id == job_id, unheld)
        .values(status="cancelled", cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if closed:
        requeue_running_units(s, job_id)
    else:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
    return get_job(s, job_id)


def _stale_cutoff() -> datetime:
    """Heartbeats older than this mean the job's worker is gone (`stale_after_seconds`)."""
    return utcnow() - timedelta(seconds=get_settings().stale_after_seconds)


def _no_live_owner(cutoff: datetime) -> ColumnElement[bool]:
    """A running job's claim is held by no live worker: it has no owner, or its heartbeat is older than `cutoff`."""
    return or_(Job.worker_id.is_(None), Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff)


def _claimable_job(cutoff: datetime) -> ColumnElement[bool]:
    stale = and_(Job.status == "running", _no_live_owner(cutoff))
    return and_(or_(Job.status == "queued", stale), Job.cancel_requested.is_(False))


def claim_job(s: Session, worker_id: str) -> Job | None:
    """Take the oldest queued job, or a running one whose worker went silent; None if none.

    The job becomes `running` for `worker_id` with a fresh heartbeat and one more attempt.
    A job taken over from a silent worker gets its unfinished `running` units back to
    `pending`, so the new worker redoes only those. Silent jobs whose cancel was requested
    are closed as `cancelled` instead of being claimed. Commit promptly after claiming:
    until then the claim holds SQLite's write lock (or the PostgreSQL row lock).
    """
    begin_write(s)
    now = utcnow()
    cutoff = _stale_cutoff()
    s.execute(
        update(Job)
        .where(
            Job.status == "running",
            Job.cancel_requested.is_(True),
            or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff),
        )
        .values(status="cancelled", finished_at=now)
        .execution_options(synchronize_session=False)
    )
    claimable = _claimable_job(cutoff)
    candidates = select(Job.id, Job.status).where(claimable).order_by(Job.created_at, Job.id).limit(CLAIM_BATCH)
    if skip_locked(s):
        candidates = candidates.with_for_update(skip_locked=True)
    for job_id, status in s.execute(candidates).all():
        taken = s.execute(
            update(Job)
            .where(Job.id == job_id, claimable)
            .values(
                status="running",
                worker_id=worker_id,
                heartbeat_at=now,
                attempts=Job.attempts + 1,
                started_at=func.coalesce(Job.started_at, now),
                finished_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:
            continue
        if status == "running":
            n = requeue_running_units(s, job_id)
            logger.warning(
                "job %s: its worker went silent; %s takes it over (%d units re-queued)", job_id, worker_id, n
            )
        return get_job(s, job_id)
    return None


def heartbeat(s: Session, job_id: int, worker_id: str) -> bool:
    """Refresh a running job's heartbeat; False if this worker no longer owns the job."""
    result = s.execute(
        update(Job)
        .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def is_cancel_requested(s: Session, job_id: int) -> bool:
    """Whether a cancel was requested for the job (read by the running job's heartbeat thread)."""
    return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def release_job(s: Session, job_id: int, worker_id: str) -> bool:
    """Give a running job back to the queue (a worker shutting down); False if this worker does not own it.

    Its `running` units go back to `pending`, so the next worker redoes only those. A job
    whose cancel was requested is closed as `cancelled` instead of being queued again.
    """
    begin_write(s)
    owned = and_(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
    closed = s.execute(
        update(Job)
        .where(owned, Job.cancel_requested.is_(True))
        .values(status="cancelled", finished_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    released = (
        closed
        or s.execute(
            update(Job)
            .where(owned)
            .values(status="queued", worker_id=None, heartbeat_at=None)
            .execution_options(synchronize_session=False)
        ).rowcount
    )
    if released != 1:
        return False
    requeue_running_units(s, job_id)
    return True


RESUMABLE = ("failed", "cancelled")
"""Statuses a job can be resumed from (`reopen_job`)."""


def _unfinished(job: Job, action: str) -> ConflictError:
    """Why a queued or running job cannot be deleted or retried: one line, with what to do."""
    return ConflictError(
        f"Job {job.id} is {job.status}; cancel it first (`zooens jobs cancel {job.id}` or "
        f"POST /api/v1/jobs/{job.id}/cancel), then {action} it."
    )


def reopen_job(s: Session, job_id: int) -> Job:
    """Put a failed or cancelled job back in the queue, its finished units kept.

    Its failed (and any running) units go back to `pending` with their error and attempts
    cleared; the job loses its cancel flag, error, end time and worker. ConflictError for a
    job that is queued, running or succeeded (a succeeded job is retried, not resumed).
    """
    begin_write(s)
    reopened = s.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(RESUMABLE))
        .values(
            status="queued", cancel_requested=False, error=None, finished_at=None, worker_id=None, heartbeat_at=None
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if reopened != 1:
        job = get_job(s, job_id)
        if job.status == "succeeded":
            raise ConflictError(
                f"Job {job_id} has succeeded; there is nothing to resume. Run it again as a new job "
                f"with `zooens jobs retry {job_id}` (POST /api/v1/jobs/{job_id}/retry)."
            )
        raise ConflictError(f"Job {job_id} is {job.status}; only a failed or cancelled job can be resumed.")
    s.execute(
        update(JobUnit)
        .where(JobUnit.job_id == job_id, JobUnit.status.in_(("failed", "running")))
        .values(status="pending", error=None, worker_id=None, attempts=0, started_at=None, finished_at=None)
        .execution_options(synchronize_session=False)
    )
    return get_job(s, job_id)


def check_finished(s: Session, job_id: int, action: str) -> Job:
    """The job, if it has finished; ConflictError (cancel it first) if it is queued or running."""
    job = get_job(s, job_id)
    if job.status not in FINISHED:
        raise _unfinished(job, action)
    return job


def delete_job(s: Session, job_id: int) -> None:
    """Delete a finished job and, by the database's cascade, its units, scores, runs and ensembles.

    ConflictError for a queued or running job (cancel it first); its files are the caller's.
    """
    begin_write(s)
    deleted = s.execute(
        delete(Job).where(Job.id == job_id, Job.status.in_(FINISHED)).execution_options(synchronize_session=False)
    ).rowcount
    if deleted != 1:
        raise _unfinished(get_job(s, job_id), "delete")
