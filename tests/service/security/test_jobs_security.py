"""Issue 10, the jobs' part: every job can be stopped, workers survive faults, parameters are bounded.

Each test is one numbered case of the issue, on SQLite and PostgreSQL (`db_url`), with tiny
real timm models and real SQL; nothing is mocked. Timing assertions are one-sided and
generous: a job must stop long before it could possibly have finished.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.engine import make_url

from tests.service._tiny import register_tiny_zoo

LONG_STEPS = 100_000  # the most a run may ask for; minutes of work even on a tiny model


def _image_folder(root: Path, per_class: int = 6, classes: tuple[str, ...] = ("a", "b")) -> Path:
    rng = np.random.default_rng(0)
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            arr[..., 0] = 100 * c
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    return root


def _settings(monkeypatch, **values) -> None:
    from zooens.settings import get_settings

    for name, value in values.items():
        monkeypatch.setenv(f"ZOOENS_{name.upper()}", str(value))
    get_settings.cache_clear()


def _register(data: Path) -> int:
    from zooens.selection.datasets import load_dataset
    from zooens.service.db.session import session_scope
    from zooens.service.jobs import register_dataset

    with session_scope() as s:
        return register_dataset(s, str(data), load_dataset(data)).id


def _submit(ds_id: int, *, claim_for: str | None = None, **params) -> int:
    from zooens.pipeline import JobParams
    from zooens.service.db.session import session_scope
    from zooens.service.jobs import submit_job

    fields = {
        "k": 3,
        "resolution": 32,
        "top_k": 1,
        "strategies": ["linear"],
        "learning_rates": [0.1],
        "steps": [5],
        "taps": "none",  # the unit counts below are of the models alone
        **params,
    }
    with session_scope() as s:
        return submit_job(s, ds_id, "user", JobParams(**fields), claim_for=claim_for).id


def _job(job_id: int):
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    with session_scope() as s:
        job = registry.get_job(s, job_id)
        s.expunge(job)
        return job


def _units(job_id: int):
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    with session_scope() as s:
        units = registry.list_units(s, job_id)
        for u in units:
            s.expunge(u)
        return units


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def tiny(zooens_home, db_url, tmp_path) -> int:
    """One tiny model in the user zoo and a 2-class dataset of 12 images; the dataset's id."""
    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    return _register(_image_folder(tmp_path / "data"))


@pytest.fixture
def client(db_url):
    from zooens.service.app import create_app

    with TestClient(create_app()) as c:
        yield c


@pytest.fixture
def auth(db_url) -> dict[str, str]:
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    with session_scope() as s:
        plain, _ = registry.create_token(s, "tester")
    return {"Authorization": f"Bearer {plain}"}


# case 10 and 4: parameters are bounded and checked at submission


@pytest.mark.parametrize(
    "body, message",
    [
        ('"learning_rates": [NaN]', "lr must be a positive number"),
        ('"learning_rates": [Infinity]', "lr must be a positive number"),
        ('"learning_rates": [-Infinity]', "lr must be a positive number"),
        ('"strategy_options": {"lora": {"alpha": NaN}}', "finite"),
        ('"steps": [1000000000]', "at most 100,000"),
        ('"top_k": 101', "top_k"),
        ('"ensemble_size": 1000', "ensemble_size"),
        ('"k": 12', "k < 10"),
    ],
)
def test_unbounded_or_non_finite_parameters_are_refused_at_submission(client, auth, tiny, body, message):
    """JSON's NaN/Infinity literals included (PostgreSQL's JSON cannot store them: a 500 before)."""
    raw = f'{{"dataset_id": {tiny:d}, "zoo": "user", "k": 3, {body}}}'
    r = client.post("/api/v1/jobs", content=raw, headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert message in r.text
    assert client.get("/api/v1/jobs").json()["count"] == 0


def test_k_is_checked_against_the_training_set_the_job_will_have(tiny, caplog):
    """12 images, no val split: 10 train (2 drawn for val); leave-one-out needs k < 10."""
    from zooens.errors import ConfigError

    with pytest.raises(ConfigError, match=r"k=10 .* trains on 10 examples.*k < 10"):
        _submit(tiny, k=10)
    assert _job(_submit(tiny, k=9)).status == "queued"


def test_the_knn_library_refuses_k_beyond_its_examples():
    from zooens.errors import ConfigError
    from zooens.selection.knn import knn_loo_accuracy, knn_predict

    X = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    y = np.array([0, 0, 0, 1, 1, 1])
    with pytest.raises(ConfigError, match="k must be smaller than 6"):
        knn_loo_accuracy(X, y, k=6)
    assert 0.0 <= knn_loo_accuracy(X, y, k=5) <= 1.0
    with pytest.raises(ConfigError, match="only 6 training examples"):
        knn_predict(X, y, X[:2], k=7)


def test_a_zoo_too_large_or_without_weights_is_refused_at_submission(tiny, zooens_home, monkeypatch):
    from zooens.errors import ConfigError, MissingWeightsError
    from zooens.pipeline import checks as checks_module
    from zooens.zoo.testing import register_random_model

    register_tiny_zoo(zooens_home / "weights", ["tiny-resnet"])
    monkeypatch.setattr(checks_module, "MAX_ZOO_MODELS", 1)
    with pytest.raises(ConfigError, match=r"The zoo 'user' matched 2 models; a job ranks at most 1\. Narrow it"):
        _submit(tiny)
    too_many = r"matched 2 models, 8 entries with 6 layer taps; a job ranks at most 1\. .* \(--taps none\)\."
    with pytest.raises(ConfigError, match=too_many):
        _submit(tiny, taps="auto")  # the default
    monkeypatch.undo()
    register_random_model("tiny-gone", "test_resnet", zooens_home / "gone")
    (zooens_home / "gone" / "tiny-gone.safetensors").unlink()  # its weights went away after registration
    with pytest.raises(MissingWeightsError, match=r"1 of them has no weights on this machine \(tiny-gone\)"):
        _submit(tiny)
    assert _job_count() == 0


def _job_count() -> int:
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    with session_scope() as s:
        return registry.list_jobs(s)[1]


# case 4: a cancel stops a running unit within seconds; a unit's time limit stops it too


def _start(job_id: int, worker_id: str) -> tuple[threading.Thread, dict]:
    from zooens.service.jobs import run_job

    outcome: dict = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault("status", run_job(job_id, worker_id=worker_id, progress=False))
    )
    thread.start()
    return thread, outcome


