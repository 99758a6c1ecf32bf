"""`zooens worker`: claim queued (or abandoned) jobs from the registry and run them."""
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

__all__ = ["default_worker_id", "start_background_worker", "work"]


def default_worker_id(role: str = "") -> str:
    """A worker id unique to this process: host, pid and a random suffix."""
    prefix = f"{role}-" if role else ""
    return f"{prefix}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


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
    `stale_after_seconds`) is claimed again and resumes at its first unfinished unit.
    """
    worker_id = worker_id or default_worker_id()
    stop = stop or threading.Event()
    n = 0
    logger.info("worker %s started", worker_id)
    while not stop.is_set():
        with session_scope() as s:
            job = registry.claim_job(s, worker_id)
            job_id = None if job is None else job.id
        if job_id is None:
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
    return n


def start_background_worker(**kwargs) -> tuple[threading.Thread, threading.Event]:
    """A worker thread in this process (for `zooens serve --with-worker`)."""
    stop = threading.Event()
    thread = threading.Thread(target=work, kwargs={**kwargs, "stop": stop}, daemon=True, name="zooens-worker")
    thread.start()
    return thread, stop
