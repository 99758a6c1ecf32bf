"""Receiving datasets: size limits, safe archive extraction, validation, all-or-nothing storage.

An upload is streamed to a temporary directory inside `ZOOENS_HOME/datasets/`; archives are
checked entry by entry (no absolute paths, no `..`, no links, limited file count and size);
the dataset is loaded and validated there; only then is it moved into place and its row
inserted. Whatever fails, the temporary directory is removed and no row is written.
"""
from __future__ import annotations

import logging
import shutil
import stat
import tempfile
import uuid
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from sqlalchemy.orm import Session

from zooens.errors import DatasetError, TooLargeError
from zooens.selection.datasets import load_dataset, validate
from zooens.service.jobs import register_dataset
from zooens.settings import Settings

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
ACCEPTED = (".zip", ".npz", ".csv")


def datasets_root(settings: Settings) -> Path:
    root = settings.home / "datasets"
    root.mkdir(parents=True, exist_ok=True)
    return root


def save_stream(stream: BinaryIO, dest: Path, limit: int) -> int:
    """Copy `stream` to `dest`, refusing more than `limit` bytes."""
    total = 0
    with dest.open("wb") as out:
        while chunk := stream.read(CHUNK):
            total += len(chunk)
            if total > limit:
                raise TooLargeError(
                    f"The upload is larger than the limit of {limit:,} bytes; upload a smaller file or raise "
                    "ZOOENS_MAX_UPLOAD_BYTES."
                )
            out.write(chunk)
    return total


def _safe_member(info: zipfile.ZipInfo) -> PurePosixPath | None:
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or path.is_absolute():
        raise DatasetError(f"The archive entry {info.filename!r} has an absolute path; archive relative paths only.")
    if ".." in path.parts:
        raise DatasetError(f"The archive entry {info.filename!r} points outside the archive ('..'); remove it.")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DatasetError(f"The archive entry {info.filename!r} is a symbolic link; archive plain files only.")
    if info.is_dir() or path.name.startswith(".") or "__MACOSX" in path.parts:
        return None
    return path


def extract_zip(archive: Path, dest: Path, settings: Settings) -> None:
    """Extract with every check done first on the declared sizes, and again while writing."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DatasetError("The upload is not a valid zip archive; zip the dataset folder and try again.") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > settings.max_archive_files:
            raise TooLargeError(
                f"The archive has {len(infos):,} entries, more than the limit of {settings.max_archive_files:,}."
            )
        declared = sum(i.file_size for i in infos)
        if declared > settings.max_archive_uncompressed_bytes:
            raise TooLargeError(
                f"The archive would expand to {declared:,} bytes, more than the limit of "
                f"{settings.max_archive_uncompressed_bytes:,}."
            )
        members = [(info, _safe_member(info)) for info in infos]
        written = 0
        for info, rel in members:
            if rel is None:
                continue
            target = dest.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                while chunk := src.read(CHUNK):
                    written += len(chunk)
                    if written > settings.max_archive_uncompressed_bytes:
                        raise TooLargeError(
                            "The archive expands to more than the limit of "
                            f"{settings.max_archive_uncompressed_bytes:,} bytes."
                        )
                    out.write(chunk)


def dataset_root(extracted: Path) -> Path:
    """The folder holding the class folders (or a CSV manifest): unwrap one lone top folder."""
    entries = [p for p in extracted.iterdir() if not p.name.startswith(".")]
    csvs = [p for p in entries if p.suffix.lower() == ".csv"]
    if len(csvs) == 1:
        return csvs[0]
    dirs = [p for p in entries if p.is_dir()]
    if len(entries) == 1 and len(dirs) == 1:
        inner = dataset_root(dirs[0])
        return inner
    if not dirs:
        raise DatasetError(
            "The archive holds no folders; expected <class>/<image> folders (optionally under train/, val/, "
            "test/) or a CSV manifest with its images."
        )
    return extracted


@contextmanager
def staging(settings: Settings) -> Iterator[Path]:
    """A temporary directory beside the datasets; removed unless it was moved away."""
    tmp = Path(tempfile.mkdtemp(prefix=".upload-", dir=datasets_root(settings)))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ingest_upload(
    s: Session, stream: BinaryIO, filename: str, settings: Settings, *, name: str | None = None
):
    """Store an uploaded dataset (zip, npz or csv) and record it; all or nothing."""

    suffix = Path(filename or "").suffix.lower()
    if suffix not in ACCEPTED:
        raise DatasetError(
            f"Cannot read {filename!r}: upload a .zip of an ImageFolder tree (or of a CSV manifest with its "
            "images) or an .npz file."
        )
    final = datasets_root(settings) / uuid.uuid4().hex
    with staging(settings) as tmp:
        raw = tmp / f"upload{suffix}"
        save_stream(stream, raw, settings.max_upload_bytes)
        content = tmp / "content"
        content.mkdir()
        if suffix == ".zip":
            extract_zip(raw, content, settings)
            raw.unlink()
            root = dataset_root(content)
        elif suffix == ".csv":
            raise DatasetError("A CSV manifest needs its images: upload a .zip holding the manifest and the images.")
        else:
            root = content / f"data{suffix}"
            raw.rename(root)
        ds = load_dataset(root)
        validate(ds, min_per_class=2)
        ds.fingerprint  # read every file now, before they move
        shutil.move(str(content), str(final))
        source = final / root.relative_to(content) if root != content else final
        try:
            row = register_dataset(s, str(source), ds, name=name or Path(filename).stem)
            row.storage_path = str(final)
            s.flush()
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
    return row


def register_path(s: Session, path: str, settings: Settings, *, name: str | None = None):
    """Record a dataset already on the server, only under the configured ZOOENS_DATA_ROOTS."""

    roots = [Path(r).resolve() for r in settings.data_roots]
    target = Path(path).resolve()
    if not roots or not any(target == r or r in target.parents for r in roots):
        allowed = ", ".join(str(r) for r in roots) or "none configured"
        raise DatasetError(
            f"{path} is not under an allowed data root ({allowed}); set ZOOENS_DATA_ROOTS or upload the dataset."
        )
    ds = load_dataset(target)
    validate(ds, min_per_class=2)
    return register_dataset(s, str(target), ds, name=name or target.stem)
