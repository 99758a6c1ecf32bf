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
    "ReleasingStop",
    "background_worker_alive",
    "default_worker_id",
    "start_background_worker",
    "work",
]

BACKOFF_MIN_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0

_background: tuple[threading.Thread, threading.Event] | None = None


class ReleasingStop(threading.Event):
    """A worker's stop request that also hands back the job it runs, at once: `set()` releases the job
    (`registry.release_job`: queued again, its started units pending), so another worker resumes it now
    instead of once its heartbeat is stale; this worker's run then finds the job gone, stops within a beat
    and writes nothing more. `zooens serve --with-worker` stops its in-process worker with one at shutdown."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._held: tuple[int, str] | None = None

    def hold(self, job_id: int, worker_id: str) -> bool:
        """Note the job the worker starts; False (and the job released) if the stop came first."""
        with self._lock:
            if not self.is_set():
                self._held = (job_id, worker_id)
                return True
        _release(job_id, worker_id)
        return False

    def done(self) -> None:
        """The worker's run of its job ended: nothing to release."""
        with self._lock:
            self._held = None

    def set(self) -> None:
        with self._lock:
            super().set()
            held, self._held = self._held, None
        if held is not None:
            _release(*held)


def _release(job_id: int, worker_id: str) -> None:
    try:
        with session_scope() as s:
            released = registry.release_job(s, job_id, worker_id)
    except Exception:  # the database may be gone: the job is taken over once its heartbeat is stale
        logger.warning("worker %s: could not release job %s", worker_id, job_id, exc_info=True)
        return
    if released:
        logger.warning("worker %s stopped; job %s is queued again for the next worker", worker_id, job_id)


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
            if isinstance(stop, ReleasingStop) and not stop.hold(job_id, worker_id):
                break
            logger.info("worker %s runs job %s", worker_id, job_id)
            try:
                status = run_job(job_id, worker_id=worker_id, executor=executor, progress=progress)
            except KeyboardInterrupt:  # stopped by hand: the next worker takes the job over at once
                with session_scope() as s:
                    registry.release_job(s, job_id, worker_id)
                logger.warning("worker %s interrupted; job %s is queued again", worker_id, job_id)
                raise
            finally:
                if isinstance(stop, ReleasingStop):
                    stop.done()
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
    """A worker thread in this process (for `zooens serve --with-worker`); `/readyz` watches it. Setting the
    returned stop (`ReleasingStop`) at shutdown hands back the job the thread runs."""
    global _background
    stop = ReleasingStop()
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
