"""Workers: a killed worker's job is finished by another without redoing finished units; Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.service._tiny import register_tiny_zoo

ZOOENS = str(Path(sys.executable).parent / "zooens")


def _submit(
    strategies=("linear",), lrs=(0.01, 0.03, 0.1, 0.3, 1.0), steps=(400,), top_k=2, claim_for: str | None = None
) -> int:
    from zooens.pipeline import JobParams
    from zooens.selection.datasets import load_dataset
    from zooens.service.db.session import session_scope, upgrade_to_head
    from zooens.service.jobs import register_dataset, submit_job

    upgrade_to_head()
    params = JobParams(
        top_k=top_k,
        strategies=list(strategies),
        learning_rates=list(lrs),
        steps=list(steps),
        resolution=32,
        seed=0,
        taps="none",  # unit counts below are of the models alone
    )
    with session_scope() as s:
        ds_row = register_dataset(s, "digits", load_dataset("digits"))
        return submit_job(s, ds_row.id, "user", params, claim_for=claim_for).id


def _units(job_id: int) -> dict[str, tuple[str, object]]:
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    with session_scope() as s:
        return {u.key: (u.status, u.finished_at) for u in registry.list_units(s, job_id)}


def _worker(env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([ZOOENS, "worker", *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_killed_worker_job_resumes_in_another_without_redoing_units(zooens_home):
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    register_tiny_zoo(zooens_home / "weights")
    job_id = _submit()
    env = {
        **os.environ,
        "ZOOENS_HOME": str(zooens_home),
        "ZOOENS_HEARTBEAT_SECONDS": "0.3",
        "ZOOENS_STALE_AFTER_SECONDS": "2",
    }
    first = _worker(env, "--id", "first")
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = [k for k, (st, _) in _units(job_id).items() if st == "done"]
            if any(k.startswith("finetune:") for k in done):
                break
            assert first.poll() is None, first.stderr.read().decode()
            time.sleep(0.2)
        else:
            pytest.fail("the first worker finished no fine-tune unit in time")
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    before = {k: fin for k, (st, fin) in _units(job_id).items() if st == "done"}
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        assert job.status == "running" and job.worker_id == "first"
    total = 3 + 2 * 5 + 1
    assert 4 <= len(before) < total

    time.sleep(2.5)  # let the heartbeat go stale
    second = _worker(env, "--id", "second", "--once", "--poll", "0.2")
    assert second.wait(timeout=300) == 0, second.stderr.read().decode()

    after = _units(job_id)
    assert len(after) == total and all(st == "done" for st, _ in after.values())
    for key, finished_at in before.items():
        assert after[key][1] == finished_at, f"{key} was redone"
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        assert job.status == "succeeded", job.error
        assert job.worker_id == "second"
        runs = registry.list_finetune_runs(s, job_id)
        assert len(runs) == 10 and len({r.unit_key for r in runs}) == 10
        assert len(registry.get_ranking(s, job_id)) == 3


@pytest.mark.slow
def test_same_job_through_a_local_ray_instance_matches_local_executor(zooens_home):
    ray = pytest.importorskip("ray")
    from zooens.service.db.session import session_scope
    from zooens.service.jobs import LocalExecutor, RayExecutor, run_job
    from zooens.service.reports import job_report

    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet", "tiny-resnet"])
    local_id = _submit(lrs=(0.1, 1.0), steps=(100,), claim_for="test")
    assert run_job(local_id, worker_id="test", executor=LocalExecutor(), progress=False) == "succeeded"
    ray_id = _submit(lrs=(0.1, 1.0), steps=(100,), claim_for="test")
    try:
        executor = RayExecutor(num_cpus=2)
        assert run_job(ray_id, worker_id="test", executor=executor, progress=False) == "succeeded"
    finally:
        ray.shutdown()
    with session_scope() as s:
        local, remote = job_report(s, local_id).model_dump(), job_report(s, ray_id).model_dump()
    assert [r["model_name"] for r in remote["ranking"]] == [r["model_name"] for r in local["ranking"]]
    assert [r["knn_accuracy"] for r in remote["ranking"]] == [r["knn_accuracy"] for r in local["ranking"]]
    assert remote["ensemble"]["val_ce"] == pytest.approx(local["ensemble"]["val_ce"], abs=1e-5)
    assert len(remote["runs"]) == len(local["runs"]) == 4


def test_cancel_is_honoured_between_units(zooens_home):
    import threading

    from zooens.service import registry
    from zooens.service.db.session import session_scope
    from zooens.service.jobs import run_job

    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    job_id = _submit(lrs=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0), steps=(300,), top_k=1, claim_for="test")
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault("status", run_job(job_id, worker_id="test", progress=False))
    )
    thread.start()
    while not any(k.startswith("finetune:") and st == "done" for k, (st, _) in _units(job_id).items()):
        assert thread.is_alive()
        time.sleep(0.05)
    with session_scope() as s:
        registry.request_cancel(s, job_id)
    thread.join(timeout=120)
    assert outcome["status"] == "cancelled"
    done = [k for k, (st, _) in _units(job_id).items() if st == "done" and k.startswith("finetune:")]
    assert 1 <= len(done) < 6
    with session_scope() as s:
        assert registry.get_job(s, job_id).status == "cancelled"


def test_a_failure_is_recorded_with_its_reason(zooens_home, tmp_path):
    import shutil

    from PIL import Image

    from zooens.pipeline import JobParams
    from zooens.selection.datasets import load_dataset
    from zooens.service import registry
    from zooens.service.db.session import session_scope, upgrade_to_head
    from zooens.service.jobs import register_dataset, submit_job, work

    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(data / cls / f"{i}.png")
    upgrade_to_head()
    with session_scope() as s:
        ds_id = register_dataset(s, str(data), load_dataset(data)).id
        job_id = submit_job(s, ds_id, "user", JobParams(resolution=32, k=2, taps="none")).id
    shutil.rmtree(data)  # the data went away before a worker took the job
    assert work("w", once=True) == 1
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        assert job.status == "failed" and "data" in job.error and job.finished_at is not None


@pytest.mark.slow
def test_zooens_run_and_a_polling_worker_never_run_the_same_job(zooens_home):
    """`zooens run` claims its job when it creates it; a worker polling the same registry
    finds nothing to take, so every unit runs once, in the CLI."""
    from zooens.service import registry
    from zooens.service.db.session import session_scope, upgrade_to_head

    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet", "tiny-resnet"])
    upgrade_to_head()
    env = {**os.environ, "ZOOENS_HOME": str(zooens_home)}
    poller = _worker(env, "--id", "poller", "--poll", "0.05")
    try:
        for seed in (0, 1, 2):
            cli = subprocess.run(
                [
                    ZOOENS,
                    "run",
                    "--dataset",
                    "digits",
                    "--zoo",
                    "user",
                    "--resolution",
                    "32",
                    "--steps",
                    "20",
                    "--lr",
                    "0.1,0.5",
                    "--top-k",
                    "2",
                    "--taps",
                    "none",
                    "--seed",
                    str(seed),
                    "--json",
                    "--quiet",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert cli.returncode == 0, cli.stderr[-2000:]
        assert poller.poll() is None, poller.stderr.read().decode()
    finally:
        poller.terminate()
        poller.wait(timeout=30)
    with session_scope() as s:
        jobs, count = registry.list_jobs(s)
        assert count == 3
        for job in jobs:
            assert job.status == "succeeded" and job.worker_id.startswith("cli-") and job.attempts <= 1
            units = registry.list_units(s, job.id)
            assert len(units) == 2 + 4 + 2 + 1  # embed x2, linear x2 models x2 lr, concat x2 lr, ensemble
            assert all(u.status == "done" and u.attempts == 1 and u.worker_id == job.worker_id for u in units)
            assert len(registry.list_finetune_runs(s, job.id)) == 6


def test_a_worker_that_lost_its_job_stops_at_the_next_unit(zooens_home):
    """Another worker took the job over (this one was silent too long): the first one stops
    between units, writes no status, and leaves the job to its new owner."""
    import threading

    from zooens.service import registry
    from zooens.service.db.session import session_scope
    from zooens.service.jobs import run_job

    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    job_id = _submit(lrs=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0), steps=(300,), top_k=1, claim_for="first")
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault("status", run_job(job_id, worker_id="first", progress=False))
    )
    thread.start()
    while not any(k.startswith("finetune:") and st == "done" for k, (st, _) in _units(job_id).items()):
        assert thread.is_alive()
        time.sleep(0.05)
    with session_scope() as s:  # what claim_job does to a stale job, done by hand
        registry.set_job_status(s, job_id, "running", worker_id="second")
        registry.requeue_running_units(s, job_id)
    thread.join(timeout=120)
    assert outcome["status"] == "lost"
    done = [k for k, (st, _) in _units(job_id).items() if st == "done" and k.startswith("finetune:")]
    assert 1 <= len(done) < 6
    with session_scope() as s:
        job = registry.get_job(s, job_id)
        assert job.status == "running" and job.worker_id == "second" and job.finished_at is None
        assert registry.get_job_ensemble(s, job_id) is None
        pending = [u for u in registry.list_units(s, job_id) if u.status != "done"]
        assert pending and all(u.status == "pending" for u in pending)


def test_run_job_refuses_a_job_it_has_not_claimed(zooens_home):
    from zooens.errors import JobError
    from zooens.service.jobs import run_job

    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    job_id = _submit()
    with pytest.raises(JobError, match="claim it first"):
        run_job(job_id, worker_id="nobody", progress=False)
