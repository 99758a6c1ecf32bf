"""`zooens worker`: claim queued (or abandoned) jobs from the registry and run them.

A worker survives faults: a database error (an outage, a restart, a dropped connection) or
any unexpected error in its loop is logged and retried with exponential back-off
(`BACKOFF_MIN_SECONDS` doubling to `BACKOFF_MAX_SECONDS`); only a stop request or Ctrl-C
ends it. It records its liveness in the registry's `workers` table (from this loop and from
its job's heartbeat thread), which `/readyz` reads.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from zooens.service import registry
from zooens.service.db.session import session_scope
from zooens.service.jobs.executors import Executor
from zooens.service.jobs.run import run_job

logger = logging.getLogger(__name__)

__all__ = [
    "BACKOFF_MAX_SECONDS",
    "BACKOFF_MIN_SECONDS",
    "background_worker_alive",
    "default_worker_id",
    "start_background_worker",
    "work",
]

BACKOFF_MIN_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0

_background: tuple[threading.Thread, threading.Event] | None = None


def default_worker_id(role: str = "") -> str:
    """A random worker id: public (in `jobs.worker_id` and the API), so it names neither host nor
    process; the worker logs those next to it, and the `workers` table keeps them for operators."""
    prefix = f"{role}-" if role else "worker-"
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def _beat(worker_id: str, job_id: int | None) -> None:
    with session_scope() as s:
        registry.beat_worker(s, worker_id, job_id=job_id, host=socket.gethostname(), pid=os.getpid())


def _next_job(worker_id: str) -> int | None:
    """Beat this worker's liveness and claim the next job; its id, or None if none is claimable."""
    _beat(worker_id, None)
    with session_scope() as s:
        job = registry.claim_job(s, worker_id)
        return None if job is None else job.id


def work(
    worker_id: str | None = None,
    *,
    once: bool = False,
    poll_seconds: float = 1.0,
    executor: Executor | None = None,
    stop: threading.Event | None = None,
    progress: bool = False,
) -> int:
    """Claim and run jobs until `stop` is set (or, with `once`, until the queue is empty).

    Returns the number of jobs run. A job whose worker went silent (no heartbeat for
    `stale_after_seconds`) is claimed again and resumes at its first unfinished unit. Errors
    never end the loop: they are logged and retried after a back-off that doubles up to
    `BACKOFF_MAX_SECONDS` (a job whose run failed that way is taken over once its heartbeat is
    stale, or resumed by this worker).
    """
    worker_id = worker_id or default_worker_id()
    stop = stop or threading.Event()
    n = 0
    backoff = BACKOFF_MIN_SECONDS
    logger.info("worker %s started (host %s, pid %d)", worker_id, socket.gethostname(), os.getpid())
    while not stop.is_set():
        try:
            job_id = _next_job(worker_id)
            if job_id is None:
                backoff = BACKOFF_MIN_SECONDS
                if once:
                    break
                stop.wait(poll_seconds)
                continue
            logger.info("worker %s runs job %s", worker_id, job_id)
            try:
                status = run_job(job_id, worker_id=worker_id, executor=executor, progress=progress)
            except KeyboardInterrupt:  # stopped by hand: the next worker takes the job over at once
                with session_scope() as s:
                    registry.release_job(s, job_id, worker_id)
                logger.warning("worker %s interrupted; job %s is queued again", worker_id, job_id)
                raise
            logger.info("job %s %s", job_id, status)
            n += 1
            backoff = BACKOFF_MIN_SECONDS
        except Exception:  # a database outage or a bug: log, wait, try again; never die silently
            logger.warning("worker %s: error in its loop; retrying in %.1f s", worker_id, backoff, exc_info=True)
            stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
    try:
        with session_scope() as s:
            registry.remove_worker(s, worker_id)
    except Exception:  # the database may be gone; the row then just goes stale
        logger.warning("worker %s: could not remove its liveness row", worker_id, exc_info=True)
    logger.info("worker %s stopped", worker_id)
    return n


def start_background_worker(**kwargs) -> tuple[threading.Thread, threading.Event]:
    """A worker thread in this process (for `zooens serve --with-worker`); `/readyz` watches it."""
    global _background
    stop = threading.Event()
    thread = threading.Thread(target=work, kwargs={**kwargs, "stop": stop}, daemon=True, name="zooens-worker")
    thread.start()
    _background = (thread, stop)
    return thread, stop


def background_worker_alive() -> bool | None:
    """Whether this process's in-process worker thread is alive; None if none was started (or the
    last one was asked to stop, as at the app's shutdown)."""
    if _background is None or _background[1].is_set():
        return None
    return _background[0].is_alive()
