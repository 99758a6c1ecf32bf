"""Soak: 30 small jobs in a row through one `zooens serve` and one `zooens worker` (real processes,
SQLite, the default registry). Neither process's memory grows (resident set, /proc VmRSS) by
`GROWTH_BOUND_MB` or more from the fifth job to the last; each job adds files only under its own
folder; deleting the jobs over the API leaves ZOOENS_HOME as it was before them.

A warm-up job runs and is deleted before the baseline: it loads what every job loads (libraries,
the model) and fills the caches that jobs share and that outlive them by design (embeddings,
decoded splits). The SQLite file is left out of the disk comparison: SQLite reuses the pages of
deleted rows instead of giving them back to the file system; its growth is printed with the rest.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.service._live import spawn, start_server, stderr_tail, stop_server
from tests.service._tiny import register_tiny_zoo

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc"),
]

ZOOENS = str(Path(sys.executable).parent / "zooens")
JOBS = 30
WARM = 5
"""Jobs after which memory is taken as the baseline (allocators and caches settle by then)."""
GROWTH_BOUND_MB = 50
REGISTRY = "registry.db"
JOB = {
    "zoo": "user",
    "top_k": 1,
    "strategies": ["linear"],
    "learning_rates": [0.1],
    "steps": [10],
    "resolution": 32,
    "ensemble_size": 1,
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def files(home: Path) -> dict[str, int]:
    """Every file under `home` (but the SQLite registry's) and its size."""
    out = {}
    for path in home.rglob("*"):
        rel = path.relative_to(home).as_posix()
        if path.is_file() and not rel.startswith(REGISTRY):
            out[rel] = path.stat().st_size
    return out


def _run(c: httpx.Client, auth: dict, dataset_id: int) -> int:
    answer = c.post("/jobs", headers=auth, json={"dataset_id": dataset_id, **JOB})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answer = c.get(f"/jobs/{job_id}")  # at once: POST /jobs commits before it answers (`api.deps.SessionDep`)
        assert answer.status_code == 200, f"GET /jobs/{job_id}: {answer.status_code} {answer.text}"
        state = answer.json()
        if state["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert state["status"] == "succeeded", state
    for read in ("ranking", "runs", "ensemble"):  # the reads a client makes of a finished job
        assert c.get(f"/jobs/{job_id}/{read}").status_code == 200
    return job_id


def test_thirty_jobs_leave_memory_flat_and_the_disk_as_it_was(zooens_home, monkeypatch):
    from zooens.selection.datasets import load_dataset
    from zooens.service import registry
    from zooens.service.db.session import dispose_engines, session_scope, upgrade_to_head
    from zooens.service.jobs import register_dataset
    from zooens.settings import get_settings

    url = f"sqlite:///{zooens_home / REGISTRY}"
    monkeypatch.setenv("ZOOENS_DATABASE_URL", url)
    get_settings.cache_clear()
    upgrade_to_head(url)
    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    with session_scope() as s:
        dataset_id = register_dataset(s, "digits", load_dataset("digits")).id
        token, _ = registry.create_token(s, "soak")
    dispose_engines()
    auth = {"Authorization": f"Bearer {token}"}

    server, base_url = start_server(zooens_home, url)
    env = {**os.environ, "ZOOENS_HOME": str(zooens_home), "ZOOENS_DATABASE_URL": url}
    worker = spawn([ZOOENS, "worker", "--id", "soak", "--poll", "0.1"], env)  # stderr to a file: never a full pipe
    memory: list[tuple[float, float]] = []
    jobs: list[int] = []
    try:
        with httpx.Client(base_url=base_url + "/api/v1", timeout=60) as c:
            warm = _run(c, auth, dataset_id)
            assert c.delete(f"/jobs/{warm}", headers=auth).status_code == 204
            before = files(zooens_home)
            db_before = (zooens_home / REGISTRY).stat().st_size
            started = time.monotonic()
            for _ in range(JOBS):
                jobs.append(_run(c, auth, dataset_id))
                memory.append((rss_mb(server.pid), rss_mb(worker.pid)))
                assert worker.poll() is None, f"the worker exited: {stderr_tail(worker, 3000)}"
                assert server.poll() is None, f"the server exited: {stderr_tail(server, 3000)}"
            seconds = time.monotonic() - started
            after = files(zooens_home)
            db_after = (zooens_home / REGISTRY).stat().st_size
            for job_id in jobs:
                assert c.delete(f"/jobs/{job_id}", headers=auth).status_code == 204
            cleaned = files(zooens_home)
            db_cleaned = (zooens_home / REGISTRY).stat().st_size
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        stop_server(server)

    stored = {k: v for k, v in after.items() if k not in before or before[k] != v}
    job_folders = tuple(f"artifacts/jobs/{job_id}/" for job_id in jobs)
    print(
        f"\nsoak: {JOBS} jobs in {seconds:.0f} s; RSS MB (server, worker) after job 1 {memory[0]}, "
        f"job {WARM} {memory[WARM - 1]}, job {JOBS} {memory[-1]}, peak {max(m[0] for m in memory):.1f} / "
        f"{max(m[1] for m in memory):.1f}; jobs stored {len(stored)} files, {sum(stored.values()) / 1e6:.2f} MB; "
        f"registry.db {db_before / 1e6:.2f} MB -> {db_after / 1e6:.2f} MB after the jobs -> "
        f"{db_cleaned / 1e6:.2f} MB after deleting them"
    )
    strays = sorted(k for k in stored if not k.startswith(job_folders))
    assert strays == [], "jobs wrote outside their own folders"
    assert all(any(k.startswith(folder) for k in stored) for folder in job_folders)
    assert cleaned == before, "deleting the jobs did not return ZOOENS_HOME to where it was"
    base_server, base_worker = memory[WARM - 1]
    growth = max(m[0] for m in memory[WARM:]) - base_server, max(m[1] for m in memory[WARM:]) - base_worker
    assert growth[0] < GROWTH_BOUND_MB, f"the server grew by {growth[0]:.1f} MB after job {WARM}: {memory}"
    assert growth[1] < GROWTH_BOUND_MB, f"the worker grew by {growth[1]:.1f} MB after job {WARM}: {memory}"
