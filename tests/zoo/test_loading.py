"""A weight file's sha256 is computed once per (path, size, mtime), also across processes."""

from __future__ import annotations

import hashlib
import json
import os

from zooens.zoo import _loading


def _entry(path) -> str:
    return _loading._entry_name(_loading._stat_key(path))


def test_the_checksum_is_persisted_and_read_back_without_hashing(zooens_home):
    weights = zooens_home / "w.bin"
    weights.write_bytes(b"weights" * 1000)
    real = hashlib.sha256(weights.read_bytes()).hexdigest()
    _loading.clear_cache()
    assert _loading.file_sha256(weights) == real
    stored = json.loads(_loading.sha_cache_path().read_text())
    assert stored[_entry(weights)] == real
    # a new process (an empty in-memory cache) trusts the file: a planted value proves nothing is hashed
    stored[_entry(weights)] = "f" * 64
    _loading.sha_cache_path().write_text(json.dumps(stored))
    _loading.clear_cache()
    assert _loading.file_sha256(weights) == "f" * 64
    # a changed mtime is another key: hashed again, and remembered
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert _loading.file_sha256(weights) == real
    assert json.loads(_loading.sha_cache_path().read_text())[_entry(weights)] == real
    _loading.clear_cache()


def test_a_corrupt_checksum_file_is_recomputed_and_rewritten(zooens_home):
    weights = zooens_home / "w.bin"
    weights.write_bytes(b"other" * 100)
    _loading.sha_cache_path().parent.mkdir(parents=True, exist_ok=True)
    _loading.sha_cache_path().write_text('{"truncated": ')
    _loading.clear_cache()
    assert _loading.file_sha256(weights) == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert _entry(weights) in json.loads(_loading.sha_cache_path().read_text())
    assert not list(_loading.sha_cache_path().parent.glob("*.tmp"))
    _loading.clear_cache()
