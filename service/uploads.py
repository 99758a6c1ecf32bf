"""Receiving datasets: size limits, safe archive extraction, validation, all-or-nothing storage.

An upload is streamed to a staging directory (`.upload-*`) inside `ZOOENS_HOME/datasets/`;
archives are extracted entry by entry with running totals (entries, expanded bytes, the
expansion ratio), so a bomb writes at most the limit whatever its headers declare; the
dataset is loaded confined to its own extracted folder (no manifest row, link or `..` may
reach outside), validated, and its thumbnails made there; only then is it moved into place
and its row inserted. Whatever fails, the staging directory is removed and no row is
written. Content uploaded before (the same fingerprint) is not stored twice: the earlier
dataset is returned and the staged copy removed. Messages name archive entries relative to the
archive, never a server path.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import time
import unicodedata
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sqlalchemy.orm import Session

from zooens.errors import DatasetError, TooLargeError
from zooens.selection.datasets import ImageDataset, confined, load_dataset, read_npz_headers, validate
from zooens.service.db.models import Dataset
from zooens.service.jobs import register_dataset
from zooens.service.registry.datasets import MAX_NAME_LENGTH, check_dataset_name, find_uploaded_dataset
from zooens.service.thumbnails import make_thumbnails, place_thumbnails, thumbnails_dir
from zooens.settings import Settings

logger = logging.getLogger(__name__)

__all__ = [
    "ACCEPTED",
    "MAX_RATIO",
    "RATIO_FLOOR",
    "STAGING_PREFIX",
    "clean_staging",
    "dataset_root",
    "datasets_root",
    "extract_zip",
    "ingest_upload",
    "refuse_links",
    "register_path",
    "save_stream",
    "staging",
    "store_upload",
]

CHUNK = 1 << 20
READ_CHUNK = 1 << 16
"""Archive entries are read in small pieces so the ratio guard sees a bomb after a few MB."""
ACCEPTED = (".zip", ".npz", ".csv")
STAGING_PREFIX = ".upload-"
MAX_RATIO = 100
"""Most an entry, or the archive, may expand over its compressed size (past RATIO_FLOOR)."""
RATIO_FLOOR = 2 * 1024 * 1024
"""Expanded bytes below which the ratio is not checked (small, very compressible files are fine)."""
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    KeyError,
    IndexError,
)
"""What reading a forged or damaged zip can raise (bad CRC, truncation, bad headers, bad methods)."""
_MAX_COMPONENT = 255
_MAX_ENTRY_NAME = 1024


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


# --------------------------------------------------------------------------------------
# Names


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in text)


def _default_name(stem: str) -> str:
    """A dataset name from a file or folder name: control characters dropped, shortened."""
    cleaned = "".join(ch for ch in stem if unicodedata.category(ch) not in ("Cc", "Cs")).strip()
    return cleaned[:MAX_NAME_LENGTH] or "dataset"


def _safe_member(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The entry's relative path; None for folders and metadata; DatasetError for anything unsafe."""
    raw = info.filename
    if _has_control(raw):
        raise DatasetError(f"The archive entry {raw!r} has control characters in its name; rename it.")
    if len(raw) > _MAX_ENTRY_NAME:
        raise DatasetError(f"The archive entry {raw[:60]!r}... has a name longer than {_MAX_ENTRY_NAME}; shorten it.")
    name = raw.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or path.is_absolute():
        raise DatasetError(f"The archive entry {raw!r} has an absolute path; archive relative paths only.")
    if ".." in path.parts:
        raise DatasetError(f"The archive entry {raw!r} points outside the archive ('..'); remove it.")
    if any(len(part.encode()) > _MAX_COMPONENT for part in path.parts):
        raise DatasetError(
            f"The archive entry {raw[:60]!r}... has a file or folder name over {_MAX_COMPONENT} bytes; shorten it."
        )
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DatasetError(f"The archive entry {raw!r} is a symbolic link; archive plain files only.")
    if info.flag_bits & 0x1:
        raise DatasetError(f"The archive entry {raw!r} is encrypted; upload an archive without a password.")
    if info.compress_type not in _ZIP_METHODS:
        raise DatasetError(
            f"The archive entry {raw!r} uses compression method {info.compress_type}, which zooens cannot read; "
            "zip it with the usual deflate method."
        )
    if info.is_dir() or path.name.startswith(".") or "__MACOSX" in path.parts:
        return None
    return path


