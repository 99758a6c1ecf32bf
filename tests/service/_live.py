"""A real `zooens serve` process on a free local port, for end-to-end and load-bound tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ZOOENS = str(Path(sys.executable).parent / "zooens")
STDERR_TAIL = 5000
"""Characters of a process's stderr that a failure message shows (its end)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`args` as a child process, its stdout discarded and its stderr written to a temporary file.

    Not a pipe: no test reads a pipe while the process runs, and a process that writes more than the pipe
    holds (64 KiB on Linux) blocks on its next write, so the test would hang or time out. `proc.stderr` reads
    the file (opened apart from the child's, so reading never moves where the child writes); the file has no
    name left once both are open and goes when they close. `stderr_tail(proc)` gives its end."""
    with tempfile.NamedTemporaryFile(prefix="zooens-test-stderr-", suffix=".log", delete=False) as created:
        path = created.name
    try:
        with open(path, "ab") as sink:  # the child gets its own copy of the descriptor
            proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=sink)
        proc.stderr = open(path, "rb")  # what the tests read
    finally:
        os.unlink(path)
    return proc


def stderr_tail(proc: subprocess.Popen, limit: int = STDERR_TAIL) -> str:
    """The last `limit` characters the process wrote to stderr so far (a process from `spawn`)."""
    proc.stderr.seek(0)
    text = proc.stderr.read().decode(errors="replace")
    return text[-limit:]


def start_server(
    home: Path, db_url: str, *, with_worker: bool = False, ready_path: str = "/api/v1/readyz"
) -> tuple[subprocess.Popen, str]:
    """`zooens serve` on `home` and `db_url`; returns once `ready_path` answers 200 (fails the test otherwise).

    The process's stderr goes to a file (`spawn`): `proc.stderr.read()` and `stderr_tail(proc)` read it."""
    port = free_port()
    env = {**os.environ, "ZOOENS_HOME": str(home), "ZOOENS_DATABASE_URL": db_url}
    args = [ZOOENS, "serve", "--port", str(port)] + (["--with-worker"] if with_worker else [])
    proc = spawn(args, env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + ready_path, timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, f"`zooens serve` exited with {proc.returncode}; its stderr:\n{stderr_tail(proc)}"
        time.sleep(0.3)
    proc.kill()
    proc.wait()
    pytest.fail(f"the server did not answer 200 at {ready_path} within 120 s; its stderr:\n{stderr_tail(proc)}")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM (a graceful shutdown), then SIGKILL if it is still running after 30 s (and the test fails)."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
