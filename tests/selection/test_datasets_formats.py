"""More loaders and bad input: JPEG trees, truncated files, CSV/npz edge cases, built-ins, vtab_split."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from zooens.errors import DatasetError
from zooens.selection.datasets import ImageDataset, Split, load_builtin, load_dataset, load_npz, validate, vtab_split


def _tree(root, spec, size=12, seed=0):
    rng = np.random.default_rng(seed)
    for cls, n in spec.items():
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_jpeg_tree_with_three_splits_and_pixels_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in [("train", 3), ("val", 2), ("test", 2)]:
        for cls in ("x", "y"):
            d = tmp_path / "j" / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (10, 14, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=95)
    ds = load_dataset(tmp_path / "j")
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 6, "val": 4, "test": 4}
    assert ds.split("val").labels.tolist() == [0, 0, 1, 1]
    img = ds.split("train").image(0)
    assert img.mode == "RGB" and img.size == (14, 10)
    arr = rng.integers(0, 255, (9, 9), dtype=np.uint8)  # greyscale PNG comes back as identical RGB channels
    Image.fromarray(arr).save(tmp_path / "j" / "train" / "x" / "grey.png")
    got = np.asarray(load_dataset(tmp_path / "j").split("train").image(3))
    assert got.shape == (9, 9, 3) and all((got[..., c] == arr).all() for c in range(3))


def test_truncated_jpeg_and_many_corrupt_files_are_listed(tmp_path):
    root = _tree(tmp_path / "d", {"a": 2, "b": 2})
    buf = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf)
    (root / "a" / "cut.jpg").write_bytes(buf.read_bytes()[:400])
    with pytest.raises(DatasetError, match=r"1 file\(s\).*cut\.jpg"):
        load_dataset(root)
    for i in range(11):
        (root / "b" / f"junk{i:02d}.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match=r"12 file\(s\) are not readable.*and 2 more") as err:
        load_dataset(root)
    assert str(err.value).count("junk") == 9  # ten named in all, the truncated JPEG among them


def test_csv_without_header_numeric_classes_and_bad_split(tmp_path):
    _tree(tmp_path / "img", {"a": 2, "b": 2})
    (tmp_path / "m.csv").write_text("img/a/0.png,10\nimg/a/1.png,2\nimg/b/0.png,2,val\nimg/b/1.png,10,val\n")
    ds = load_dataset(tmp_path / "m.csv")
    assert ds.classes == ["2", "10"] and ds.split("train").labels.tolist() == [1, 0]
    assert ds.split("val").labels.tolist() == [0, 1]
    (tmp_path / "s.csv").write_text("img/a/0.png,a,holdout\n")
    with pytest.raises(DatasetError, match="holdout"):
        load_dataset(tmp_path / "s.csv")


def test_npz_plain_keys_labels_outside_classes_and_float_labels(tmp_path):
    imgs = np.arange(4 * 5 * 5 * 3, dtype=np.uint8).reshape(4, 5, 5, 3)
    np.savez(tmp_path / "p.npz", images=imgs, labels=np.array([0, 1, 0, 1]))
    ds = load_npz(tmp_path / "p.npz")
    assert list(ds.splits) == ["train"] and ds.classes == ["0", "1"]
    np.testing.assert_array_equal(np.asarray(ds.split("train").image(2)), imgs[2])
    np.savez(tmp_path / "out.npz", train_images=imgs, train_labels=np.array([0, 1, 2, 1]), classes=np.array(["a", "b"]))
    with pytest.raises(DatasetError, match=r"label\(s\) \[2\] outside the 2 classes"):
        load_npz(tmp_path / "out.npz")
    np.savez(tmp_path / "f.npz", images=imgs, labels=np.array([0.5, 1, 0, 1]))
    with pytest.raises(DatasetError, match="integer class indices"):
        load_npz(tmp_path / "f.npz")
    with pytest.raises(DatasetError, match="does not exist"):
        load_npz(tmp_path / "nope.npz")


def test_fingerprint_follows_labels_and_class_names(tmp_path):
    root = _tree(tmp_path / "d", {"a": 2, "b": 2})
    f1 = load_dataset(root).fingerprint
    (root / "b" / "1.png").rename(root / "a" / "moved.png")  # same bytes, another label
    f2 = load_dataset(root).fingerprint
    assert f2 != f1
    (root / "b").rename(root / "c")  # same images and labels, another class name
    assert load_dataset(root).fingerprint not in (f1, f2)


def test_validate_passes_good_data_and_flags_empty_split():
    good = ImageDataset("g", ["a", "b"], {"train": Split("train", np.zeros((4, 3, 3), np.uint8), [0, 1, 0, 1])})
    assert validate(good) is good
    empty = ImageDataset("e", ["a"], {"train": Split("train", np.zeros((0, 3, 3), np.uint8), [])})
    with pytest.raises(DatasetError, match="no images"):
        validate(empty)
    with pytest.raises(DatasetError, match="more than once"):
        ImageDataset("d", ["a", "a"], {})


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_builtin("fashion-mnist", root=tmp_path)
    with pytest.raises(DatasetError, match="fashion-mnist, digits"):
        load_builtin("mnist")


def test_builtin_contents_against_their_sources():
    from sklearn.datasets import load_digits

    fm = load_dataset("fashion-mnist")
    assert np.bincount(fm.split("train").labels).tolist() == [6000] * 10  # balanced, as published
    assert np.bincount(fm.split("test").labels).tolist() == [1000] * 10
    assert fm.split("train").images.shape == (60000, 28, 28)
    digits, ref = load_dataset("digits"), load_digits()
    tr, te = digits.split("train"), digits.split("test")
    assert tr.images.max() == 255 and len(te) == 599
    assert np.bincount(te.labels).min() >= 58  # stratified: each class about a third
    ref_images = np.round(ref.images * 255 / 16).astype(np.uint8)
    pool = {(lab, img.tobytes()) for lab, img in zip(ref.target, ref_images, strict=False)}
    assert all((int(lab), img.tobytes()) in pool for lab, img in zip(te.labels, te.images, strict=False))
    assert load_dataset("digits").fingerprint == digits.fingerprint  # the seeded split is stable


def test_vtab_split_draws_disjoint_seeded_subsets(tmp_path):
    n = 60
    imgs = np.zeros((n, 4, 4), np.uint8)
    imgs[:, 0, 0] = np.arange(n)  # the image says which index it is
    np.savez(
        tmp_path / "v.npz",
        train_images=imgs,
        train_labels=np.arange(n) % 3,
        test_images=imgs[:30],
        test_labels=np.arange(30) % 3,
    )
    ds = load_npz(tmp_path / "v.npz")
    a = vtab_split(ds, n_train=20, n_val=10, seed=7)
    ids = {s: a.split(s).images[:, 0, 0].tolist() for s in ("train", "val")}
    assert len(set(ids["train"]) | set(ids["val"])) == 30  # disjoint
    assert a.split("train").labels.tolist() == [i % 3 for i in ids["train"]]  # labels follow their images
    assert vtab_split(ds, n_train=20, n_val=10, seed=7).split("val").images[:, 0, 0].tolist() == ids["val"]
    assert vtab_split(ds, n_train=20, n_val=10, seed=8).split("val").images[:, 0, 0].tolist() != ids["val"]
    assert len(a.split("test")) == 30 and "seed=7" in a.name
    b = vtab_split(ds, n_train=20, n_val=10, seed=7, max_test=12)
    assert np.bincount(b.split("test").labels).tolist() == [4, 4, 4] and "max_test=12" in b.name
    assert b.fingerprint != a.fingerprint


def test_cli_show_reports_the_same_summary(tmp_path):
    import json

    from typer.testing import CliRunner

    from zooens.service.cli.datasets import app

    root = _tree(tmp_path / "d", {"a": 2, "b": 3})
    res = CliRunner().invoke(app, ["show", "ignored", "--data", str(root), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["fingerprint"] == load_dataset(root).fingerprint and out["counts"]["train"] == {"a": 2, "b": 3}
    bad = CliRunner().invoke(app, ["show", str(tmp_path / "missing")])
    assert bad.exit_code == 2 and "No dataset" in bad.output
