"""Data never leaves its root (issue 10, cases 1 and 11): manifest rows, symlinked files and
folders, and odd paths are refused with a DatasetError naming the entry, for uploads (confined
to their own folder) and registered paths (confined to ZOOENS_DATA_ROOTS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.service.security._hostile import good_entries, png_bytes, zip_of
from tests.service.security.conftest import assert_no_server_path, assert_nothing_left, ingest, limited
from zooens.errors import DatasetError
from zooens.selection.datasets import load_csv_manifest, load_dataset, load_imagefolder
from zooens.service.db.session import session_scope
from zooens.service.uploads import register_path


@pytest.fixture
def outside(tmp_path) -> Path:
    """An image the attacker wants to read, outside every allowed directory."""
    folder = tmp_path / "secret"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(png_bytes(500 + i))
    return folder


def _manifest_zip(rows: list[str]) -> bytes:
    manifest = "path,label\n" + "\n".join(rows) + "\n"
    return zip_of([("data/labels.csv", manifest.encode())] + [(f"data/{n}", d) for n, d in good_entries()])


def _good_rows() -> list[str]:
    return [f"{c}/{i}.png,{c}" for c in ("a", "b") for i in range(3)]


@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_manifest_rows_outside_the_upload_are_refused(settings, outside, kind):
    target = outside / "0.png"
    row = str(target) if kind == "absolute" else os.path.relpath(target, settings.home / "datasets" / "x" / "y")
    with pytest.raises(DatasetError, match=r"labels\.csv: row 7 .* points outside the dataset") as err:
        ingest(settings, _manifest_zip(_good_rows() + [f"{row},a"]))
    assert_no_server_path(str(err.value).replace(row, ""), settings.home)
    assert_nothing_left(settings)


def test_a_manifest_inside_the_upload_is_accepted(settings):
    row = ingest(settings, _manifest_zip(_good_rows()))
    assert row.classes == ["a", "b"] and row.counts["train"] == {"a": 3, "b": 3}


def test_a_manifest_that_is_not_utf8_is_a_dataset_error(settings):
    archive = zip_of(
        [("data/labels.csv", "a/0.png,caf\xe9\n".encode("latin1"))] + [(f"data/{n}", d) for n, d in good_entries()]
    )
    with pytest.raises(DatasetError, match="UTF-8"):
        ingest(settings, archive)
    assert_nothing_left(settings)


@pytest.fixture
def data_root(tmp_path, settings):
    root = tmp_path / "roots" / "allowed"
    root.mkdir(parents=True)
    return root, limited(settings, data_roots=[root])


def _tree(folder: Path) -> Path:
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        for i in range(3):
            (folder / c / f"{i}.png").write_bytes(png_bytes(hash((c, i)) % 1000))
    return folder


def _register(settings, path: str | Path, name: str | None = None):
    with session_scope() as s:
        return register_path(s, str(path), settings, name=name)


def test_register_a_tree_inside_a_root(data_root):
    root, settings = data_root
    row = _register(settings, _tree(root / "ds"))
    assert row.classes == ["a", "b"]
    assert (settings.home / "thumbnails" / row.fingerprint / "index.json").is_file()


def test_a_symlinked_file_pointing_outside_the_root_is_refused(data_root, outside):
    root, settings = data_root
    tree = _tree(root / "ds")
    (tree / "a" / "stolen.png").symlink_to(outside / "0.png")
    with pytest.raises(DatasetError, match=r"'a/stolen\.png' points outside") as err:
        _register(settings, tree)
    assert str(outside) not in str(err.value)
    assert_nothing_left(settings)


def test_a_symlinked_folder_pointing_outside_the_root_is_refused(data_root, outside):
    root, settings = data_root
    tree = _tree(root / "ds")
    (tree / "c").symlink_to(outside, target_is_directory=True)  # a whole class folder
    with pytest.raises(DatasetError, match=r"'c' points outside"):
        _register(settings, tree)
    (tree / "c").unlink()
    (tree / "a" / "more").symlink_to(outside, target_is_directory=True)  # a folder inside a class
    with pytest.raises(DatasetError, match=r"'a/more' points outside"):
        _register(settings, tree)
    assert_nothing_left(settings)


def test_a_registered_path_that_is_a_link_to_outside_is_refused(data_root, outside):
    root, settings = data_root
    (root / "link").symlink_to(_tree(outside.parent / "elsewhere"), target_is_directory=True)
    with pytest.raises(DatasetError, match="not under an allowed data root"):
        _register(settings, root / "link")
    with pytest.raises(DatasetError, match="not under an allowed data root"):
        _register(settings, f"{root}/../../secret")
    assert_nothing_left(settings)


def test_a_manifest_in_a_root_with_rows_outside_or_through_links_is_refused(data_root, outside):
    root, settings = data_root
    tree = _tree(root / "ds")
    (tree / "peek.png").symlink_to(outside / "1.png")
    for row, match in [(str(outside / "0.png"), "row 7"), ("../../../secret/0.png", "row 7"), ("peek.png", "row 7")]:
        (tree / "labels.csv").write_text("\n".join(_good_rows() + [f"{row},b"]) + "\n")
        with pytest.raises(DatasetError, match=f"{match} .*points outside"):
            _register(settings, tree / "labels.csv")
    assert_nothing_left(settings)


@pytest.mark.parametrize("path", ["/data/a\x00b", "\x00", ""])
def test_nul_bytes_and_empty_paths_are_dataset_errors(data_root, path):
    root, settings = data_root
    with pytest.raises(DatasetError):
        _register(settings, path if path else str(root) + "/missing")
    with pytest.raises(DatasetError):
        _register(settings, str(root) + "/ds\x00/../x")
    assert_nothing_left(settings)


def test_register_refuses_bad_names(data_root):
    root, settings = data_root
    tree = _tree(root / "ds")
    for name in ("n" * 201, "a\x00b"):
        with pytest.raises(DatasetError, match="dataset name"):
            _register(settings, tree, name=name)
    assert_nothing_left(settings)


def test_the_loaders_confine_only_when_asked(tmp_path, outside):
    tree = _tree(tmp_path / "mine")
    (tree / "a" / "linked.png").symlink_to(outside / "2.png")
    assert len(load_imagefolder(tree).split("train")) == 7  # a library user's own links are followed
    with pytest.raises(DatasetError, match="'a/linked.png' points outside"):
        load_imagefolder(tree, confine_to=[tree])
    assert len(load_imagefolder(tree, confine_to=[tree, outside]).split("train")) == 7
    manifest = tree / "m.csv"
    manifest.write_text(f"{outside / '0.png'},x\n{outside / '1.png'},x\n")
    assert load_csv_manifest(manifest).classes == ["x"]
    with pytest.raises(DatasetError, match="row 1"):
        load_csv_manifest(manifest, confine_to=[tmp_path / "mine"])
    with pytest.raises(DatasetError, match="points outside"):
        load_dataset("digits", confine_to=[tree])  # no built-ins for the service
