"""Uploads under attack (issue 10, cases 1, 2, 9, 11): bombs, too many entries, malformed zips,
bad names, huge images, leftover staging. Each refusal leaves nothing behind, on SQLite and
PostgreSQL, through `ingest_upload` and a real registry session."""

from __future__ import annotations

import os
import time
import warnings
import zipfile
from pathlib import Path

import pytest

from tests.service.security._hostile import (
    deflate_bomb,
    forged_png,
    good_entries,
    patch_entry,
    png_bytes,
    tree_size,
    zip_of,
)
from tests.service.security.conftest import assert_no_server_path, assert_nothing_left, ingest, limited
from zooens.errors import DatasetError, TooLargeError
from zooens.service.uploads import MAX_RATIO, RATIO_FLOOR, clean_staging, extract_zip
from zooens.settings import Settings

MB = 1024 * 1024


@pytest.fixture(scope="module")
def bomb_zip(tmp_path_factory) -> Path:
    """A ~250 KB zip holding one 256 MiB entry of zeros next to a valid small dataset."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    deflate_bomb(path, "a/zeros.png", 256 * MB)
    with zipfile.ZipFile(path, "a") as zf:
        for name, data in good_entries():
            zf.writestr(name, data)
    return path


def test_a_good_upload_is_stored_with_its_thumbnails(settings):
    row = ingest(settings, zip_of(good_entries(prefix="pets/")), filename="pets.zip")
    assert row.name == "pets" and row.classes == ["a", "b"]
    stored = [p for p in (settings.home / "datasets").iterdir()]
    assert [p.name for p in stored] == [Path(row.storage_path).name]  # no staging left
    assert (settings.home / "thumbnails" / row.fingerprint / "index.json").is_file()


def test_ratio_guard_stops_a_bomb_after_a_few_megabytes(settings, bomb_zip, tmp_path):
    assert bomb_zip.stat().st_size < 1 * MB and settings.max_archive_uncompressed_bytes >= 1024 * MB
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(TooLargeError, match=f"more than {MAX_RATIO} times.*zip bomb") as err:
        extract_zip(bomb_zip, dest, settings)
    assert "'a/zeros.png'" in str(err.value)
    written = tree_size(dest)
    assert RATIO_FLOOR < written < 16 * MB, written  # refused after a few MB, not 256 MiB


def test_a_bomb_upload_is_refused_and_leaves_nothing(settings, bomb_zip):
    with pytest.raises(TooLargeError, match="zip bomb") as err:
        ingest(settings, bomb_zip.read_bytes())
    assert_no_server_path(str(err.value), settings.home)
    assert_nothing_left(settings)


def test_expanded_bytes_never_exceed_the_limit(settings, tmp_path):
    small = limited(settings, max_archive_uncompressed_bytes=300_000)
    honest = zip_of(good_entries() + [("a/big.png", os.urandom(400_000))], method=zipfile.ZIP_STORED)
    dest = tmp_path / "honest"
    dest.mkdir()
    with pytest.raises(TooLargeError, match="expand"):
        extract_zip_bytes(honest, dest, small, tmp_path)
    assert tree_size(dest) == 0  # refused from the declared sizes before writing
    # an entry declaring 1,000 bytes but holding 50 MB: never more than the declared size is written
    liar = patch_entry(zip_of([("a/zeros.png", bytes(50 * MB))] + good_entries()), file_size=1_000)
    dest = tmp_path / "liar"
    dest.mkdir()
    with pytest.raises(DatasetError, match="a/zeros.png"):
        extract_zip_bytes(liar, dest, settings, tmp_path)
    assert tree_size(dest) <= 1_000
    with pytest.raises(DatasetError):
        ingest(small, liar)
    assert_nothing_left(settings)


def extract_zip_bytes(data: bytes, dest: Path, settings: Settings, tmp_path: Path) -> None:
    archive = tmp_path / f"archive-{dest.name}.zip"
    archive.write_bytes(data)
    extract_zip(archive, dest, settings)


def test_too_many_entries(settings):
    assert Settings().max_archive_files == 50_000
    few = limited(settings, max_archive_files=5)
    with pytest.raises(TooLargeError, match="6 entries, more than the limit of 5.*ZOOENS_MAX_ARCHIVE_FILES"):
        ingest(few, zip_of(good_entries()))
    assert_nothing_left(settings)


def _duplicate() -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zip_of(good_entries() + [("a/0.png", png_bytes(99))])


def _truncated() -> bytes:
    data = zip_of(good_entries())
    return data[: len(data) // 2]


def _bad_crc() -> bytes:
    data = bytearray(zip_of(good_entries(), method=zipfile.ZIP_STORED))
    data[60] ^= 0xFF  # inside the first entry's PNG bytes
    return bytes(data)


MALFORMED = {
    "bad-crc": (_bad_crc, "a/0.png"),
    "truncated": (_truncated, "not a valid zip"),
    "encrypted": (lambda: patch_entry(zip_of(good_entries()), flag_bits=0x1), "encrypted"),
    "unsupported-method": (lambda: patch_entry(zip_of(good_entries()), method=99), "compression method 99"),
    "control-character-name": (lambda: zip_of(good_entries() + [("a/\x01bell.png", png_bytes(5))]), "control"),
    "long-name": (lambda: zip_of(good_entries() + [(f"a/{'x' * 300}.png", png_bytes(5))]), "over 255 bytes"),
    "duplicate-names": (_duplicate, "twice"),
    "file-and-folder": (lambda: zip_of(good_entries() + [("a", b"file named like a folder")]), "both as a file"),
    "empty-archive": (lambda: zip_of([]), "empty"),
    "only-folders": (lambda: zip_of([("a/", b""), ("b/", b"")]), "empty"),
    "not-a-zip": (lambda: b"PK\x03\x04 this is not really a zip", "not a valid zip"),
    "zero-bytes": (lambda: b"", "not a valid zip"),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_every_malformed_zip_is_a_dataset_error(settings, kind):
    make, message = MALFORMED[kind]
    with pytest.raises(DatasetError, match=message) as err:
        ingest(settings, make())
    assert_no_server_path(str(err.value), settings.home)
    assert_nothing_left(settings)


def test_a_13000_square_png_in_an_upload_is_refused_from_its_header(settings):
    archive = zip_of(good_entries() + [("b/huge.png", forged_png(13000, 13000))])
    with pytest.raises(TooLargeError, match=r"b/huge\.png.*ZOOENS_MAX_IMAGE_PIXELS") as err:
        ingest(settings, archive)
    assert_no_server_path(str(err.value), settings.home)
    assert_nothing_left(settings)


def test_corrupt_image_named_relative_to_the_archive(settings):
    archive = zip_of(good_entries(prefix="top/") + [("top/a/bad.png", b"garbage")])
    with pytest.raises(DatasetError, match=r"a/bad\.png \(not an image\)") as err:
        ingest(settings, archive)
    assert_no_server_path(str(err.value), settings.home)
    assert_nothing_left(settings)


@pytest.mark.parametrize(
    "name, message",
    [("x" * 300, "300 characters"), ("evil\x00name", "control"), ("tab\tname", "control"), ("   ", "empty")],
)
def test_bad_dataset_names_are_refused(settings, name, message):
    with pytest.raises(DatasetError, match=message):
        ingest(settings, zip_of(good_entries()), name=name)
    assert_nothing_left(settings)


def test_file_names_give_clean_dataset_names(settings):
    row = ingest(settings, zip_of(good_entries()), filename=("y" * 300) + ".zip")
    assert row.name == "y" * 200
    row = ingest(settings, zip_of(good_entries(per_class=4)), filename="nul\x00in\x01name.zip")
    assert row.name == "nulinname"


def test_a_symlink_entry_is_refused(settings):
    link = zipfile.ZipInfo("a/link.png")
    link.external_attr = 0o120777 << 16
    with pytest.raises(DatasetError, match="symbolic link"):
        ingest(settings, zip_of(good_entries() + [(link, b"/etc/passwd")]))
    assert_nothing_left(settings)


def test_clean_staging_removes_only_leftovers(zooens_home):
    settings = Settings(home=zooens_home)
    root = zooens_home / "datasets"
    old = root / ".upload-crashed"
    (old / "content" / "a").mkdir(parents=True)
    (old / "content" / "a" / "0.png").write_bytes(png_bytes(0))
    long_ago = time.time() - 3600
    for p in [old / "content" / "a" / "0.png", old / "content" / "a", old / "content", old]:
        os.utime(p, (long_ago, long_ago))
    fresh = root / ".upload-receiving"
    fresh.mkdir()
    kept = root / "0123abcd"  # a stored dataset
    kept.mkdir()
    assert clean_staging(settings) == 1
    assert sorted(p.name for p in root.iterdir()) == [".upload-receiving", "0123abcd"]
    assert clean_staging(settings, min_age_seconds=0) == 1
    assert sorted(p.name for p in root.iterdir()) == ["0123abcd"]
    assert clean_staging(Settings(home=zooens_home / "nowhere")) == 0
