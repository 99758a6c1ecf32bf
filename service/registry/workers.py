"""Workers' liveness: each worker process beats its row (from its loop and its job's heartbeat
thread), so `/readyz` can say how many workers are alive and what they run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from zooens.service.db.models import Job, Worker, utcnow

__all__ = ["beat_worker", "count_live_workers", "oldest_queued_age", "remove_worker"]

_UNSET = object()


def beat_worker(
    s: Session,
    worker_id: str,
    *,
    job_id: int | None | object = _UNSET,
    host: str | None = None,
    pid: int | None = None,
) -> None:
    """Record that `worker_id` is alive now (creating its row on the first beat); `job_id`, when
    given, is the job it runs now (None: idle). Each worker beats only its own row."""
    values: dict[str, object] = {"last_seen": utcnow()}
    if job_id is not _UNSET:
        values["job_id"] = job_id
    if (
        s.execute(
            update(Worker).where(Worker.id == worker_id).values(**values).execution_options(synchronize_session=False)
        ).rowcount
        == 1
    ):
        return
    s.add(
        Worker(
            id=worker_id,
            host=host,
            pid=pid,
            job_id=None if job_id is _UNSET else job_id,
            started_at=values["last_seen"],
            last_seen=values["last_seen"],
        )
    )
    s.flush()


def remove_worker(s: Session, worker_id: str) -> None:
    """Forget a worker that stopped cleanly."""
    s.execute(delete(Worker).where(Worker.id == worker_id))


def count_live_workers(s: Session, within_seconds: float) -> int:
    """How many workers were seen in the last `within_seconds`."""
    cutoff: datetime = utcnow() - timedelta(seconds=within_seconds)
    return s.scalar(select(func.count(Worker.id)).where(Worker.last_seen >= cutoff)) or 0


def oldest_queued_age(s: Session) -> float | None:
    """Seconds the oldest queued job has waited; None when nothing is queued."""
    oldest = s.scalar(select(Job.created_at).where(Job.status == "queued").order_by(Job.created_at).limit(1))
    if oldest is None:
        return None
    return max(0.0, (utcnow() - oldest).total_seconds())
