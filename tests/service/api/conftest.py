"""An API client on a fresh registry (SQLite and PostgreSQL), a token, and zip builders."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image


@pytest.fixture
def client(db_url):
    from zooens.service.app import create_app

    with TestClient(create_app()) as c:
        yield c


@pytest.fixture
def token(db_url) -> str:
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    with session_scope() as s:
        plain, _ = registry.create_token(s, "tester")
    return plain


@pytest.fixture
def auth(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def png_bytes(seed: int, size: int = 16, value: int | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    if value is not None:
        arr[..., 0] = value
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def imagefolder_zip(spec: dict[str, int], prefix: str = "", extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for c, (cls, n) in enumerate(spec.items()):
            for i in range(n):
                zf.writestr(f"{prefix}{cls}/{i}.png", png_bytes(100 * c + i, value=60 * c))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def digits_zip(per_class: int = 40, test_per_class: int = 10) -> bytes:
    """scikit-learn digits as PNGs in train/ and test/ folders."""
    from sklearn.datasets import load_digits

    d = load_digits()
    buf = io.BytesIO()
    counts: dict[tuple[str, int], int] = {}
    with zipfile.ZipFile(buf, "w") as zf:
        for img, y in zip(d.images, d.target, strict=False):
            n_train = counts.get(("train", y), 0)
            split = "train" if n_train < per_class else "test"
            if counts.get((split, y), 0) >= (per_class if split == "train" else test_per_class):
                continue
            counts[(split, y)] = counts.get((split, y), 0) + 1
            png = io.BytesIO()
            Image.fromarray(np.round(img * 255 / 16).astype(np.uint8)).save(png, format="PNG")
            zf.writestr(f"digits/{split}/{y}/{counts[(split, y)]}.png", png.getvalue())
    return buf.getvalue()