def _plan(infos: list[zipfile.ZipInfo]) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The files to extract, every name checked; duplicates and file/folder clashes refused."""
    files: dict[PurePosixPath, zipfile.ZipInfo] = {}
    folders: set[PurePosixPath] = set()
    for info in infos:
        rel = _safe_member(info)
        if info.is_dir():
            folders.add(PurePosixPath(info.filename.replace("\\", "/").rstrip("/")))
        if rel is None:
            continue
        if rel in files:
            raise DatasetError(f"The archive holds {info.filename!r} twice; keep one copy.")
        files[rel] = info
        folders.update(rel.parents)
    clash = sorted(str(p) for p in files if p in folders)
    if clash:
        raise DatasetError(f"The archive holds {clash[0]!r} both as a file and as a folder; rename one of them.")
    return [(info, rel) for rel, info in files.items()]


class _CountingFile:
    """A read-only file that counts the bytes read from it: what the ratio guard compares with."""

    def __init__(self, path: Path) -> None:
        self._f = path.open("rb")
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.read_bytes += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self._f.close()


def _too_expanded(name: str, written: int, compressed: int) -> TooLargeError:
    return TooLargeError(
        f"The archive entry {name!r} expands more than {MAX_RATIO} times its compressed size "
        f"({written:,} bytes from {compressed:,}); this looks like a zip bomb. Zip the images without "
        "padding or upload them uncompressed."
    )


def extract_zip(archive: Path, dest: Path, settings: Settings) -> None:
    """Extract `archive` into `dest`, bounded by running totals, never by what the headers declare.

    Refused (TooLargeError) as soon as: more entries than ZOOENS_MAX_ARCHIVE_FILES; more
    bytes written than ZOOENS_MAX_ARCHIVE_UNCOMPRESSED_BYTES (counted while writing, so at
    most the limit is ever on disk); an entry or the whole archive, past RATIO_FLOOR,
    expanding more than MAX_RATIO times the bytes read from the archive so far. Every
    malformed archive (bad CRC, truncated, encrypted, unknown method, unsafe or duplicate
    names, empty) is a DatasetError. The caller removes `dest` on failure.
    """
    limit = settings.max_archive_uncompressed_bytes
    source = _CountingFile(archive)
    try:
        try:
            zf = zipfile.ZipFile(source)  # type: ignore[arg-type]
        except _ZIP_ERRORS:
            raise DatasetError("The upload is not a valid zip archive; zip the dataset folder and try again.") from None
        with zf:
            infos = zf.infolist()
            if len(infos) > settings.max_archive_files:
                raise TooLargeError(
                    f"The archive has {len(infos):,} entries, more than the limit of {settings.max_archive_files:,}; "
                    "upload fewer files or raise ZOOENS_MAX_ARCHIVE_FILES."
                )
            declared = sum(i.file_size for i in infos)
            if declared > limit:
                raise TooLargeError(
                    f"The archive would expand to {declared:,} bytes, more than the limit of {limit:,}; upload "
                    "less or raise ZOOENS_MAX_ARCHIVE_UNCOMPRESSED_BYTES."
                )
            members = _plan(infos)
            if not members:
                raise DatasetError("The archive is empty; zip the dataset's class folders with their images.")
            written = 0
            for info, rel in members:
                target = dest.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, target.open("xb") as out:
                        start = source.read_bytes
                        entry = 0
                        while chunk := src.read(READ_CHUNK):
                            entry += len(chunk)
                            written += len(chunk)
                            if written > limit:
                                raise TooLargeError(
                                    f"The archive expands to more than the limit of {limit:,} bytes; upload less or "
                                    "raise ZOOENS_MAX_ARCHIVE_UNCOMPRESSED_BYTES."
                                )
                            consumed = max(source.read_bytes - start, 1)
                            if entry > RATIO_FLOOR and entry > MAX_RATIO * consumed:
                                raise _too_expanded(info.filename, entry, consumed)
                            if written > RATIO_FLOOR and written > MAX_RATIO * max(source.read_bytes, 1):
                                raise _too_expanded(info.filename, written, source.read_bytes)
                            out.write(chunk)
                except (TooLargeError, DatasetError):
                    raise
                except FileExistsError:
                    raise DatasetError(f"The archive holds {info.filename!r} twice; keep one copy.") from None
                except _ZIP_ERRORS as exc:
                    raise DatasetError(
                        f"The archive entry {info.filename!r} cannot be read ({type(exc).__name__}: {exc}); the "
                        "archive is damaged: zip the dataset again."
                    ) from None
    finally:
        source.close()


def refuse_links(folder: Path) -> None:
    """DatasetError if anything under `folder` is a symbolic link or not a plain file or folder.

    Extraction never creates links, so this is the second line: checked again after it.
    """
    for current, dirs, files in os.walk(folder, followlinks=False):
        for entry in dirs + files:
            path = Path(current) / entry
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                shown = path.relative_to(folder).as_posix()
                raise DatasetError(
                    f"The archive entry {shown!r} is a link or a special file; archive plain files only."
                )


def dataset_root(extracted: Path) -> Path:
    """The folder holding the class folders (or a CSV manifest): unwrap one lone top folder."""
    entries = [p for p in extracted.iterdir() if not p.name.startswith(".")]
    csvs = [p for p in entries if p.suffix.lower() == ".csv" and p.is_file()]
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


# --------------------------------------------------------------------------------------
# Staging


@contextmanager
def staging(settings: Settings) -> Iterator[Path]:
    """A temporary directory beside the datasets; removed unless it was moved away."""
    tmp = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=datasets_root(settings)))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _newest_mtime(folder: Path) -> float:
    newest = folder.lstat().st_mtime
    for current, dirs, files in os.walk(folder, followlinks=False):
        for entry in dirs + files:
            try:
                newest = max(newest, (Path(current) / entry).lstat().st_mtime)
            except OSError:
                continue
    return newest


def clean_staging(settings: Settings, *, min_age_seconds: float = 900.0) -> int:
    """Remove the staging directories (`.upload-*`) a crash left under the datasets; how many.

    Called when the app or a worker starts. A directory touched in the last
    `min_age_seconds` is kept: it may be an upload another process is receiving right now.
    """
    root = settings.home / "datasets"
    if not root.is_dir():
        return 0
    now = time.time()
    removed = 0
    for path in root.iterdir():
        if not path.name.startswith(STAGING_PREFIX) or path.is_symlink() or not path.is_dir():
            continue
        try:
            if now - _newest_mtime(path) < min_age_seconds:
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed += 1
            logger.info("removed the staging directory %s left by an interrupted upload", path.name)
    return removed


def _without(text: str, *prefixes: Path) -> str:
    """`text` with server paths cut: entries are named relative to the upload."""
    for prefix in prefixes:
        for form in {str(prefix), os.path.realpath(prefix)}:
            text = text.replace(form + os.sep, "").replace(form, "the upload")
    return text


def _stage_thumbnails(ds: ImageDataset, tmp: Path, settings: Settings) -> Path | None:
    """Thumbnails made in the staging directory; None when this content already has them."""
    if (thumbnails_dir(settings, ds.fingerprint) / "index.json").is_file():
        return None
    built = tmp / "thumbnails"
    make_thumbnails(ds, built)
    return built


def ingest_upload(
    s: Session, stream: BinaryIO, filename: str, settings: Settings, *, name: str | None = None
) -> Dataset:
    """Store an uploaded dataset (zip, npz or csv), its thumbnails, and its row; all or nothing.

    Content uploaded before (same fingerprint) is not stored again: the earlier dataset is returned.
    """
    return store_upload(s, stream, filename, settings, name=name)[0]


def store_upload(
    s: Session, stream: BinaryIO, filename: str, settings: Settings, *, name: str | None = None
) -> tuple[Dataset, bool]:
    """`ingest_upload`, and whether a new dataset was stored (False: the same content was uploaded
    before; its dataset is returned as it is, and this upload's staged files are removed)."""

    suffix = Path((filename or "").replace("\x00", "")).suffix.lower()
    if suffix not in ACCEPTED:
        raise DatasetError(
            f"Cannot read {filename!r}: upload a .zip of an ImageFolder tree (or of a CSV manifest with its "
            "images) or an .npz file."
        )
    stem = PurePosixPath((filename or "").replace("\\", "/")).stem
    name = check_dataset_name(name) if name is not None else _default_name(stem)
    if suffix == ".csv":
        raise DatasetError("A CSV manifest needs its images: upload a .zip holding the manifest and the images.")
    final = datasets_root(settings) / uuid.uuid4().hex
    with staging(settings) as tmp:
        content = tmp / "content"
        try:
            raw = tmp / f"upload{suffix}"
            save_stream(stream, raw, settings.max_upload_bytes)
            content.mkdir()
            if suffix == ".zip":
                extract_zip(raw, content, settings)
                raw.unlink()
                refuse_links(content)
                root = dataset_root(content)
            else:
                root = content / f"data{suffix}"
                raw.rename(root)
                read_npz_headers(root, max_ratio=MAX_RATIO, ratio_floor=RATIO_FLOOR)
            ds = load_dataset(root, confine_to=[content])
            validate(ds, min_per_class=0)  # labels; small classes are the job's call (small_classes)
            existing = find_uploaded_dataset(s, ds.fingerprint)  # reads every file now, before they move
            if existing is not None:
                logger.info("upload %r holds the content of dataset %s; returning it", filename, existing.id)
                return existing, False
            thumbs = _stage_thumbnails(ds, tmp, settings)
        except (DatasetError, TooLargeError) as exc:
            raise type(exc)(_without(str(exc), content, tmp)) from None
        shutil.move(str(content), str(final))
        source = final / root.relative_to(content) if root != content else final
        try:
            row = register_dataset(s, str(source), ds, name=name)
            row.storage_path = str(final)
            s.flush()
            if thumbs is not None:
                place_thumbnails(thumbs, thumbnails_dir(settings, ds.fingerprint))
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
    return row, True


def register_path(s: Session, path: str, settings: Settings, *, name: str | None = None) -> Dataset:
    """Record a dataset already on the server, only under the configured ZOOENS_DATA_ROOTS.

    The path, and every file of the dataset, must resolve inside a data root after symlinks
    (a link inside a root pointing elsewhere is refused). Its thumbnails are made before the
    row is written; a failure leaves neither.
    """
    if "\x00" in path:
        raise DatasetError("The path holds a NUL byte; give a plain path under ZOOENS_DATA_ROOTS.")
    name = check_dataset_name(name) if name is not None else None
    roots = [Path(r) for r in settings.data_roots]
    if not roots:
        raise DatasetError(
            f"{path} is not under an allowed data root: this server has none (ZOOENS_DATA_ROOTS); ask its operator "
            "to set one, or upload the dataset."
        )
    try:
        target = confined(Path(path), roots, shown=path)
    except DatasetError:  # the roots are not named: an API client must not learn the server's folders
        raise DatasetError(
            f"{path} is not under an allowed data root (ZOOENS_DATA_ROOTS) once its links are followed; ask the "
            "server's operator which folders are allowed, or upload the dataset."
        ) from None
    ds = load_dataset(target, confine_to=roots)
    validate(ds, min_per_class=0)  # labels; small classes are the job's call (small_classes)
    dest = thumbnails_dir(settings, ds.fingerprint)
    made = not (dest / "index.json").is_file()
    built = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex}"
    try:
        if made:
            make_thumbnails(ds, built)
        row = register_dataset(s, str(target), ds, name=name or _default_name(target.stem))
        if made:
            place_thumbnails(built, dest)
    finally:
        shutil.rmtree(built, ignore_errors=True)
    return row
