"""Dataset loaders and the bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from zooens.errors import DatasetError
from zooens.selection.datasets import load_dataset, load_npz, validate, vtab_split


def _tree(root, spec, size=12, seed=0):
    rng = np.random.default_rng(seed)
    for cls, n in spec.items():
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_imagefolder_flat_and_with_splits(tmp_path):
    ds = load_dataset(_tree(tmp_path / "flat", {"cat": 3, "dog": 2}))
    assert ds.classes == ["cat", "dog"] and list(ds.splits) == ["train"]
    assert ds.split("train").labels.tolist() == [0, 0, 0, 1, 1]
    assert ds.split("train").image(0).mode == "RGB"
    _tree(tmp_path / "s" / "train", {"a": 2, "b": 2})
    _tree(tmp_path / "s" / "test", {"a": 1, "b": 1})
    ds = load_dataset(tmp_path / "s")
    assert sorted(ds.splits) == ["test", "train"] and len(ds.split("test")) == 2
    with pytest.raises(DatasetError, match="no 'val' split"):
        ds.split("val")


def test_csv_manifest(tmp_path):
    _tree(tmp_path / "img", {"a": 2, "b": 2})
    lines = [
        "path,label,split",
        "img/a/0.png,a,train",
        "img/a/1.png,a,test",
        "img/b/0.png,b,train",
        "img/b/1.png,b,train",
    ]
    (tmp_path / "m.csv").write_text("\n".join(lines))
    ds = load_dataset(tmp_path / "m.csv")
    assert ds.classes == ["a", "b"] and len(ds.split("train")) == 3 and len(ds.split("test")) == 1
    (tmp_path / "bad.csv").write_text("img/a/9.png,a\n")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "bad.csv")


def test_npz_and_its_errors(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        train_images=rng.integers(0, 255, (6, 8, 8), dtype=np.uint8),
        train_labels=np.array([0, 0, 1, 1, 2, 2]),
        classes=np.array(["x", "y", "z"]),
    )
    ds = load_npz(tmp_path / "d.npz")
    assert ds.classes == ["x", "y", "z"] and ds.split("train").image(0).size == (8, 8)
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.zeros(2))
    with pytest.raises(DatasetError, match="3 images but 2 labels"):
        load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "keys.npz", foo=np.zeros(3))
    with pytest.raises(DatasetError, match="train_images"):
        load_npz(tmp_path / "keys.npz")


def test_corrupt_and_non_image_files_are_named(tmp_path):
    root = _tree(tmp_path / "d", {"a": 2, "b": 2})
    (root / "a" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match="broken.png"):
        load_dataset(root)
    (root / "a" / "broken.png").unlink()
    (root / "b" / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="notes.txt"):
        load_dataset(root)


def test_empty_and_single_example_class(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="No images"):
        load_dataset(tmp_path / "empty")
    ds = load_dataset(_tree(tmp_path / "one", {"a": 3, "b": 1}))
    with pytest.raises(DatasetError, match="'b' \\(1\\)"):
        validate(ds)
    with pytest.raises(DatasetError, match="No dataset"):
        load_dataset(tmp_path / "missing")


def test_fingerprint_is_stable_and_sensitive(tmp_path):
    root = _tree(tmp_path / "d", {"a": 2, "b": 2})
    f1 = load_dataset(root).fingerprint
    assert load_dataset(root).fingerprint == f1
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(root / "a" / "0.png")
    assert load_dataset(root).fingerprint != f1


def test_builtins_and_vtab_split():
    digits = load_dataset("digits")
    assert len(digits.classes) == 10 and len(digits.split("train")) + len(digits.split("test")) == 1797
    a = vtab_split(digits, n_train=800, n_val=200, seed=3, max_test=100)
    b = vtab_split(digits, n_train=800, n_val=200, seed=3, max_test=100)
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 800, "val": 200, "test": 100}
    assert a.fingerprint == b.fingerprint
    assert a.fingerprint != vtab_split(digits, n_train=800, n_val=200, seed=4, max_test=100).fingerprint
    counts = np.bincount(a.split("test").labels, minlength=10)
    assert counts.min() >= 9  # stratified test subsample
    with pytest.raises(DatasetError, match="fewer than"):
        vtab_split(digits, n_train=2000, n_val=200)
    fm = load_dataset("fashion-mnist")
    assert len(fm.split("train")) == 60000 and len(fm.split("test")) == 10000 and fm.classes[0] == "t-shirt/top"
