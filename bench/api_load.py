"""API load: many concurrent clients reading a finished job's status and ranking for a fixed time.

    .venv/bin/python bench/api_load.py [--clients 32] [--seconds 15]

Starts `zooens serve` on a free port with a temporary registry holding one finished job
(digits, two tiny random models), then hammers GET /jobs/{id} and /jobs/{id}/ranking with
httpx's async client. Writes bench/results/api_load.csv: requests/s, p50 and p99 latency, errors.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_rows

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ZOOENS = str(Path(sys.executable).parent / "zooens")


def prepare(home: Path) -> int:
    """A registry with one finished job; returns its id."""
    os.environ["ZOOENS_HOME"] = str(home)
    from zooens.zoo.testing import register_random_model

    register_random_model("tiny-effnet", "test_efficientnet", home / "w")
    register_random_model("tiny-resnet", "test_resnet", home / "w")
    out = subprocess.run([ZOOENS, "run", "--dataset", "digits", "--zoo", "user", "--resolution", "32", "--steps", "50",
                          "--lr", "0.1", "--json", "--quiet"], env={**os.environ}, check=True, capture_output=True, text=True)
    import json

    return json.loads(out.stdout)["job"]["id"]


async def client_loop(c: httpx.AsyncClient, paths: list[str], stop: float, lat: list[float], errors: list[int]) -> None:
    i = 0
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


async def load(url: str, job_id: int, clients: int, seconds: float) -> dict:
    paths = [f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/ranking"]
    lat: list[float] = []
    errors: list[int] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as c:
        start = time.perf_counter()
        stop = start + seconds
        await asyncio.gather(*(client_loop(c, paths, stop, lat, errors) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    ms = np.array(lat) * 1000
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(lat), "rps": round(len(lat) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
            "errors": len(errors)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=15)
    args = p.parse_args()
    home = Path(tempfile.mkdtemp(prefix="zooens-load-"))
    job_id = prepare(home)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([ZOOENS, "serve", "--port", str(port)], env={**os.environ, "ZOOENS_HOME": str(home)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/api/v1/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        row = asyncio.run(load(url, job_id, args.clients, args.seconds))
    finally:
        server.terminate()
        server.wait()
    write_rows("api_load", [row])


if __name__ == "__main__":
    main()