def _finetune_running(job_id: int) -> bool:
    return any(u.kind == "finetune" and u.status == "running" for u in _units(job_id))


def test_a_cancel_stops_a_long_unit_within_seconds(tiny, monkeypatch):
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    _settings(monkeypatch, heartbeat_seconds=0.2)
    job_id = _submit(tiny, claim_for="runner", strategies=["full"], steps=[LONG_STEPS])
    thread, outcome = _start(job_id, "runner")
    try:
        _wait(lambda: _finetune_running(job_id), 120, "the fine-tune unit to start")
        time.sleep(0.5)  # well inside the unit's training loop
        with session_scope() as s:  # what POST /jobs/{id}/cancel does
            registry.request_cancel(s, job_id)
        asked = time.monotonic()
        thread.join(timeout=60)
        stopped_after = time.monotonic() - asked
    finally:
        thread.join(timeout=600)
    assert outcome["status"] == "cancelled"
    assert stopped_after < 60  # 100,000 steps take many minutes
    job = _job(job_id)
    assert job.status == "cancelled" and job.finished_at is not None
    assert all(u.status != "running" for u in _units(job_id))


def test_a_unit_past_its_time_limit_fails_with_the_reason(tiny, monkeypatch):
    _settings(monkeypatch, unit_time_limit_seconds=1.5)
    job_id = _submit(tiny, claim_for="runner", strategies=["full"], steps=[LONG_STEPS])
    thread, outcome = _start(job_id, "runner")
    thread.join(timeout=300)
    assert not thread.is_alive() and outcome["status"] == "failed"
    job = _job(job_id)
    assert "time limit of 1.5 s" in job.error and "ZOOENS_UNIT_TIME_LIMIT_SECONDS" in job.error
    failed = [u for u in _units(job_id) if u.status == "failed"]
    assert [u.kind for u in failed] == ["finetune"] and "time limit" in failed[0].error


# case 8: one runner per job


def test_a_polling_worker_never_runs_the_job_a_cli_run_claimed(tiny):
    from zooens.service.jobs import run_job, work

    stop = threading.Event()
    poller = threading.Thread(target=work, kwargs={"worker_id": "poller", "poll_seconds": 0.02, "stop": stop})
    poller.start()
    try:
        ids = []
        for seed in (0, 1):
            job_id = _submit(tiny, claim_for="cli-test", seed=seed, learning_rates=[0.1, 0.5])
            assert run_job(job_id, worker_id="cli-test", progress=False) == "succeeded"
            ids.append(job_id)
        assert poller.is_alive()
    finally:
        stop.set()
        poller.join(timeout=60)
    for job_id in ids:
        job = _job(job_id)
        assert (job.status, job.worker_id, job.attempts) == ("succeeded", "cli-test", 0)
        units = _units(job_id)
        assert len(units) == 1 + 2 + 1
        assert all(u.status == "done" and u.attempts == 1 and u.worker_id == "cli-test" for u in units)


# case 5: workers survive a database outage; a unit that keeps failing fails its job


def _broken_url(url: str, tmp_path: Path) -> str:
    """A URL that cannot be opened: a SQLite file in a missing folder, a missing PostgreSQL database."""
    if url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'no-such-folder' / 'registry.db'}"
    return make_url(url).set(database="zooens_no_such_database").render_as_string(hide_password=False)


