"""Thumbnails are made once, at registration, and served from disk (issue 10, cases 2 and 9)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.service.security._hostile import good_entries, png_bytes, zip_of
from tests.service.security.conftest import ingest
from zooens.errors import DatasetError, NotFoundError
from zooens.selection.datasets import ImageDataset, Split
from zooens.service.dataroots import allowed_roots
from zooens.service.thumbnails import (
    PER_CLASS,
    THUMB_SIZE,
    ensure_thumbnails,
    make_thumbnails,
    sample_indices,
    thumbnail_file,
    thumbnails_dir,
)


def _train_and_test_zip() -> bytes:
    entries = [
        (f"d/train/{c}/{i:02d}.png", png_bytes(100 * k + i, size=300))
        for k, c in enumerate("ab")
        for i in range(PER_CLASS + 3)
    ]
    entries += [
        (f"d/test/{c}/{i}.png", png_bytes(900 + 10 * k + i, size=5)) for k, c in enumerate("ab") for i in range(2)
    ]
    return zip_of(entries)


def test_thumbnails_are_made_at_registration_with_the_right_samples(settings):
    row = ingest(settings, _train_and_test_zip())
    dest = thumbnails_dir(settings, row.fingerprint)
    samples = sample_indices(dest)
    n = PER_CLASS + 3
    assert samples == {"train": [list(range(PER_CLASS)), list(range(n, n + PER_CLASS))], "test": [[0, 1], [2, 3]]}
    big = Image.open(thumbnail_file(dest, "train", 0))
    assert big.size == (THUMB_SIZE, THUMB_SIZE)  # 300 px shrunk
    tiny = Image.open(thumbnail_file(dest, "test", 3))
    assert tiny.size == (125, 125)  # 5 px enlarged 25x, nearest neighbour: still 5x5 blocks
    pixels = np.asarray(tiny)
    assert (pixels[:25, :25] == pixels[0, 0]).all()
    assert sorted(p.name for p in (dest / "train").iterdir()) == sorted(
        f"{i}.png" for i in samples["train"][0] + samples["train"][1]
    )


def test_only_listed_samples_are_served(settings):
    row = ingest(settings, zip_of(good_entries(per_class=PER_CLASS + 1)))
    dest = thumbnails_dir(settings, row.fingerprint)
    assert thumbnail_file(dest, "train", 0) == dest / "train" / "0.png"
    for split, index in [
        ("train", PER_CLASS),
        ("train", -1),
        ("../train", 0),
        ("val", 0),
        ("index.json", 0),
        ("train", 10**9),
    ]:
        with pytest.raises(NotFoundError):
            thumbnail_file(dest, split, index)
    (dest / "train" / "1.png").unlink()
    with pytest.raises(NotFoundError, match="missing"):
        thumbnail_file(dest, "train", 1)


def test_not_made_yet_and_bad_fingerprints(tmp_path, settings):
    assert sample_indices(tmp_path / "none") is None
    with pytest.raises(NotFoundError, match="no thumbnails yet"):
        thumbnail_file(tmp_path / "none", "train", 0)
    for bad in ("../etc", "", "ABC/.."):
        with pytest.raises(NotFoundError):
            thumbnails_dir(settings, bad)


def test_ensure_makes_missing_thumbnails_once_even_when_asked_twice_at_once(settings):
    row = ingest(settings, zip_of(good_entries(per_class=4)))
    dest = thumbnails_dir(settings, row.fingerprint)
    shutil.rmtree(dest)  # a dataset registered before thumbnails existed
    results: list[Path | BaseException] = []

    def ask() -> None:
        try:
            results.append(ensure_thumbnails(settings, row.source, row.fingerprint))
        except BaseException as exc:  # recorded, asserted below
            results.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [dest, dest]
    assert sample_indices(dest) == {"train": [[0, 1, 2, 3], [4, 5, 6, 7]]}
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no temporary folder left
    assert ensure_thumbnails(settings, row.source, row.fingerprint) == dest


def test_ensure_refuses_a_stored_dataset_whose_files_reach_outside(settings, tmp_path):
    """A row registered before confinement, whose manifest names a server file, is not served."""
    row = ingest(
        settings,
        zip_of(
            [("data/labels.csv", b"a/0.png,a\na/1.png,a\nb/0.png,b\nb/1.png,b\n")]
            + [(f"data/{n}", d) for n, d in good_entries(per_class=2)]
        ),
    )
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(7))
    manifest = Path(row.source)
    manifest.write_text(manifest.read_text() + f"{secret},b\n")
    shutil.rmtree(thumbnails_dir(settings, row.fingerprint))
    with pytest.raises(DatasetError, match="points outside"):
        ensure_thumbnails(settings, row.source, row.fingerprint)
    assert not thumbnails_dir(settings, row.fingerprint).exists()


def test_ensure_refuses_changed_content(settings):
    row = ingest(settings, zip_of(good_entries(per_class=2)))
    shutil.rmtree(thumbnails_dir(settings, row.fingerprint))
    first = next(Path(row.source).rglob("*.png"))
    first.write_bytes(png_bytes(12345))
    with pytest.raises(DatasetError, match="changed"):
        ensure_thumbnails(settings, row.source, row.fingerprint)


def test_make_thumbnails_for_array_images(tmp_path):
    images = np.zeros((3, 8, 8), np.uint8)
    images[1, :4] = 255
    ds = ImageDataset("arrays", ["x", "y"], {"train": Split("train", images, np.array([0, 1, 1]))})
    make_thumbnails(ds, tmp_path / "t")
    assert sample_indices(tmp_path / "t") == {"train": [[0], [1, 2]]}
    img = np.asarray(Image.open(tmp_path / "t" / "train" / "1.png"))
    assert img.shape == (128, 128, 3) and (img[:64] == 255).all() and (img[64:] == 0).all()


def test_allowed_roots_of_a_registered_dataset(settings, tmp_path):
    row = ingest(settings, zip_of(good_entries(prefix="top/")))
    assert allowed_roots(settings, row.source) == [Path(row.storage_path).resolve()]
    roots = [(tmp_path / "data").resolve()]
    assert allowed_roots(settings.model_copy(update={"data_roots": roots}), str(tmp_path / "data" / "x")) == roots
    assert allowed_roots(settings, str(settings.home / "datasets")) == []
    # registered by a local operator through the CLI: not confined, checked by its fingerprint
    assert allowed_roots(settings, str(tmp_path / "elsewhere")) is None
