"""A job's units of work (`embed:<model>`, `finetune:...`, `ensemble`): planned, claimed, finished.

A unit's result is recorded only by the worker that still owns it, so a unit taken over
from a silent worker is never recorded twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from zooens.errors import ConflictError, NotFoundError
from zooens.service.db.models import JobUnit, utcnow
from zooens.service.registry._claims import CLAIM_BATCH, begin_write, skip_locked

__all__ = [
    "claim_unit",
    "done_units",
    "ensure_units",
    "fail_unit",
    "finish_unit",
    "get_unit",
    "list_units",
    "pending_units",
    "requeue_running_units",
]


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
    return list(
        s.scalars(
            select(JobUnit).where(JobUnit.job_id == job_id, JobUnit.status == "pending").order_by(JobUnit.position)
        )
    )


def done_units(s: Session, job_id: int) -> dict[str, dict[str, Any]]:
    """The results of a job's finished units, by key, in planning order."""
    rows = s.scalars(
        select(JobUnit).where(JobUnit.job_id == job_id, JobUnit.status == "done").order_by(JobUnit.position)
    )
    return {u.key: (u.result or {}) for u in rows}


def claim_unit(s: Session, job_id: int, worker_id: str) -> JobUnit | None:
    """The next pending unit of a job, marked `running` for this worker; None if none is left."""
    begin_write(s)
    candidates = (
        select(JobUnit.id)
        .where(JobUnit.job_id == job_id, JobUnit.status == "pending")
        .order_by(JobUnit.position)
        .limit(CLAIM_BATCH)
    )
    if skip_locked(s):
        candidates = candidates.with_for_update(skip_locked=True)
    for unit_id in list(s.scalars(candidates)):
        taken = s.execute(
            update(JobUnit)
            .where(JobUnit.id == unit_id, JobUnit.status == "pending")
            .values(
                status="running",
                worker_id=worker_id,
                started_at=utcnow(),
                finished_at=None,
                attempts=JobUnit.attempts + 1,
            )
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
        update(JobUnit)
        .where(JobUnit.job_id == job_id, JobUnit.status == "running")
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
    raise ConflictError(
        f"Unit {unit.key!r} of job {unit.job_id} belongs to worker {unit.worker_id!r} "
        f"({unit.status}), not to {worker_id!r}; its result was not recorded."
    )


def finish_unit(s: Session, unit_id: int, result: dict[str, Any], *, worker_id: str | None = None) -> None:
    """Mark a unit done with its (JSON) result.

    With `worker_id`, only while that worker still owns the running unit (ConflictError
    otherwise), so a unit taken over by another worker is never recorded twice.
    """
    _end_unit(s, unit_id, worker_id, {"status": "done", "result": result, "finished_at": utcnow(), "error": None})


def fail_unit(s: Session, unit_id: int, error: str, *, worker_id: str | None = None) -> None:
    """Mark a unit failed with its reason (same ownership rule as `finish_unit`)."""
    _end_unit(s, unit_id, worker_id, {"status": "failed", "error": error, "finished_at": utcnow()})