def test_a_worker_survives_a_database_outage_and_runs_the_next_job(tiny, db_url, monkeypatch, tmp_path, caplog):
    from zooens.service.jobs import work

    caplog.set_level(logging.WARNING, logger="zooens.service.jobs.worker")
    stop = threading.Event()
    worker = threading.Thread(target=work, kwargs={"worker_id": "survivor", "poll_seconds": 0.02, "stop": stop})
    worker.start()
    try:
        first = _submit(tiny)
        _wait(lambda: _job(first).status == "succeeded", 120, "the first job")
        _settings(monkeypatch, database_url=_broken_url(db_url, tmp_path))  # the database goes away
        _wait(
            lambda: sum("error in its loop" in r.getMessage() for r in caplog.records) >= 2, 60, "the worker to retry"
        )
        assert worker.is_alive()
        _settings(monkeypatch, database_url=db_url)  # and comes back
        second = _submit(tiny, seed=1)
        _wait(lambda: _job(second).status == "succeeded", 120, "the job queued after the outage")
        assert worker.is_alive() and _job(second).worker_id == "survivor"
    finally:
        stop.set()
        worker.join(timeout=60)
    retries = [r for r in caplog.records if "error in its loop" in r.getMessage()]
    assert all(r.levelno == logging.WARNING for r in retries)


def test_a_unit_whose_workers_keep_vanishing_fails_its_job(tiny, monkeypatch):
    from zooens.service import registry
    from zooens.service.db.session import session_scope
    from zooens.service.jobs import run_job

    _settings(monkeypatch, unit_max_attempts=2)
    job_id = _submit(tiny, claim_for="w1")
    with session_scope() as s:
        registry.ensure_units(s, job_id, [("embed:tiny-effnet", "embed")])
    for worker_id in ("w1", "w2"):  # each claims the unit, then dies; the next takes the job over
        with session_scope() as s:
            registry.set_job_status(s, job_id, "running", worker_id=worker_id)
            assert registry.claim_unit(s, job_id, worker_id).key == "embed:tiny-effnet"
        with session_scope() as s:
            registry.requeue_running_units(s, job_id)
    with session_scope() as s:
        registry.set_job_status(s, job_id, "running", worker_id="w3")
    assert run_job(job_id, worker_id="w3", progress=False) == "failed"
    job = _job(job_id)
    assert "started 2 times without finishing" in job.error and "ZOOENS_UNIT_MAX_ATTEMPTS=2" in job.error
    [unit] = _units(job_id)
    assert (unit.status, unit.attempts) == ("failed", 3) and unit.error == job.error


# cases 5 and 12: readiness says ok or not, never how the database is reached


def _no_connection_details(text: str, url: str) -> None:
    parsed = make_url(url)
    for secret in (parsed.host, parsed.database, str(parsed.port or ""), parsed.drivername, "sqlite", "psycopg"):
        if secret:
            assert secret not in text, f"{secret!r} leaked in {text}"


def test_readyz_reports_workers_and_queue_age_without_connection_details(client, tiny, db_url):
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    ready = client.get("/api/v1/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert (body["status"], body["database"], body["workers_alive"], body["worker_thread"]) == ("ok", "ok", 0, None)
    assert body["oldest_queued_seconds"] is None
    _no_connection_details(ready.text, db_url)
    _submit(tiny)
    with session_scope() as s:
        registry.beat_worker(s, "w-1", host="somehost", pid=1)
    body = client.get("/api/v1/readyz").json()
    assert body["workers_alive"] == 1 and body["oldest_queued_seconds"] >= 0
    assert "somehost" not in str(body)


def test_readyz_is_503_without_details_when_the_database_is_unreachable(client, db_url, monkeypatch, tmp_path):
    _settings(monkeypatch, database_url=_broken_url(db_url, tmp_path))
    r = client.get("/api/v1/readyz")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"
    assert r.json()["database"] in ("unreachable", "not at head")
    _no_connection_details(r.text, _broken_url(db_url, tmp_path))
    assert "no-such-folder" not in r.text and "zooens_no_such_database" not in r.text


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_readyz_is_503_when_the_in_process_worker_thread_is_dead(client, db_url):
    from zooens.service.jobs.worker import background_worker_alive, start_background_worker

    thread, stop = start_background_worker(no_such_argument=True)  # dies at once with a TypeError
    thread.join(timeout=10)
    try:
        assert background_worker_alive() is False
        r = client.get("/api/v1/readyz")
        assert r.status_code == 503 and r.json()["worker_thread"] is False
    finally:
        stop.set()
    assert background_worker_alive() is None
    assert client.get("/api/v1/readyz").status_code == 200


def test_worker_ids_name_neither_host_nor_process():
    import os
    import socket

    from zooens.service.jobs import default_worker_id

    ids = {default_worker_id(), default_worker_id("cli")}
    assert len(ids) == 2
    for worker_id in ids:
        assert socket.gethostname() not in worker_id and str(os.getpid()) not in worker_id
