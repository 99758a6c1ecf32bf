"""Run a job in this process, recorded in the registry: the one way `zooens run`, `zooens.fit` and
the VTAB runner do it.

The dataset is registered, the job is submitted already claimed by this process (so no polling
worker takes it, unless this process dies and its heartbeat goes stale), and `run_job` drives it
here to its end.
"""

from __future__ import annotations

from collections.abc import Callable

from zooens.pipeline import JobParams
from zooens.selection.datasets import ImageDataset
from zooens.service.db.session import session_scope, upgrade_to_head
from zooens.service.jobs.run import run_job
from zooens.service.jobs.submit import register_dataset, submit_job
from zooens.service.jobs.worker import default_worker_id

__all__ = ["run_here"]


def run_here(
    source: str,
    ds: ImageDataset,
    zoo: str | list[str],
    params: JobParams,
    *,
    name: str | None = None,
    role: str = "cli",
    progress: bool = True,
    on_submitted: Callable[[int], None] | None = None,
) -> tuple[int, str]:
    """Register `ds` (loaded from `source`, which a worker resuming the job reloads), submit a job over
    `zoo` claimed by this process, call `on_submitted(job_id)`, run it here; `(job_id, final status)`.

    Bad data, a bad zoo or parameters the data cannot serve record nothing (one transaction). A job
    that fails is returned with its status, not raised (`require_success` raises its reason); Ctrl-C
    ends it `cancelled` and the KeyboardInterrupt goes on.
    """
    upgrade_to_head()
    worker_id = default_worker_id(role)
    with session_scope() as s:
        row = register_dataset(s, source, ds, name=name)
        job_id = submit_job(s, row.id, zoo, params, claim_for=worker_id).id
    if on_submitted is not None:
        on_submitted(job_id)
    return job_id, run_job(job_id, worker_id=worker_id, progress=progress)
