"""The exported VTAB layout: streamed `images.npy`/`labels.npy` splits, task.json's class list, old layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from zooens.errors import DatasetError, TooLargeError
from zooens.selection.datasets import (
    SPLIT_IMAGES,
    SPLIT_LABELS,
    load_dataset,
    load_exported_task,
    read_npy_header,
    write_split_npz,
)

FOLDERS = ("train800", "val200", "test")


def write_npy_task(root, name="sun397", *, n_classes=397, sizes=(6, 3, 4), shape=(8, 8, 3), classes=True, seed=0):
    """A task in the streamed layout; train800 holds only a few of the classes."""
    rng = np.random.default_rng(seed)
    base = root / name
    for folder, n in zip(FOLDERS, sizes, strict=False):
        (base / folder).mkdir(parents=True)
        np.save(base / folder / SPLIT_IMAGES, rng.integers(0, 256, (n, *shape)).astype(np.uint8))
        np.save(base / folder / SPLIT_LABELS, rng.integers(0, n_classes, n).astype(np.int64))
    meta = {"task": name, "group": "natural", "stand_in": False, "source": "test"}
    if classes:
        meta["classes"] = [f"/c/class_{i}" for i in range(n_classes)]
    (base / "task.json").write_text(json.dumps(meta))
    return base


def test_npy_splits_are_memory_mapped_and_task_classes_are_the_label_space(tmp_path):
    base = write_npy_task(tmp_path)
    ds = load_exported_task(tmp_path, "sun397")
    assert len(ds.classes) == 397 and ds.classes[5] == "/c/class_5"  # classes without examples kept
    for split, folder in zip(("train", "val", "test"), FOLDERS, strict=False):
        sp = ds.split(split)
        assert isinstance(sp.images, np.memmap) and sp.images.dtype == np.uint8
        assert np.array_equal(sp.images, np.load(base / folder / SPLIT_IMAGES))
        assert np.array_equal(sp.labels, np.load(base / folder / SPLIT_LABELS))
    assert ds.split("train").image(0).size == (8, 8)
    # confined reading checks the same files and gives the same dataset
    assert load_exported_task(tmp_path, "sun397", confine_to=[tmp_path]).fingerprint == ds.fingerprint
    assert load_dataset(base).fingerprint == ds.fingerprint


def test_grey_npy_splits_and_no_class_list(tmp_path):
    write_npy_task(tmp_path, "smallnorb_elevation", n_classes=12, shape=(6, 6), classes=False)
    ds = load_exported_task(tmp_path, "smallnorb_elevation")
    labels = np.concatenate([ds.split(s).labels for s in ("train", "val", "test")])
    assert ds.classes == [str(i) for i in range(labels.max() + 1)]  # numeric order, not "10" < "2"
    assert ds.split("test").images.ndim == 3 and ds.split("test").image(0).mode == "RGB"


def test_npy_labels_outside_the_class_list_are_refused(tmp_path):
    base = write_npy_task(tmp_path, n_classes=5)
    np.save(base / "test" / SPLIT_LABELS, np.array([0, 1, 2, 7]))
    with pytest.raises(DatasetError, match=r"sun397/test: labels run from 0 to 7 but the task has 5 classes"):
        load_exported_task(tmp_path, "sun397")


def test_npy_headers_are_bounded_when_confined(tmp_path, monkeypatch):
    base = write_npy_task(tmp_path, n_classes=5, shape=(64, 64, 3))
    images = base / "train800" / SPLIT_IMAGES
    # a truncated file (an interrupted copy) is refused before it is mapped
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="shorter than its header declares"):
        load_exported_task(tmp_path, "sun397", confine_to=[tmp_path])
    np.save(images, np.zeros((6, 64, 64, 3), np.uint8))
    assert read_npy_header(images).shape == (6, 64, 64, 3)
    with pytest.raises(TooLargeError, match="more than the limit of 1,000"):
        read_npy_header(images, max_bytes=1000)
    monkeypatch.setenv("ZOOENS_MAX_IMAGE_PIXELS", "1000")
    from zooens.settings import get_settings

    get_settings.cache_clear()
    try:
        with pytest.raises(TooLargeError, match="64x64 pixels"):
            load_exported_task(tmp_path, "sun397", confine_to=[tmp_path])
    finally:
        get_settings.cache_clear()
    np.save(images, np.zeros((6, 8, 8, 3), np.float32))
    with pytest.raises(DatasetError, match="images must be uint8"):
        load_exported_task(tmp_path, "sun397", confine_to=[tmp_path])
    np.save(base / "val200" / SPLIT_LABELS, np.array(["a", "b", "c"], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="Python objects"):
        read_npy_header(base / "val200" / SPLIT_LABELS)


def test_old_layouts_map_into_task_json_classes(tmp_path):
    base = tmp_path / "dtd"
    classes = ["banded", "dotted", "striped"]
    rng = np.random.default_rng(0)
    write_split_npz(
        base / "train800",
        rng.integers(0, 256, (4, 8, 8, 3)).astype(np.uint8),
        np.array([0, 0, 1, 1]),
        ["banded", "dotted"],
    )  # a split that lists only its own classes
    write_split_npz(base / "val200", rng.integers(0, 256, (2, 8, 8, 3)).astype(np.uint8), np.array([0, 2]), classes)
    for name in ("striped", "dotted"):  # an ImageFolder test split
        (base / "test" / name).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)).save(base / "test" / name / "a.png")
    (base / "task.json").write_text(json.dumps({"task": "dtd", "classes": classes}))
    ds = load_exported_task(tmp_path, "dtd")
    assert ds.classes == classes
    assert ds.split("train").labels.tolist() == [0, 0, 1, 1]
    assert ds.split("val").labels.tolist() == [0, 2]
    assert sorted(ds.split("test").labels.tolist()) == [1, 2]
    (base / "task.json").write_text(json.dumps({"task": "dtd", "classes": ["banded", "striped"]}))
    with pytest.raises(DatasetError, match=r"dtd/train has classes \['dotted'\] that task.json does not list"):
        load_exported_task(tmp_path, "dtd")
    (base / "task.json").write_text(json.dumps({"task": "dtd", "classes": ["a", "a"]}))
    with pytest.raises(DatasetError, match="distinct names"):
        load_exported_task(tmp_path, "dtd")
