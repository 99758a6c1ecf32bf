"""Claiming jobs and units from several threads and processes at once, on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from zooens.errors import ConflictError
from zooens.service import registry
from zooens.service.db import models
from zooens.service.db.session import dispose_engines, session_scope

N_PROCS = 3


def _queue_jobs(n: int) -> set[int]:
    with session_scope() as s:
        ds = registry.get_or_create_dataset(s, name="d", source="/d", fingerprint="f" * 64, classes=["a"], counts={})
        return {
            registry.create_job(s, dataset_id=ds.id, zoo="embedded", zoo_models=["a"], params={}).id for _ in range(n)
        }


def _claim_jobs_until_empty(url: str, worker_id: str, start: mp.synchronize.Barrier, out: mp.Queue) -> None:
    """Child process: claim jobs until none is left; report every claimed id."""
    try:
        start.wait(timeout=60)
        while True:
            with session_scope(url) as s:
                job = registry.claim_job(s, worker_id)
                job_id = None if job is None else job.id
            if job_id is None:
                break
            out.put((worker_id, job_id))
    finally:
        out.put((worker_id, None))
        dispose_engines()


def _claim_units_until_empty(
    url: str, job_id: int, worker_id: str, start: mp.synchronize.Barrier, out: mp.Queue
) -> None:
    """Child process: claim and finish units of one job until none is pending; report each key."""
    try:
        start.wait(timeout=60)
        while True:
            with session_scope(url) as s:
                unit = registry.claim_unit(s, job_id, worker_id)
                key = None if unit is None else unit.key
                unit_id = None if unit is None else unit.id
            if key is None:
                break
            with session_scope(url) as s:
                registry.finish_unit(s, unit_id, {"by": worker_id}, worker_id=worker_id)
            out.put((worker_id, key))
    finally:
        out.put((worker_id, None))
        dispose_engines()


def _run_processes(target, args_of) -> list[tuple[str, object]]:
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(N_PROCS), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_of(f"p{i}"), start, out)) for i in range(N_PROCS)]
    for p in procs:
        p.start()
    claimed, finished = [], 0
    while finished < N_PROCS:
        try:
            worker, item = out.get(timeout=120)
        except queue.Empty:
            pytest.fail("a claiming process hung")
        if item is None:
            finished += 1
        else:
            claimed.append((worker, item))
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return claimed


@pytest.mark.slow
def test_processes_never_claim_the_same_job(db_url):
    ids = _queue_jobs(15)
    claimed = _run_processes(_claim_jobs_until_empty, lambda name: (db_url, name))
    got = [job_id for _, job_id in claimed]
    assert sorted(got) == sorted(ids)
    with session_scope() as s:
        jobs, _ = registry.list_jobs(s, limit=100)
        owners = dict((job_id, worker) for worker, job_id in claimed)
        assert all(j.status == "running" and j.attempts == 1 and j.worker_id == owners[j.id] for j in jobs)


@pytest.mark.slow
def test_processes_never_claim_the_same_unit(db_url):
    job_id = next(iter(_queue_jobs(1)))
    keys = [f"finetune:m:{i}" for i in range(20)]
    with session_scope() as s:
        registry.ensure_units(s, job_id, [(k, "finetune") for k in keys])
    claimed = _run_processes(_claim_units_until_empty, lambda name: (db_url, job_id, name))
    assert sorted(key for _, key in claimed) == sorted(keys)
    with session_scope() as s:
        assert set(registry.done_units(s, job_id)) == set(keys)
        assert registry.pending_units(s, job_id) == []
        assert all(u.attempts == 1 for u in registry.list_units(s, job_id))


def test_threads_never_claim_the_same_job(db_url):
    ids = _queue_jobs(20)
    claimed: list[int] = []
    lock, barrier = threading.Lock(), threading.Barrier(4)

    def work(name: str) -> None:
        barrier.wait()
        while True:
            with session_scope() as s:
                job = registry.claim_job(s, name)
                job_id = None if job is None else job.id
            if job_id is None:
                return
            with lock:
                claimed.append(job_id)

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(claimed) == sorted(ids)


def test_claims_take_the_oldest_queued_job_first(db_url):
    ids = sorted(_queue_jobs(3))
    with session_scope() as s:
        registry.request_cancel(s, ids[0])
    with session_scope() as s:
        assert registry.claim_job(s, "w").id == ids[1]
    with session_scope() as s:
        assert registry.claim_job(s, "w").id == ids[2]
    with session_scope() as s:
        assert registry.claim_job(s, "w") is None


def _make_stale(job_id: int) -> None:
    with session_scope() as s:
        s.execute(
            update(models.Job).where(models.Job.id == job_id).values(heartbeat_at=models.utcnow() - timedelta(hours=1))
        )


def test_a_silent_workers_job_is_taken_over_with_its_running_units_requeued(db_url):
    (job_id,) = _queue_jobs(1)
    with session_scope() as s:
        registry.claim_job(s, "dead")
        registry.ensure_units(s, job_id, [("embed:a", "embed"), ("embed:b", "embed"), ("ensemble", "ensemble")])
    with session_scope() as s:
        a = registry.claim_unit(s, job_id, "dead")
    with session_scope() as s:
        registry.finish_unit(s, a.id, {"acc": 1.0}, worker_id="dead")
        b = registry.claim_unit(s, job_id, "dead")
    with session_scope() as s:
        assert registry.claim_job(s, "new") is None  # heartbeat still fresh
    _make_stale(job_id)
    with session_scope() as s:
        job = registry.claim_job(s, "new")
        assert (job.id, job.worker_id, job.status, job.attempts) == (job_id, "new", "running", 2)
    with session_scope() as s:
        assert not registry.heartbeat(s, job_id, "dead")
        assert registry.heartbeat(s, job_id, "new")
        assert [u.key for u in registry.pending_units(s, job_id)] == ["embed:b", "ensemble"]
        assert registry.done_units(s, job_id) == {"embed:a": {"acc": 1.0}}
        with pytest.raises(ConflictError):  # the dead worker's late result is refused
            registry.finish_unit(s, b.id, {"acc": 0.0}, worker_id="dead")
    with session_scope() as s:
        again = registry.claim_unit(s, job_id, "new")
        assert (again.key, again.worker_id, again.attempts) == ("embed:b", "new", 2)


def test_a_silent_job_whose_cancel_was_requested_is_closed_not_claimed(db_url):
    (job_id,) = _queue_jobs(1)
    with session_scope() as s:
        registry.claim_job(s, "dead")
        registry.request_cancel(s, job_id)
    _make_stale(job_id)
    with session_scope() as s:
        assert registry.claim_job(s, "new") is None
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        assert job.status == "cancelled" and job.finished_at is not None


def test_claim_after_reads_in_the_same_session(db_url):
    """A session that read first still claims safely (SQLite upgrades to a write transaction)."""
    ids = _queue_jobs(2)
    with session_scope() as s:
        registry.list_jobs(s)
        first = registry.claim_job(s, "w").id
        second = registry.claim_job(s, "w").id
    assert {first, second} == ids
