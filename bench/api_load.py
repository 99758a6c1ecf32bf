"""API load on SQLite and PostgreSQL: concurrent readers against `zooens serve --with-worker`,
first on a quiet server, then while its worker runs a job.

    .venv/bin/python bench/api_load.py [--clients 16] [--seconds 10] [--database sqlite,postgresql]

For each database: a temporary registry holding one finished job (digits, two tiny random
models), `zooens serve --with-worker` on a free port, then `--clients` async clients read the
job, its ranking, the job and dataset lists, the zoo catalogue and a dashboard page for
`--seconds` (phase `quiet`); then a long job is queued, the worker starts it, and the same
load runs again (phase `busy`); the long job is cancelled at the end. Client and server
share the machine's cores. Writes bench/results/api_load.csv: requests/s, p50 and p99 latency,
errors per phase, and the busy/quiet p99 ratio (how much a running job slows reads).
PostgreSQL is skipped, with a message, when the server at ZOOENS_TEST_POSTGRES (default the local
`test` database's server) does not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from _results import write_rows
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ZOOENS = str(Path(sys.executable).parent / "zooens")
POSTGRES_ADMIN_URL = os.environ.get("ZOOENS_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def zooens(env: dict[str, str], *args: str) -> str:
    return subprocess.run([ZOOENS, *args], env=env, check=True, capture_output=True, text=True).stdout


def prepare(env: dict[str, str], home: Path) -> tuple[int, int]:
    """A registry with one finished job; returns (job id, dataset id)."""
    zooens(env, "db", "upgrade")
    for name, arch in (("tiny-effnet", "test_efficientnet"), ("tiny-resnet", "test_resnet")):
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from zooens.zoo.testing import register_random_model; "
                "register_random_model(sys.argv[1], sys.argv[2], sys.argv[3])",
                name,
                arch,
                str(home / "w"),
            ],
            env=env,
            check=True,
        )
    out = zooens(
        env,
        "run",
        "--dataset",
        "digits",
        "--zoo",
        "user",
        "--resolution",
        "32",
        "--steps",
        "50",
        "--lr",
        "0.1",
        "--json",
        "--quiet",
    )
    job = json.loads(out)["job"]
    return job["id"], job["dataset_id"]


async def client_loop(
    c: httpx.AsyncClient, paths: list[str], stop: float, lat: list[float], errors: list[int], offset: int
) -> None:
    i = offset
    while time.perf_counter() < stop:
        t = time.perf_counter()
        try:
            r = await c.get(paths[i % len(paths)])
            if r.status_code != 200:
                errors.append(r.status_code)
        except httpx.HTTPError:
            errors.append(-1)
        lat.append(time.perf_counter() - t)
        i += 1


async def load(url: str, paths: list[str], clients: int, seconds: float) -> dict:
    lat: list[float] = []
    errors: list[int] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as c:
        start = time.perf_counter()
        stop = start + seconds
        await asyncio.gather(*(client_loop(c, paths, stop, lat, errors, k) for k in range(clients)))
        elapsed = time.perf_counter() - start
    ms = np.array(lat) * 1000
    return {
        "requests": len(lat),
        "rps": round(len(lat) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "errors": len(errors),
    }


def postgres_database() -> tuple[str, callable] | None:
    """A throw-away PostgreSQL database and a function that drops it; None when unreachable."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"zooens_bench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no server: skip this database
        print(f"PostgreSQL skipped: {type(exc).__name__}", file=sys.stderr)
        return None

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False), drop


def wait_ready(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/v1/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit("the server exited before it was ready")
        time.sleep(0.3)
    raise SystemExit("the server did not become ready")


def bench_database(database: str, clients: int, seconds: float) -> list[dict]:
    home = Path(tempfile.mkdtemp(prefix="zooens-load-"))
    env = {**os.environ, "ZOOENS_HOME": str(home), "TQDM_DISABLE": "1"}
    drop = None
    if database == "postgresql":
        made = postgres_database()
        if made is None:
            return []
        env["ZOOENS_DATABASE_URL"], drop = made
    else:
        env.pop("ZOOENS_DATABASE_URL", None)
    try:
        job_id, dataset_id = prepare(env, home)
        token = zooens(env, "tokens", "create", "bench").strip().split()[-1]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            [ZOOENS, "serve", "--with-worker", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        paths = [
            f"/api/v1/jobs/{job_id}",
            f"/api/v1/jobs/{job_id}/ranking",
            "/api/v1/jobs?limit=20",
            "/api/v1/datasets",
            "/api/v1/zoo?limit=50",
            f"/dashboard/jobs/{job_id}",
        ]
        rows = []
        try:
            wait_ready(url, server)
            for p in paths:  # warm every route once
                httpx.get(url + p, timeout=120)
            quiet = asyncio.run(load(url, paths, clients, seconds))
            rows.append({"database": database, "phase": "quiet", "clients": clients, **quiet})
            auth = {"Authorization": f"Bearer {token}"}
            long_job = httpx.post(
                url + "/api/v1/jobs",
                headers=auth,
                timeout=60,
                json={
                    "dataset_id": dataset_id,
                    "zoo": "user",
                    "strategies": ["linear"],
                    "steps": [50_000],
                    "learning_rates": [0.1],
                    "resolution": 32,
                },
            ).json()
            deadline = time.monotonic() + 60
            while httpx.get(f"{url}/api/v1/jobs/{long_job['id']}").json()["status"] == "queued":
                if time.monotonic() > deadline:
                    raise SystemExit("the worker did not start the long job")
                time.sleep(0.2)
            busy = asyncio.run(load(url, paths, clients, seconds))
            status = httpx.get(f"{url}/api/v1/jobs/{long_job['id']}").json()["status"]
            rows.append(
                {
                    "database": database,
                    "phase": "busy" if status == "running" else f"busy ({status})",
                    "clients": clients,
                    **busy,
                }
            )
            httpx.post(f"{url}/api/v1/jobs/{long_job['id']}/cancel", headers=auth, timeout=60)
            for row in rows:
                row["p99_vs_quiet"] = round(row["p99_ms"] / quiet["p99_ms"], 2)
        finally:
            server.terminate()
            server.wait(timeout=60)
        return rows
    finally:
        if drop is not None:
            drop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--database", default="sqlite,postgresql")
    args = p.parse_args()
    rows = []
    for database in args.database.split(","):
        rows += bench_database(database.strip(), args.clients, args.seconds)
    write_rows("api_load", rows)


if __name__ == "__main__":
    main()
