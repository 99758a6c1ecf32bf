"""Embeddings on disk, keyed by what determines them.

The key is the sha256 of (model name, weights checksum, dataset fingerprint, split,
preprocessing config). Writes are atomic (temporary file, then rename), so a killed run
never leaves a half-written entry that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["EmbeddingCache", "cache_key", "read_npy", "write_npy"]


def cache_key(
    model: str, weights_sha256: str, dataset_fingerprint: str, split: str, preprocessing: dict[str, Any]
) -> str:
    """sha256 hex of the inputs that determine an embedding (JSON with sorted keys)."""
    payload = json.dumps(
        {
            "model": model,
            "weights": weights_sha256,
            "dataset": dataset_fingerprint,
            "split": split,
            "preprocessing": preprocessing,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def read_npy(path: Path, what: str, then: str) -> np.ndarray | None:
    """The array in `path`, or None when there is no file or it cannot be read (a warning naming
    `what` and saying it will be `then`)."""
    if not path.is_file():
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        logger.warning("unreadable %s %s; it will be %s", what, path, then)
        return None


def write_npy(path: Path, arr: np.ndarray) -> None:
    """Save `arr` to `path` atomically (a temporary file in the same folder, then renamed): readers see
    the old file or the whole new one, and a failed write leaves nothing behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EmbeddingCache:
    """A directory of `.npy` embeddings with a JSON sidecar each."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """Where the entry for `key` lives (whether or not it exists)."""
        return self.root / key[:2] / f"{key}.npy"

    def get(self, key: str, n_rows: int | None = None) -> np.ndarray | None:
        """The stored float32 (N, D) array, or None when absent, unreadable or not `n_rows` long."""
        path = self.path(key)
        arr = read_npy(path, "cache entry", "recomputed")
        if arr is None:
            return None
        if arr.ndim != 2 or arr.dtype != np.float32 or (n_rows is not None and len(arr) != n_rows):
            logger.warning(
                "cache entry %s has shape %s %s, expected (%s, D) float32; it will be recomputed",
                path,
                arr.shape,
                arr.dtype,
                n_rows,
            )
            return None
        return arr

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    def put(self, key: str, embeddings: np.ndarray, meta: dict[str, Any] | None = None) -> Path:
        """Store `embeddings` (as float32) and an optional JSON sidecar atomically; the .npy path."""
        path = self.path(key)
        write_npy(path, np.ascontiguousarray(embeddings, dtype=np.float32))
        if meta is not None:
            fd, tmp_meta = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(meta, indent=2, default=str))
            os.replace(tmp_meta, path.with_suffix(".json"))
        return path

    def meta(self, key: str) -> dict[str, Any] | None:
        """The JSON sidecar written with the entry, if any."""
        side = self.path(key).with_suffix(".json")
        return json.loads(side.read_text()) if side.is_file() else None
