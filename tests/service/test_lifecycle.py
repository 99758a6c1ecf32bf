"""A job's and a dataset's later lives through the registry and the CLI: resume, retry, delete (SQLite and
PostgreSQL)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from tests.service._tiny import register_tiny_zoo
from zooens.errors import ConflictError, NotFoundError
from zooens.pipeline import JobParams
from zooens.selection.embed import clear_built_models
from zooens.service import lifecycle, registry
from zooens.service.cli import app
from zooens.service.db.session import session_scope
from zooens.service.jobs import register_dataset, run_job, submit_job
from zooens.settings import get_settings

TINY_PARAMS = dict(
    resolution=32,
    k=3,
    top_k=1,
    strategies=["linear"],
    steps=[20],
    learning_rates=[0.1],
    n_train=150,
    n_val=50,
    max_test=50,
)


def _cli(args: list[str], code: int = 0):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, result.output
    return result


def _toy_job(s, status: str = "queued") -> int:
    ds = registry.create_dataset(
        s, name="toy", source="/toy", fingerprint="ab" * 32, classes=["a", "b"], counts={"train": {"a": 20, "b": 20}}
    )
    job = registry.create_job(s, dataset_id=ds.id, zoo="user", zoo_models=["m"], params=JobParams().model_dump())
    if status != "queued":
        registry.set_job_status(s, job.id, status, error="boom" if status == "failed" else None)
    return job.id


def test_reopen_keeps_done_units_and_puts_the_rest_back(db_url):
    with session_scope() as s:
        job_id = _toy_job(s)
        registry.set_job_status(s, job_id, "running", worker_id="w1")
        registry.ensure_units(
            s, job_id, [("embed:a", "embed"), ("embed:b", "embed"), ("embed:c", "embed"), ("embed:d", "embed")]
        )
    with session_scope() as s:
        done = registry.claim_unit(s, job_id, "w1")
        registry.finish_unit(s, done.id, {"x": 1}, worker_id="w1")
        failed = registry.claim_unit(s, job_id, "w1")
        registry.fail_unit(s, failed.id, "weights gone", worker_id="w1")
        registry.claim_unit(s, job_id, "w1")  # left running, as by a crash
        registry.request_cancel(s, job_id)
        registry.set_job_status(s, job_id, "cancelled", error="interrupted")
    with session_scope() as s:
        job = registry.reopen_job(s, job_id)
        assert (job.status, job.cancel_requested, job.error, job.finished_at, job.worker_id) == (
            "queued",
            False,
            None,
            None,
            None,
        )
        units = {u.key: u for u in registry.list_units(s, job_id)}
    assert units["embed:a"].status == "done" and units["embed:a"].result == {"x": 1}
    for key in ("embed:b", "embed:c", "embed:d"):
        assert (units[key].status, units[key].error, units[key].worker_id) == ("pending", None, None)
    assert units["embed:b"].attempts == 0
    with session_scope() as s, pytest.raises(ConflictError, match="only a failed or cancelled job"):
        registry.reopen_job(s, job_id)  # queued now


@pytest.mark.parametrize(
    "status, message", [("queued", "is queued; cancel it first"), ("running", "is running; cancel it first")]
)
def test_unfinished_jobs_cannot_be_deleted_retried_or_resumed(db_url, status, message):
    with session_scope() as s:
        job_id = _toy_job(s, status)
    for args in (["jobs", "delete", str(job_id)], ["jobs", "retry", str(job_id), "--queue"]):
        result = _cli(args, code=2)
        assert message in result.stderr and result.stderr.count("\n") == 1
    assert (
        f"Job {job_id} is {status}; only a failed or cancelled"
        in _cli(["jobs", "resume", str(job_id), "--queue"], code=2).stderr
    )
    with session_scope() as s:
        assert registry.get_job(s, job_id).status == status and registry.list_jobs(s)[1] == 1


def test_unknown_ids_are_not_found(db_url):
    for args in (
        ["jobs", "delete", "41"],
        ["jobs", "resume", "41"],
        ["jobs", "retry", "41"],
        ["datasets", "delete", "41"],
    ):
        assert "No " in _cli(args, code=2).stderr
    with session_scope() as s, pytest.raises(NotFoundError):
        lifecycle.delete_dataset(s, 41, get_settings())


def test_resume_retry_and_delete_a_real_job(zooens_home, db_url):
    """A job whose third model lost its weights fails after two embeddings; with the file back, `jobs resume`
    runs only what is left, here. `retry` makes new jobs; `delete` removes rows and folders."""
    from zooens.selection.datasets import load_dataset

    register_tiny_zoo(zooens_home / "weights")
    weights = zooens_home / "weights" / "tiny-resnet.safetensors"
    ds = load_dataset("digits")
    with session_scope() as s:
        dataset_id = register_dataset(s, "digits", ds).id
        params = JobParams(**TINY_PARAMS, taps="none")  # one embed unit per model: the counts below
        job_id = submit_job(s, dataset_id, "user", params, claim_for="w-test").id
    shutil.move(weights, weights.with_suffix(".away"))
    clear_built_models()  # a worker that has not built tiny-resnet already (earlier tests in this process did)
    assert run_job(job_id, worker_id="w-test", progress=False) == "failed"
    with session_scope() as s:
        before = {u.key: (u.status, u.finished_at) for u in registry.list_units(s, job_id)}
    assert [v[0] for v in before.values()] == ["done", "done", "failed"]
    shutil.move(weights.with_suffix(".away"), weights)

    report = json.loads(_cli(["jobs", "resume", str(job_id), "--json", "--quiet"]).stdout)
    assert report["job"]["id"] == job_id and report["job"]["status"] == "succeeded" and report["ensemble"]
    with session_scope() as s:
        after = {u.key: (u.status, u.finished_at) for u in registry.list_units(s, job_id)}
        assert registry.get_job(s, job_id).error is None
    assert all(after[k] == before[k] for k in ("embed:tiny-convnext", "embed:tiny-effnet"))  # kept, not redone
    assert all(status == "done" for status, _ in after.values())
    assert "nothing to resume" in _cli(["jobs", "resume", str(job_id)], code=2).stderr

    queued = _cli(["jobs", "retry", str(job_id), "--queue"]).stdout
    retry_id = int(queued.split()[1])
    assert f"job {retry_id} queued (a retry of job {job_id})" in queued
    with session_scope() as s:
        old, new = registry.get_job(s, job_id), registry.get_job(s, retry_id)
        assert (new.status, new.dataset_id, new.zoo, new.zoo_models, new.params) == (
            "queued",
            old.dataset_id,
            old.zoo,
            old.zoo_models,
            old.params,
        )
    assert (
        "unfinished job(s) " + str(retry_id) + "; cancel them first"
        in _cli(["datasets", "delete", str(dataset_id)], code=2).stderr
    )
    _cli(["jobs", "cancel", str(retry_id)])
    rerun = json.loads(_cli(["jobs", "retry", str(job_id), "--json", "--quiet"]).stdout)
    assert rerun["job"]["status"] == "succeeded" and rerun["job"]["id"] not in (job_id, retry_id)

    job_dir = lifecycle.job_dir(get_settings(), job_id)
    assert (job_dir / "runs").is_dir()
    assert _cli(["jobs", "delete", str(job_id)]).stdout.strip() == f"deleted job {job_id}"
    assert not job_dir.exists()
    with session_scope() as s:
        assert registry.list_units(s, job_id) == [] and registry.list_finetune_runs(s, job_id) == []
        assert registry.get_job_ensemble(s, job_id) is None
        assert registry.get_job(s, rerun["job"]["id"]).status == "succeeded"  # history of the others kept

    refused = _cli(["datasets", "delete", str(dataset_id)], code=2).stderr
    assert "--with-jobs" in refused and str(rerun["job"]["id"]) in refused
    rerun_dir = lifecycle.job_dir(get_settings(), rerun["job"]["id"])
    assert rerun_dir.is_dir()
    out = _cli(["datasets", "delete", str(dataset_id), "--with-jobs"]).stdout
    assert out.startswith(f"deleted dataset {dataset_id} and its job(s)")
    assert not rerun_dir.exists()
    with session_scope() as s:
        assert registry.list_jobs(s)[1] == 0 and registry.list_datasets(s)[1] == 0
