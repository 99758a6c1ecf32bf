"""No job stays "running" for a worker that is gone: `jobs cancel` closes a job no live worker holds at once,
and a stopping `zooens serve --with-worker` hands its job back to the queue, where the next worker takes it
at once (before, each waited for the dead worker's heartbeat to go stale and for a new worker to appear)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from tests.service._live import start_server, stop_server
from tests.service._tiny import register_tiny_zoo
from zooens.errors import ConflictError
from zooens.service import registry
from zooens.service.db.session import session_scope, upgrade_to_head


def _job(s) -> int:
    ds = registry.create_dataset(s, name="d", source="/d", fingerprint="f" * 64, classes=["a"], counts={})
    return registry.create_job(s, dataset_id=ds.id, zoo="embedded", zoo_models=["a"], params={}).id


def _claimed_with_a_running_unit(worker_id: str = "w") -> int:
    with session_scope() as s:
        job_id = _job(s)
    with session_scope() as s:
        assert registry.claim_job(s, worker_id).id == job_id
        registry.ensure_units(s, job_id, [("embed:a", "embed"), ("embed:b", "embed")])
    with session_scope() as s:
        assert registry.claim_unit(s, job_id, worker_id).key == "embed:a"
    return job_id


def _age_heartbeat(job_id: int, seconds: float) -> None:
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        job.heartbeat_at = job.heartbeat_at - timedelta(seconds=seconds)


def test_cancel_closes_a_running_job_whose_worker_is_gone(db_url):
    job_id = _claimed_with_a_running_unit()
    _age_heartbeat(job_id, 3600)  # its worker died an hour ago
    with session_scope() as s:
        job = registry.request_cancel(s, job_id)
        assert (job.status, job.cancel_requested) == ("cancelled", True) and job.finished_at is not None
        assert [u.status for u in registry.list_units(s, job_id)] == ["pending", "pending"]
        assert registry.claim_job(s, "next") is None
    with session_scope() as s:
        assert registry.reopen_job(s, job_id).status == "queued"  # resumable as any cancelled job


def test_cancel_waits_for_a_live_worker_and_closes_once_it_is_gone(db_url):
    job_id = _claimed_with_a_running_unit()
    with session_scope() as s:
        job = registry.request_cancel(s, job_id)  # its worker beats: it stops the job itself
        assert (job.status, job.cancel_requested, job.finished_at) == ("running", True, None)
        assert registry.heartbeat(s, job_id, "w") and registry.is_cancel_requested(s, job_id)
    _age_heartbeat(job_id, 3600)  # then it died before it could
    with session_scope() as s:
        assert registry.request_cancel(s, job_id).status == "cancelled"
    with session_scope() as s:
        with pytest.raises(ConflictError, match="already cancelled"):
            registry.request_cancel(s, job_id)


def test_cancel_closes_a_running_job_with_no_owner(db_url):
    with session_scope() as s:
        job_id = _job(s)
        registry.set_job_status(s, job_id, "running")  # running, but no worker holds it
    with session_scope() as s:
        assert registry.request_cancel(s, job_id).status == "cancelled"


def _long_job() -> int:
    """A job of the tiny zoo long enough (six 300-step runs) to be stopped while it runs."""
    from zooens.pipeline import JobParams
    from zooens.selection.datasets import load_dataset
    from zooens.service.jobs import register_dataset, submit_job

    upgrade_to_head()
    lrs = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
    params = JobParams(top_k=1, strategies=["linear"], learning_rates=lrs, steps=[300], resolution=32, seed=0)
    with session_scope() as s:
        ds_row = register_dataset(s, "digits", load_dataset("digits"))
        return submit_job(s, ds_row.id, "user", params).id


def _wait_running(job_id: int, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as s:
            job = registry.get_job(s, job_id)
            if job.status == "running":
                return job.worker_id
        time.sleep(0.1)
    pytest.fail(f"job {job_id} was never claimed")


def test_stopping_the_in_process_worker_hands_its_job_back(zooens_home, db_url, monkeypatch):
    from zooens.service.jobs import start_background_worker
    from zooens.settings import get_settings

    monkeypatch.setenv("ZOOENS_HEARTBEAT_SECONDS", "0.2")
    get_settings.cache_clear()
    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    job_id = _long_job()
    thread, stop = start_background_worker(poll_seconds=0.05)
    worker_id = _wait_running(job_id)
    stop.set()  # what the app's shutdown does
    with session_scope() as s:  # at once, not once its heartbeat is stale
        job = registry.get_job(s, job_id)
        assert (job.status, job.worker_id, job.heartbeat_at, job.finished_at) == ("queued", None, None, None)
        assert all(u.status in ("pending", "done") for u in registry.list_units(s, job_id))
    thread.join(timeout=120)  # its run finds the job gone and stops, writing nothing more
    assert not thread.is_alive()
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        assert job.status == "queued" and registry.get_job_ensemble(s, job_id) is None
        taken = registry.claim_job(s, "next")
        assert taken.id == job_id and taken.worker_id == "next" != worker_id


@pytest.mark.slow
def test_zooens_serve_shutting_down_releases_its_workers_job(zooens_home, db_url):
    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    job_id = _long_job()
    proc, _ = start_server(zooens_home, db_url, with_worker=True)
    try:
        _wait_running(job_id)
    finally:
        stop_server(proc)  # SIGTERM: uvicorn's graceful shutdown
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        assert (job.status, job.worker_id) == ("queued", None), proc.stderr.read().decode()[-2000:]
        assert registry.claim_job(s, "next").id == job_id


@pytest.mark.slow
def test_sigterm_to_zooens_worker_releases_its_job_and_ends_it_cleanly(zooens_home, db_url):
    """`docker stop` sends SIGTERM: the worker hands its job back and exits 0 (before, it died with the job
    left "running" until its heartbeat went stale)."""
    import os
    import subprocess

    from tests.service._live import ZOOENS

    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    job_id = _long_job()
    env = {**os.environ, "ZOOENS_HOME": str(zooens_home), "ZOOENS_DATABASE_URL": db_url}
    env["ZOOENS_HEARTBEAT_SECONDS"] = "0.3"
    proc = subprocess.Popen([ZOOENS, "worker", "--poll", "0.1"], env=env, stderr=subprocess.PIPE)
    try:
        _wait_running(job_id)
        proc.terminate()
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        assert (job.status, job.worker_id) == ("queued", None)
        assert registry.count_live_workers(s, 3600) == 0  # it removed its liveness row on the way out
        assert registry.claim_job(s, "next").id == job_id
