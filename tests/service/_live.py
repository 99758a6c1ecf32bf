"""A real `zooens serve` process on a free local port, for end-to-end and load-bound tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ZOOENS = str(Path(sys.executable).parent / "zooens")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    home: Path, db_url: str, *, with_worker: bool = False, ready_path: str = "/api/v1/readyz"
) -> tuple[subprocess.Popen, str]:
    """`zooens serve` on `home` and `db_url`; returns once `ready_path` answers 200 (fails the test otherwise)."""
    port = free_port()
    env = {**os.environ, "ZOOENS_HOME": str(home), "ZOOENS_DATABASE_URL": db_url}
    args = [ZOOENS, "serve", "--port", str(port)] + (["--with-worker"] if with_worker else [])
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + ready_path, timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.3)
    proc.kill()
    pytest.fail("the server did not become ready")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)
