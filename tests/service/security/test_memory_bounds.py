"""Bombs against a real `zooens serve` process (SQLite and PostgreSQL): each is refused with a 4xx,
nothing is left on disk, and the server's peak resident memory grows by less than a stated bound.

The bound is measured on the server process itself (`VmHWM` in /proc: the high-water mark of
its resident set), after a warm-up upload has loaded every library the upload path needs, so
what the bombs add is what they cost.
"""

from __future__ import annotations

import concurrent.futures
import io
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.service._live import start_server, stop_server
from tests.service.security._hostile import deflate_bomb, forged_png, good_entries, npy_header, zip_of

PEAK_BOUND_MB = 150
"""What all the bombs together may add to the server's peak memory (a decoded 13000x13000 PNG
alone would be 507 MB; a 1 GiB array 1,024 MB)."""

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


@pytest.fixture
def server(db_url, zooens_home):
    proc, url = start_server(zooens_home, db_url, ready_path="/api/v1/healthz")
    yield url, proc.pid
    stop_server(proc)


def _npz_bomb(path: Path, gib: int = 1) -> Path:
    """An .npz whose `train_images` member is a deflated 1 GiB uint8 array of zeros (~1 MB on disk)."""
    n = gib * (1 << 30) // (64 * 64 * 3)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("train_images.npy", "w", force_zip64=True) as out:
            out.write(npy_header((n, 64, 64, 3)))
            chunk = bytes(1 << 20)
            left = n * 64 * 64 * 3
            while left > 0:
                out.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
        buf = io.BytesIO()
        np.save(buf, np.zeros(n, dtype=np.int64)[:10])
        zf.writestr("train_labels.npy", buf.getvalue())
    return path


@pytest.mark.slow
def test_bombs_are_refused_within_a_memory_bound(server, token, zooens_home, tmp_path):
    url, pid = server
    auth = {"Authorization": f"Bearer {token}"}

    def upload(name: str, data: bytes) -> httpx.Response:
        return httpx.post(url + "/api/v1/datasets", headers=auth, files={"file": (name, data)}, timeout=120)

    warm = upload("warm.zip", zip_of(good_entries()))
    assert warm.status_code == 201, warm.text
    stored = sorted(p.name for p in (zooens_home / "datasets").iterdir())
    base = peak_rss_mb(pid)

    zip_bomb = deflate_bomb(tmp_path / "bomb.zip", "a/0.png", 1 << 30).read_bytes()
    npz_bomb = _npz_bomb(tmp_path / "bomb.npz").read_bytes()
    assert len(zip_bomb) < 4 << 20 and len(npz_bomb) < 4 << 20  # small on the wire
    pixel_bomb = zip_of(
        [("a/0.png", forged_png(13000, 13000)), ("a/1.png", forged_png(13000, 13000)), *good_entries(("b",))]
    )
    answers = [upload("bomb.zip", zip_bomb), upload("bomb.npz", npz_bomb)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # four at once, as an attacker would
        answers += list(pool.map(lambda i: upload(f"pixels{i}.zip", pixel_bomb), range(4)))

    for answer in answers:
        assert answer.status_code in (413, 422), answer.text
        assert str(zooens_home) not in answer.text  # no server path in the reason
    grown = peak_rss_mb(pid) - base
    assert grown < PEAK_BOUND_MB, f"the server's peak memory grew by {grown:.0f} MB"
    # nothing left behind: the warm-up dataset only, no staging folder
    assert sorted(p.name for p in (zooens_home / "datasets").iterdir()) == stored
