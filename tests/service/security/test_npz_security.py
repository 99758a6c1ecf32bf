"""`.npz` uploads bounded from their headers (issue 10, cases 3 and 11): a compressed 1 GiB
array, pickled objects, empty and huge-shape files, and not-a-zip are refused before any
array is loaded."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.service.security._hostile import deflate_bomb, npy_header
from tests.service.security.conftest import assert_no_server_path, assert_nothing_left, ingest
from zooens.errors import DatasetError, TooLargeError
from zooens.selection.datasets import load_npz, read_npz_headers

GiB = 1024**3


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _labels(n: int) -> np.ndarray:
    return np.arange(n) % 2


@pytest.fixture(scope="module")
def gib_npz(tmp_path_factory) -> Path:
    """A ~1 MB .npz whose train_images is a real, deflated, 1 GiB uint8 array (1024 images of 1024x1024)."""
    path = tmp_path_factory.mktemp("npz") / "bomb.npz"
    deflate_bomb(path, "train_images.npy", GiB, header=npy_header((1024, 1024, 1024)))
    with zipfile.ZipFile(path, "a") as zf:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, _labels(1024))
        zf.writestr("train_labels.npy", buf.getvalue())
    return path


def test_a_compressed_gib_array_is_refused_from_its_header(settings, gib_npz):
    assert gib_npz.stat().st_size < 2 * 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(TooLargeError, match="compression bomb") as err:
            ingest(settings, gib_npz.read_bytes(), filename="bomb.npz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024 * 1024, peak  # nothing near 1 GiB was allocated
    assert_no_server_path(str(err.value), settings.home)
    assert_nothing_left(settings)


def test_the_byte_limit_applies_to_the_declared_shape(tmp_path, gib_npz):
    tracemalloc.start()
    try:
        with pytest.raises(TooLargeError, match=r"train_images.*\(1024, 1024, 1024\).*ZOOENS_MAX_ARCHIVE"):
            load_npz(gib_npz, max_bytes=GiB - 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024 * 1024, peak
    headers = read_npz_headers(gib_npz)  # within the default 4 GiB: the headers alone are read
    assert headers["train_images"].nbytes == GiB and headers["train_labels"].shape == (1024,)


def test_a_huge_declared_shape_is_refused_without_reading_data(settings, tmp_path):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train_images.npy", npy_header((10**9, 10**5, 10**5)))
        zf.writestr("train_labels.npy", npy_header((2,), "<i8") + bytes(16))
    with pytest.raises(TooLargeError, match="more than the limit"):
        load_npz(path)
    with pytest.raises(TooLargeError):
        ingest(settings, path.read_bytes(), filename="huge.npz")
    assert_nothing_left(settings)


def test_images_over_the_pixel_limit_are_refused_from_the_header(tmp_path):
    path = tmp_path / "wide.npz"
    path.write_bytes(_npz(train_images=np.zeros((2, 3, 400), np.uint8), train_labels=_labels(2)))
    with pytest.raises(TooLargeError, match="400x3 pixels"):
        load_npz(path, max_pixels=1000)


def test_a_pickled_object_array_is_refused(settings):
    data = io.BytesIO()
    np.savez(data, train_images=np.array([object(), 1], dtype=object), train_labels=_labels(2))
    with pytest.raises(DatasetError, match="Python objects"):
        ingest(settings, data.getvalue(), filename="pickle.npz")
    assert_nothing_left(settings)


@pytest.mark.parametrize(
    "kind, make, message",
    [
        pytest.param(*case, id=case[0])
        for case in [
            ("empty-zip", lambda: _npz(), "holds no arrays"),
            ("zero-bytes", lambda: b"", "not a readable .npz"),
            ("not-a-zip", lambda: b"\x93NUMPY definitely not a zip", "not a readable .npz"),
            ("raw-member", lambda: _zip({"train_images": b"raw bytes"}), "not a .npy array"),
            (
                "truncated-data",
                lambda: _zip(
                    {
                        "train_images.npy": npy_header((4, 8, 8)) + bytes(10),
                        "train_labels.npy": npy_header((4,), "<i8") + bytes(32),
                    }
                ),
                "not a readable .npz",
            ),
            (
                "empty-arrays",
                lambda: _npz(train_images=np.zeros((0, 4, 4), np.uint8), train_labels=_labels(0)),
                "holds no images",
            ),
            (
                "labels-2d",
                lambda: _npz(train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.zeros((2, 2), int)),
                "1-D array",
            ),
            ("images-1d", lambda: _npz(train_images=np.zeros(4, np.uint8), train_labels=_labels(4)), "must be"),
        ]
    ],
)
def test_malformed_npz_is_a_dataset_error(settings, kind, make, message):
    with pytest.raises(DatasetError, match=message) as err:
        ingest(settings, make(), filename=f"{kind}.npz")
    assert_no_server_path(str(err.value), settings.home)
    assert_nothing_left(settings)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_a_good_npz_still_loads(settings):
    rng = np.random.default_rng(0)
    row = ingest(
        settings,
        _npz(
            train_images=rng.integers(0, 255, (6, 8, 8), dtype=np.uint8),
            train_labels=_labels(6),
            classes=np.array(["cat", "dog"]),
        ),
        filename="pets.npz",
    )
    assert row.classes == ["cat", "dog"] and row.counts["train"] == {"cat": 3, "dog": 3}
