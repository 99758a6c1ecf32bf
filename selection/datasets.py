"""Labelled image datasets: ImageFolder trees, CSV manifests, `.npz` arrays, the exported
VTAB layout (`train800/`, `val200/`, `test/`) and built-ins.

A dataset is a set of named splits (`train`, `val`, `test`) over one list of classes.
Images are held either as a uint8 array (N, H, W) or (N, H, W, 3), or as file paths read on
demand. Every dataset has a content fingerprint (sha256 over classes, labels and image bytes)
that keys the embedding cache.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from zooens.errors import DatasetError, TooLargeError
from zooens.selection.images import UnreadableImageError, image_from_array, open_image
from zooens.settings import get_settings

logger = logging.getLogger(__name__)

__all__ = [
    "Split",
    "ImageDataset",
    "load_dataset",
    "load_imagefolder",
    "class_order",
    "load_csv_manifest",
    "load_npz",
    "load_builtin",
    "load_exported_task",
    "write_split_npz",
    "read_npy_header",
    "SPLIT_IMAGES",
    "SPLIT_LABELS",
    "EXPORTED_SPLITS",
    "vtab_split",
    "check_class_counts",
    "validate",
    "BUILTINS",
    "IMAGE_EXTENSIONS",
    "confined",
    "DECLARATION_FILE",
    "read_declarations",
    "read_npz_headers",
    "NpyHeader",
]

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SPLIT_NAMES = ("train", "val", "test")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]
BUILTINS = ("fashion-mnist", "digits")
_MAX_LISTED = 10
_CHECK_SIDE = 32  # `_check_images` decodes at most this size (JPEG: DCT scaling), enough to read every byte


DIGEST_CHUNK = 1024
"""Images hashed at a time: the same bytes as hashing the whole array, never all of it in memory."""


@dataclass
class Split:
    """One split: images (a uint8 array or file paths) and int64 labels of the same length."""

    name: str
    images: np.ndarray | list[Path]
    labels: np.ndarray

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if isinstance(self.images, np.ndarray):
            if self.images.dtype != np.uint8 or self.images.ndim not in (3, 4):
                raise DatasetError(
                    f"Split {self.name!r}: images must be uint8 of shape (N, H, W) or (N, H, W, 3), "
                    f"got {self.images.dtype} {self.images.shape}; convert them with np.uint8."
                )
            if self.images.ndim == 4 and self.images.shape[-1] not in (1, 3):
                raise DatasetError(
                    f"Split {self.name!r}: colour images need 3 channels last, got shape {self.images.shape}."
                )
        if len(self.images) != len(self.labels):
            raise DatasetError(
                f"Split {self.name!r} has {len(self.images)} images but {len(self.labels)} labels; "
                "give exactly one label per image."
            )

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int, *, keep_grey: bool = False) -> Image.Image:
        """Image `i` as an RGB PIL image; with `keep_grey`, a grey split's image as an 'L' image (the
        same picture: its RGB conversion repeats the one channel; `selection.decoded.Decoder` resizes
        that one channel and repeats it after, a third of the work)."""
        if isinstance(self.images, np.ndarray):
            if keep_grey and (self.images.ndim == 3 or self.images.shape[-1] == 1):
                return Image.fromarray(np.ascontiguousarray(self.images[i]).reshape(self.images.shape[1:3]))
            return image_from_array(self.images[i])  # 16-bit, float and grey arrays as files are decoded
        return open_image(self.images[i])

    def subset(self, indices: np.ndarray, name: str | None = None) -> Split:
        """The images and labels at `indices`, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        images = self.images[indices] if isinstance(self.images, np.ndarray) else [self.images[i] for i in indices]
        return Split(name or self.name, images, self.labels[indices])

    def digest(self) -> str:
        """sha256 of this split's labels and image content."""
        h = hashlib.sha256()
        h.update(self.name.encode())
        h.update(self.labels.tobytes())
        if isinstance(self.images, np.ndarray):
            h.update(str(self.images.shape).encode())
            for start in range(0, len(self.images), DIGEST_CHUNK):  # bounded memory for a memory-mapped split
                h.update(np.ascontiguousarray(self.images[start : start + DIGEST_CHUNK]).tobytes())
        else:
            for path in self.images:
                h.update(Path(path).read_bytes())
        return h.hexdigest()


@dataclass
class ImageDataset:
    """Named splits over one list of classes."""

    name: str
    classes: list[str]
    splits: dict[str, Split]
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes]
        dupes = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if dupes:
            raise DatasetError(f"Dataset {self.name!r} lists class(es) {dupes} more than once; name each class once.")
        for sp in self.splits.values():
            if len(sp) and (sp.labels.min() < 0 or sp.labels.max() >= len(self.classes)):
                bad = sorted({int(v) for v in sp.labels if v < 0 or v >= len(self.classes)})
                raise DatasetError(
                    f"Split {sp.name!r} of {self.name!r} has label(s) {bad[:_MAX_LISTED]} outside the "
                    f"{len(self.classes)} classes (0..{len(self.classes) - 1}); fix the labels or list every class."
                )

    def split(self, name: str) -> Split:
        """The split called `name`; DatasetError naming the available ones otherwise."""
        try:
            return self.splits[name]
        except KeyError:
            raise DatasetError(f"Dataset {self.name!r} has no {name!r} split; it has {sorted(self.splits)}.") from None

    @cached_property
    def fingerprint(self) -> str:
        """sha256 hex over class names and every split's name, labels and image content."""
        h = hashlib.sha256()
        h.update("\x00".join(self.classes).encode())
        for name in sorted(self.splits):
            h.update(self.splits[name].digest().encode())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        """JSON-able facts: classes, images per split and per class, fingerprint."""
        counts = {
            name: {self.classes[c]: int(n) for c, n in enumerate(np.bincount(sp.labels, minlength=len(self.classes)))}
            for name, sp in self.splits.items()
        }
        return {
            "name": self.name,
            "source": self.source,
            "classes": list(self.classes),
            "num_classes": len(self.classes),
            "splits": {name: len(sp) for name, sp in self.splits.items()},
            "counts": counts,
            "fingerprint": self.fingerprint,
        }


# --------------------------------------------------------------------------------------
# Confinement: every file a dataset refers to stays inside the directories it was allowed


def _shown(path: Path, base: Path | None) -> str:
    """How messages name `path`: relative to the dataset's own folder, never a server path."""
    if base is not None:
        try:
            return Path(os.path.relpath(path, base)).as_posix()
        except ValueError:
            pass
    return Path(path).name


def _real(path: Path, shown: str) -> Path:
    """`path` with every symlink resolved; DatasetError for a path the OS cannot even look up (NUL...)."""
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"{shown!r} is not a valid path ({type(exc).__name__}); name files by plain relative paths."
        ) from None


def confined(path: Path, roots: Sequence[Path], *, shown: str) -> Path:
    """The real path of `path`, which must lie inside one of `roots` after symlinks; DatasetError otherwise.

    This is what keeps a dataset from reading server files: a manifest row, a symlinked file
    or folder, or a registered tree may only point inside the directories it was allowed.
    `shown` is how the message names the entry (relative to the dataset).
    """
    real = _real(path, shown)
    real_roots = [_real(Path(r), "data root") for r in roots]
    if not any(real == r or real.is_relative_to(r) for r in real_roots):
        raise DatasetError(
            f"{shown!r} points outside the dataset's directory (through '..', an absolute path or a symbolic "
            "link); keep every image inside the dataset's own folder."
        )
    return real


# --------------------------------------------------------------------------------------
# Validation


def _check_images(paths: Sequence[Path], base: Path | None = None) -> None:
    """Decode every file through `open_image` (bounded, reduced); report bad ones by name.

    `Image.verify` alone misses truncated JPEGs, which then fail mid-embedding; decoding
    catches them here, where the message can name the file. The pixel count is checked from
    each header before decoding, so a huge image is refused (TooLargeError, listing them)
    without costing its memory. Files are named relative to `base`.
    """
    bad: list[str] = []
    large: list[str] = []
    for path in paths:
        shown = _shown(path, base)
        try:
            open_image(path, max_side=_CHECK_SIDE, name=shown)
        except TooLargeError:
            large.append(shown)
        except UnreadableImageError as exc:
            bad.append(f"{shown} ({exc.reason})")
    if large:
        listed = "; ".join(large[:_MAX_LISTED])
        more = f"; and {len(large) - _MAX_LISTED} more" if len(large) > _MAX_LISTED else ""
        raise TooLargeError(
            f"{len(large)} image(s) have more than {get_settings().max_image_pixels:,} pixels: {listed}{more}. "
            "Downscale them or raise ZOOENS_MAX_IMAGE_PIXELS."
        )
    if bad:
        listed = "; ".join(bad[:_MAX_LISTED])
        more = f"; and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise DatasetError(
            f"{len(bad)} file(s) are not readable images: {listed}{more}. Remove or replace them "
            f"(supported: {', '.join(sorted(IMAGE_EXTENSIONS))})."
        )


def check_class_counts(name: str, counts: Mapping[str, int], *, min_per_class: int = 2, split: str = "train") -> None:
    """Check a split's images per class (`{class: count}`): some images, `min_per_class` of each class.

    Works from counts alone, so a registered dataset can be checked without reading an image.
    """
    if sum(counts.values()) == 0:
        raise DatasetError(f"Dataset {name!r} has no images in its {split!r} split; add some.")
    few = [f"{c!r} ({n})" for c, n in counts.items() if n < min_per_class]
    if few:
        raise DatasetError(
            f"Class(es) {', '.join(few[:_MAX_LISTED])} of {name!r} have fewer than {min_per_class} "
            f"{split} examples; leave-one-out kNN needs at least {min_per_class} per class. "
            "Add images to them or remove those classes."
        )


def validate(ds: ImageDataset, min_per_class: int = 2, split: str = "train") -> ImageDataset:
    """Check labels and that every class has at least `min_per_class` examples in `split`."""
    if not ds.classes:
        raise DatasetError(f"Dataset {ds.name!r} has no classes; give at least two class folders or labels.")
    for sp in ds.splits.values():
        if len(sp) and (sp.labels.min() < 0 or sp.labels.max() >= len(ds.classes)):
            raise DatasetError(
                f"Split {sp.name!r} of {ds.name!r} has labels outside 0..{len(ds.classes) - 1}; "
                "every label must name one of the classes."
            )
    counts = np.bincount(ds.split(split).labels, minlength=len(ds.classes))
    check_class_counts(
        ds.name, dict(zip(ds.classes, (int(n) for n in counts), strict=False)), min_per_class=min_per_class, split=split
    )
    return ds


# --------------------------------------------------------------------------------------
# Loaders


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def load_imagefolder(
    root: str | os.PathLike,
    *,
    name: str | None = None,
    verify: bool = True,
    confine_to: Sequence[Path] | None = None,
) -> ImageDataset:
    """`root/<class>/*` or `root/{train,val,test}/<class>/*`; classes sorted by name.

    `confine_to`: directories every file and folder of the tree must resolve into, after
    symlinks (a link pointing elsewhere is refused, naming the entry relative to `root`);
    None trusts the tree (a library user loading their own files).
    """
    root = Path(root)
    shown_root = root.name or "the dataset"
    if confine_to is not None:
        confined(root, confine_to, shown=shown_root)
    if not root.is_dir():
        raise DatasetError(f"{shown_root} is not a directory; give an ImageFolder tree (one sub-folder per class).")
    split_dirs = {s: root / s for s in SPLIT_NAMES if (root / s).is_dir()}
    if not split_dirs:
        split_dirs = {"train": root}
    elif "train" not in split_dirs:
        raise DatasetError(
            f"{shown_root} has {sorted(split_dirs)} folders but no train/; put the training images in train/."
        )
    classes = sorted({d.name for sd in split_dirs.values() for d in _class_dirs(sd)})
    if not classes:
        raise DatasetError(
            f"No class folders under {shown_root}; expected <class>/<image> (optionally under train/, val/, test/)."
        )
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, Split] = {}
    stray: list[Path] = []
    all_paths: list[Path] = []
    for split, sd in split_dirs.items():
        paths: list[Path] = []
        labels: list[int] = []
        for cdir in _class_dirs(sd):
            if confine_to is not None:
                confined(cdir, confine_to, shown=_shown(cdir, root))
            for f in sorted(cdir.rglob("*")):
                if confine_to is not None:  # rglob lists a linked folder without entering it: check it too
                    confined(f, confine_to, shown=_shown(f, root))
                if f.is_dir():
                    continue
                if _is_image(f):
                    paths.append(f)
                    labels.append(index[cdir.name])
                elif not f.name.startswith("."):
                    stray.append(f)
        splits[split] = Split(split, paths, np.array(labels, dtype=np.int64))
        all_paths += paths
    if stray:
        listed = "; ".join(_shown(p, root) for p in stray[:_MAX_LISTED])
        raise DatasetError(
            f"{len(stray)} file(s) in {shown_root} are not images by their extension: {listed}. "
            f"Remove them (supported: {', '.join(sorted(IMAGE_EXTENSIONS))})."
        )
    if not all_paths:
        raise DatasetError(f"No images found under {shown_root}; put image files in the class folders.")
    if verify:
        _check_images(all_paths, root)
    extra = read_declarations(root / DECLARATION_FILE, confine_to)
    return ImageDataset(name or root.name, classes, splits, source=str(root), extra=extra)


DECLARATION_FILE = "zooens.json"
"""A dataset's own declarations, beside its images: `{"flip_preserves_label": true}` says a left-right
mirror keeps every label (a job then flips its training images); `{"crop_preserves_label": false}`
says a small random crop may change one (positions, counts). Read into `ImageDataset.extra`."""
DECLARATION_KEYS = ("flip_preserves_label", "crop_preserves_label")
_MAX_DECLARATION_BYTES = 64 * 1024


def read_declarations(path: Path, confine_to: Sequence[Path] | None = None) -> dict[str, Any]:
    """The label-preservation declarations of `path` (a `zooens.json`), or {} when it is absent.

    Only `DECLARATION_KEYS` with true/false values are accepted, so a typo fails loudly instead of
    silently leaving flips off (or on).
    """
    if not path.is_file():
        return {}
    if confine_to is not None:
        confined(path, confine_to, shown=path.name)
    if path.stat().st_size > _MAX_DECLARATION_BYTES:
        raise DatasetError(
            f"{path.name} is larger than {_MAX_DECLARATION_BYTES // 1024} KiB; it should hold only "
            '{"flip_preserves_label": true|false, "crop_preserves_label": true|false}.'
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(
            f'{path.name} is not valid JSON ({exc}); write e.g. {{"flip_preserves_label": true}}.'
        ) from None
    if not isinstance(data, dict):
        raise DatasetError(f'{path.name} must hold a JSON object such as {{"flip_preserves_label": true}}.')
    unknown = sorted(set(data) - set(DECLARATION_KEYS))
    bad = sorted(k for k in DECLARATION_KEYS if k in data and not isinstance(data[k], bool))
    if unknown or bad:
        raise DatasetError(
            f"{path.name}: unknown key(s) {unknown} or non-boolean value(s) for {bad}; it accepts "
            f"{', '.join(DECLARATION_KEYS)}, each true or false."
        )
    return {k: data[k] for k in DECLARATION_KEYS if k in data}


def _read_manifest_rows(path: Path) -> list[list[str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise DatasetError(
            f"CSV manifest {path.name} cannot be read ({type(exc).__name__}: {exc}); save it as UTF-8 text with "
            "one `path,label[,split]` line per image."
        ) from None


def class_order(names: Iterable[str]) -> list[str]:
    """Class names in a dataset's order: sorted, numerically when every name is an integer ("2" before "10")."""
    names = set(names)
    numeric = all(n.lstrip("-").isdigit() for n in names)
    return sorted(names, key=lambda c: (int(c), c) if numeric else (0, c))


def load_csv_manifest(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    verify: bool = True,
    confine_to: Sequence[Path] | None = None,
) -> ImageDataset:
    """A CSV with columns `path,label[,split]` (header optional); paths relative to the CSV.

    `confine_to`: directories every row must resolve into after symlinks (an absolute path,
    a `../` row or a row through a link pointing elsewhere is refused, naming the row);
    None trusts the manifest (a library user loading their own files).
    """
    path = Path(path)
    if confine_to is not None:
        confined(path, confine_to, shown=path.name)
    if not path.is_file():
        raise DatasetError(f"CSV manifest {path.name} does not exist.")
    rows = _read_manifest_rows(path)
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    if not rows:
        raise DatasetError(f"CSV manifest {path.name} has no rows; write one line `path,label[,split]` per image.")
    entries: list[tuple[Path, str, str]] = []
    for lineno, row in enumerate(rows, start=1):
        if len(row) not in (2, 3):
            raise DatasetError(f"{path.name}: row {lineno} has {len(row)} columns; expected path,label[,split].")
        split = row[2].strip() if len(row) == 3 and row[2].strip() else "train"
        if split not in SPLIT_NAMES:
            raise DatasetError(f"{path.name}: row {lineno} names split {split!r}; use one of {', '.join(SPLIT_NAMES)}.")
        given = row[0].strip()
        shown = f"{path.name}: row {lineno} ({given!r})"
        if confine_to is not None:
            file = confined(path.parent / given, confine_to, shown=shown)
        else:
            file = _real(path.parent / given, shown)
        if not file.is_file():
            raise DatasetError(f"{path.name}: row {lineno} names {given!r}, which does not exist next to the manifest.")
        entries.append((file, row[1].strip(), split))
    classes = class_order({e[1] for e in entries})
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split in SPLIT_NAMES:
        chosen = [e for e in entries if e[2] == split]
        if chosen:
            splits[split] = Split(split, [e[0] for e in chosen], np.array([index[e[1]] for e in chosen]))
    if verify:
        _check_images([e[0] for e in entries], _real(path.parent, path.name))
    extra = read_declarations(path.with_name(f"{path.stem}.{DECLARATION_FILE}"), confine_to)
    return ImageDataset(name or path.stem, classes, splits, source=str(path), extra=extra)


@dataclass(frozen=True)
class NpyHeader:
    """What one `.npy` member of an `.npz` declares, read without loading its data."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        """The bytes loading this array allocates (Python ints: a forged shape cannot overflow)."""
        return math.prod(self.shape) * self.dtype.itemsize


_NPZ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    NotImplementedError,
    RuntimeError,
    struct.error,
)
"""What reading a forged or damaged `.npz` (a zip of `.npy` members) can raise."""


def _npz_error(path: Path, exc: BaseException) -> DatasetError:
    return DatasetError(
        f"{path.name} is not a readable .npz file ({type(exc).__name__}: {exc}); save it with numpy.savez "
        "or numpy.savez_compressed."
    )


def read_npz_headers(
    path: str | os.PathLike,
    *,
    max_bytes: int | None = None,
    max_members: int | None = None,
    max_ratio: float | None = None,
    ratio_floor: int = 2 * 1024 * 1024,
) -> dict[str, NpyHeader]:
    """Each member's `.npy` header (shape, dtype, order), read from the zip without loading any array.

    Refuses what `np.load` would otherwise allocate or unpickle blindly: a member that is not
    a `.npy` array, object (pickled) dtypes, more than `max_members` members
    (ZOOENS_MAX_ARCHIVE_FILES), or arrays whose shape x itemsize, alone or summed, exceed
    `max_bytes` (ZOOENS_MAX_ARCHIVE_UNCOMPRESSED_BYTES): a 1 MB file declaring a 1 GiB array
    costs nothing. With `max_ratio` (the service's guard for uploads), arrays totalling more
    than `ratio_floor` bytes may not exceed `max_ratio` times the file's size either: a
    compressed bomb is refused even under the byte limit.
    """
    path = Path(path)
    settings = get_settings()
    max_bytes = settings.max_archive_uncompressed_bytes if max_bytes is None else max_bytes
    max_members = settings.max_archive_files if max_members is None else max_members
    headers: dict[str, NpyHeader] = {}
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > max_members:
                raise TooLargeError(
                    f"{path.name} holds {len(infos):,} arrays, more than the limit of {max_members:,}; "
                    "store fewer arrays or raise ZOOENS_MAX_ARCHIVE_FILES."
                )
            for info in infos:
                if not info.filename.endswith(".npy") or info.is_dir():
                    raise DatasetError(
                        f"{path.name} holds {info.filename!r}, which is not a .npy array; save the file with "
                        "numpy.savez (arrays only)."
                    )
                key = info.filename[: -len(".npy")]
                if key in headers:
                    raise DatasetError(f"{path.name} holds the array {key!r} twice; keep one.")
                with zf.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
                    elif version == (2, 0):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise DatasetError(
                            f"{path.name}: array {key!r} uses .npy format {version}; save it with numpy.savez "
                            "(format 1.0 or 2.0)."
                        )
                if dtype.hasobject:
                    raise DatasetError(
                        f"{path.name}: array {key!r} holds Python objects (a pickle), which zooens never loads; "
                        "store numbers (uint8 images, integer labels) and class names as strings."
                    )
                header = NpyHeader(key, tuple(int(n) for n in shape), dtype, bool(fortran))
                total += header.nbytes
                if header.nbytes > max_bytes or total > max_bytes:
                    raise TooLargeError(
                        f"{path.name}: array {key!r} of shape {header.shape} and dtype {dtype} would take "
                        f"{header.nbytes:,} bytes ({total:,} with the arrays before it), more than the limit of "
                        f"{max_bytes:,}; store fewer or smaller images or raise ZOOENS_MAX_ARCHIVE_UNCOMPRESSED_BYTES."
                    )
                headers[key] = header
    except (DatasetError, TooLargeError):
        raise
    except _NPZ_ERRORS as exc:
        raise _npz_error(path, exc) from None
    if not headers:
        raise DatasetError(f"{path.name} holds no arrays; save train_images and train_labels with numpy.savez.")
    size = path.stat().st_size
    if max_ratio is not None and total > ratio_floor and total > max_ratio * size:
        raise TooLargeError(
            f"{path.name} declares arrays of {total:,} bytes in a file of {size:,} bytes, more than {max_ratio:g} "
            "times its size; this looks like a compression bomb. Store real images (numpy.savez) or split the data."
        )
    return headers


def _check_npz_images(path: Path, header: NpyHeader, max_pixels: int) -> None:
    """An images array: (N, H, W) or (N, H, W, C), each image within the pixel limit."""
    shape = header.shape
    if len(shape) not in (3, 4):
        raise DatasetError(f"{path.name}: {header.key} has shape {shape}; images must be (N, H, W) or (N, H, W, 3).")
    if header.dtype.kind not in "uifb":
        raise DatasetError(f"{path.name}: {header.key} has dtype {header.dtype}; images must be numbers (uint8).")
    height, width = shape[1], shape[2]
    if height * width > max_pixels:
        raise TooLargeError(
            f"{path.name}: {header.key} holds images of {width}x{height} pixels, more than the limit of "
            f"{max_pixels:,}; downscale them or raise ZOOENS_MAX_IMAGE_PIXELS."
        )


def load_npz(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
) -> ImageDataset:
    """An `.npz` archive of image arrays, bounded from its headers before any array is loaded.

    Keys: `{split}_images` (uint8 (N, H, W) or (N, H, W, 3); floats in [0, 1] or [0, 255] are
    converted) with `{split}_labels` (ints 0..C-1) for split in train/val/test, and an optional
    `classes` array of C names; or plain `images`/`labels`, taken as the train split.
    `max_bytes` (ZOOENS_MAX_ARCHIVE_UNCOMPRESSED_BYTES) bounds the arrays' total size and
    `max_pixels` (ZOOENS_MAX_IMAGE_PIXELS) each image, both checked on the headers
    (`read_npz_headers`); loading then allocates what the headers said, never more.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f".npz file {path.name} does not exist.")
    max_pixels = get_settings().max_image_pixels if max_pixels is None else max_pixels
    headers = read_npz_headers(path, max_bytes=max_bytes)
    keys = set(headers)
    pairs = {s: (f"{s}_images", f"{s}_labels") for s in SPLIT_NAMES if f"{s}_images" in keys}
    if not pairs and {"images", "labels"} <= keys:
        pairs = {"train": ("images", "labels")}
    if not pairs:
        raise DatasetError(
            f"{path.name} has arrays {sorted(keys)}; expected train_images/train_labels (and optionally val_, "
            "test_ and classes) or images/labels."
        )
    for ik, lk in pairs.values():
        if lk not in keys:
            raise DatasetError(f"{path.name} has {ik} but no {lk}; add the labels.")
        _check_npz_images(path, headers[ik], max_pixels)
    if "classes" in keys and len(headers["classes"].shape) != 1:
        raise DatasetError(f"{path.name}: classes has shape {headers['classes'].shape}; give a 1-D array of names.")
    try:
        with np.load(path, allow_pickle=False) as data:
            splits = {}
            for split, (ik, lk) in pairs.items():
                images = np.asarray(data[ik])
                if images.dtype != np.uint8:
                    if images.dtype.kind == "f" and images.size and images.max() <= 1.0:
                        images = (images * 255).round()
                    images = np.clip(images, 0, 255).astype(np.uint8)
                labels = np.asarray(data[lk])
                if labels.ndim != 1 or (
                    labels.dtype.kind not in "iub"
                    and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels)))
                ):
                    raise DatasetError(
                        f"{path.name}: {lk} has dtype {labels.dtype} and shape {labels.shape}; labels must be a 1-D "
                        "array of integer class indices 0..C-1 (put the class names in a `classes` array)."
                    )
                splits[split] = Split(split, images, labels.astype(np.int64))
            class_names = [str(c) for c in data["classes"]] if "classes" in keys else None
    except DatasetError:
        raise
    except _NPZ_ERRORS as exc:
        raise _npz_error(path, exc) from None
    if not any(len(sp) for sp in splits.values()):
        raise DatasetError(f"{path.name} holds no images; every *_images array is empty.")
    n_classes = int(max(sp.labels.max() for sp in splits.values() if len(sp))) + 1
    classes = class_names if class_names is not None else [str(i) for i in range(n_classes)]
    extra = read_declarations(path.with_name(f"{path.stem}.{DECLARATION_FILE}"))
    return ImageDataset(name or path.stem, classes, splits, source=str(path), extra=extra)


def _read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX array (the MNIST file format) as uint8."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    if zero != 0 or dtype != 0x08 or len(data) != 4 + 4 * ndim + int(np.prod(shape)):
        raise DatasetError(
            f"{path} is not a uint8 IDX file of shape {shape}; reinstall it with "
            "`sudo apt-get install --reinstall dataset-fashion-mnist`."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_builtin(name: str, root: str | os.PathLike | None = None) -> ImageDataset:
    """`fashion-mnist` (Debian's dataset-fashion-mnist files) or `digits` (scikit-learn)."""
    if name == "fashion-mnist":
        base = Path(root) if root else FASHION_MNIST_DIR
        files = {
            "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
            "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        }
        missing = [str(base / f) for pair in files.values() for f in pair if not (base / f).is_file()]
        if missing:
            raise DatasetError(
                f"Fashion-MNIST files are missing ({', '.join(missing)}); install them with "
                "`sudo apt-get install dataset-fashion-mnist` (or run `make setup`)."
            )
        splits = {s: Split(s, _read_idx(base / im), _read_idx(base / lb)) for s, (im, lb) in files.items()}
        return ImageDataset(
            "fashion-mnist",
            list(FASHION_MNIST_CLASSES),
            splits,
            source="fashion-mnist",
            extra={"flip_preserves_label": True},
        )  # garments, shoes and bags keep their class
    if name == "digits":
        d = load_digits()
        images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
        idx = np.arange(len(images))
        train_idx, test_idx = train_test_split(idx, test_size=1 / 3, random_state=0, stratify=d.target)
        splits = {
            "train": Split("train", images[np.sort(train_idx)], d.target[np.sort(train_idx)]),
            "test": Split("test", images[np.sort(test_idx)], d.target[np.sort(test_idx)]),
        }
        return ImageDataset(
            "digits", [str(i) for i in range(10)], splits, source="digits", extra={"flip_preserves_label": False}
        )  # a mirrored 2, 3, 7 is no digit
    raise DatasetError(f"Unknown built-in dataset {name!r}; choose from {', '.join(BUILTINS)} or give a path.")


EXPORTED_SPLITS = {"train800": "train", "val200": "val", "test": "test"}


class _Named(Protocol):
    name: str


def write_split_npz(directory: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> Path:
    """One split of the exported layout as `DIRECTORY/data.npz` (images, labels, classes).

    For splits that fit in memory (the offline suite); `zooens vtab export` streams TFDS data to
    `images.npy`/`labels.npy` instead (`SPLIT_IMAGES`, `SPLIT_LABELS`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "data.npz"
    np.savez_compressed(path, images=images.astype(np.uint8), labels=labels.astype(np.int64), classes=np.array(classes))
    return path


SPLIT_IMAGES = "images.npy"
SPLIT_LABELS = "labels.npy"
"""The streamed split layout: uint8 images (N, H, W) or (N, H, W, 3) and int64 labels (N,), read
with mmap_mode="r"; labels index the task's class list in `task.json`."""


def read_npy_header(path: Path, *, max_bytes: int | None = None) -> NpyHeader:
    """The header of one `.npy` file (shape, dtype, order), bounded as `read_npz_headers` bounds members.

    The data itself is never read here; a file shorter than its header declares is refused, so a
    memory map over it cannot fault later.
    """
    max_bytes = get_settings().max_archive_uncompressed_bytes if max_bytes is None else max_bytes
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise DatasetError(f"{path.name} uses .npy format {version}; save it with numpy.save (1.0 or 2.0).")
            offset = f.tell()
    except DatasetError:
        raise
    except _NPZ_ERRORS as exc:
        raise DatasetError(
            f"{path.name} is not a readable .npy file ({type(exc).__name__}: {exc}); "
            "save it with numpy.save or re-export the task."
        ) from None
    if dtype.hasobject:
        raise DatasetError(f"{path.name} holds Python objects (a pickle), which zooens never loads; store numbers.")
    header = NpyHeader(path.stem, tuple(int(n) for n in shape), dtype, bool(fortran))
    if header.nbytes > max_bytes:
        raise TooLargeError(
            f"{path.name}: an array of shape {header.shape} and dtype {dtype} would take {header.nbytes:,} bytes, "
            f"more than the limit of {max_bytes:,}; store fewer or smaller images or raise "
            "ZOOENS_MAX_ARCHIVE_UNCOMPRESSED_BYTES."
        )
    if path.stat().st_size < offset + header.nbytes:
        raise DatasetError(f"{path.name} is shorter than its header declares (an interrupted write?); re-export it.")
    return header


def _load_npy_split(directory: Path, name: str, confine_to: Sequence[Path] | None) -> Split:
    """`images.npy` + `labels.npy`, memory-mapped (never read whole); headers checked when confined."""
    paths = {key: directory / f for key, f in (("images", SPLIT_IMAGES), ("labels", SPLIT_LABELS))}
    if not paths["labels"].is_file():
        raise DatasetError(f"{directory.name}/ has {SPLIT_IMAGES} but no {SPLIT_LABELS}; re-export the task.")
    if confine_to is not None:  # not our own export: bounded like any uploaded array
        for path in paths.values():
            confined(path, confine_to, shown=f"{directory.name}/{path.name}")
        images_h = read_npy_header(paths["images"])
        _check_npz_images(paths["images"], images_h, get_settings().max_image_pixels)
        labels_h = read_npy_header(paths["labels"])
        if images_h.dtype != np.uint8 or labels_h.dtype.kind not in "iu" or len(labels_h.shape) != 1:
            raise DatasetError(
                f"{directory.name}/: images must be uint8 and labels 1-D integers, got {images_h.dtype} and "
                f"{labels_h.dtype} {labels_h.shape}; re-export the task."
            )
    try:
        images = np.load(paths["images"], mmap_mode="r", allow_pickle=False)
        labels = np.asarray(np.load(paths["labels"], mmap_mode="r", allow_pickle=False), dtype=np.int64)
    except _NPZ_ERRORS as exc:
        raise DatasetError(
            f"{directory.name}/ holds unreadable arrays ({type(exc).__name__}: {exc}); re-export the task."
        ) from None
    return Split(name, images, labels)


def _load_split(directory: Path, name: str, confine_to: Sequence[Path] | None = None) -> tuple[Split, list[str] | None]:
    """A split folder: `images.npy` + `labels.npy`, `data.npz`, or class sub-folders (labels by class name).

    Returns the split and its own class list, or None for the `.npy` layout, whose labels index
    the task's class list (task.json "classes").
    """
    if (directory / SPLIT_IMAGES).is_file():
        return _load_npy_split(directory, name, confine_to), None
    npz = directory / "data.npz"
    if npz.is_file():
        if confine_to is not None:  # not our own export: bounded like any uploaded .npz
            confined(npz, confine_to, shown=f"{directory.name}/data.npz")
            read_npz_headers(npz)
        data = np.load(npz, allow_pickle=False)
        labels = data["labels"]
        classes = (
            [str(c) for c in data["classes"]]
            if "classes" in data.files
            else [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]
        )
        return Split(name, data["images"], labels), classes
    ds = load_imagefolder(directory, confine_to=confine_to)
    return Split(name, ds.split("train").images, ds.split("train").labels), ds.classes


_MAX_TASK_JSON_BYTES = 4 * 1024 * 1024


def _read_task_json(path: Path, shown: str) -> dict[str, Any]:
    if path.stat().st_size > _MAX_TASK_JSON_BYTES:
        raise DatasetError(f"{shown} is larger than {_MAX_TASK_JSON_BYTES:,} bytes; it should hold a few fields.")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{shown} is not valid JSON ({exc}); re-export the task.") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{shown} must hold a JSON object; re-export the task.")
    classes = meta.get("classes")
    if classes is not None and (
        not isinstance(classes, list)
        or not all(isinstance(c, str) for c in classes)
        or len(set(classes)) != len(classes)
        or not classes
    ):
        raise DatasetError(f'{shown}: "classes" must be a non-empty list of distinct names; re-export the task.')
    return meta


def load_exported_task(
    root: str | os.PathLike, task: str | _Named, *, confine_to: Sequence[Path] | None = None
) -> ImageDataset:
    """One task of the exported layout (`ROOT/<task>/{train800,val200,test}/`) as a dataset.

    Each split folder holds `images.npy` + `labels.npy` (memory-mapped), a `data.npz`, or an
    ImageFolder tree. When `ROOT/<task>/task.json` lists "classes", that list is the label
    space, classes without examples included (VTAB-1k's 800 training examples miss some of
    SUN397's 397 classes): `.npy` labels index it and the other layouts' class names are mapped
    into it. Without it, the splits' own class lists are merged. `task` is a task name or
    anything with a `name` (a `vtab.tasks.VtabTask`); `confine_to` as for `load_imagefolder`.
    """
    name = task if isinstance(task, str) else task.name
    base = Path(root) / name
    if not base.is_dir():
        raise DatasetError(
            f"No folder {base} for VTAB task {name!r}; export it with `zooens vtab export --tasks {name} --out {root}` "
            "or generate the offline suite with `zooens vtab make-offline-suite`."
        )
    missing = [d for d in EXPORTED_SPLITS if not (base / d).is_dir()]
    if missing:
        raise DatasetError(f"{base} lacks {', '.join(missing)}/; expected train800/, val200/ and test/ folders.")
    meta_path = base / "task.json"
    extra: dict[str, Any] = {}
    if meta_path.is_file():
        if confine_to is not None:
            confined(meta_path, confine_to, shown=f"{name}/task.json")
        extra = _read_task_json(meta_path, f"{name}/task.json")
    loaded = {split: _load_split(base / folder, split, confine_to) for folder, split in EXPORTED_SPLITS.items()}
    if extra.get("classes"):
        classes = list(extra["classes"])
    else:  # one class list for all splits: the union of names, in sorted order when they differ
        lists = [
            cls if cls is not None else [str(i) for i in range(int(sp.labels.max()) + 1 if len(sp) else 0)]
            for sp, cls in loaded.values()
        ]
        longest = max(lists, key=len)
        classes = longest if all(c == longest[: len(c)] for c in lists) else sorted({c for cls in lists for c in cls})
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split, (sp, cls) in loaded.items():
        if cls is None:  # labels index the class list
            labels = sp.labels
            if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
                raise DatasetError(
                    f"{name}/{split}: labels run from {labels.min()} to {labels.max()} but the task has "
                    f"{len(classes)} classes; re-export the task."
                )
        else:
            unknown = sorted(set(cls) - set(index))
            if unknown:
                raise DatasetError(
                    f"{name}/{split} has classes {unknown[:_MAX_LISTED]} that task.json does not list; "
                    're-export the task or add them to its "classes".'
                )
            remap = np.array([index[c] for c in cls], dtype=np.int64)
            labels = remap[sp.labels] if len(sp) else sp.labels
        splits[split] = Split(split, sp.images, labels)
    return ImageDataset(f"vtab/{name}", classes, splits, source=str(base), extra=extra)


def load_dataset(
    spec: str | os.PathLike,
    data: str | os.PathLike | None = None,
    *,
    confine_to: Sequence[Path] | None = None,
) -> ImageDataset:
    """A built-in name, an ImageFolder directory, a `.npz` file or a `.csv` manifest.

    `confine_to`: directories every file of the dataset must resolve into after symlinks
    (the service passes an upload's own folder or ZOOENS_DATA_ROOTS); None trusts the
    files, and with it built-in names are allowed, which never are when confined.
    """
    if data is not None:
        return load_imagefolder(data, confine_to=confine_to)
    spec_str = str(spec)
    if spec_str in BUILTINS and confine_to is None:
        return load_builtin(spec_str)
    path = Path(spec_str).expanduser()
    shown = path.name or spec_str
    if "\x00" in spec_str:
        raise DatasetError(f"The dataset path {shown!r} holds a NUL byte; give a plain path.")
    if confine_to is not None:
        confined(path, confine_to, shown=shown)
    try:
        is_dir, is_file, exists = path.is_dir(), path.is_file(), path.exists()
    except (OSError, ValueError) as exc:
        raise DatasetError(f"The dataset path {shown!r} cannot be read ({type(exc).__name__}).") from None
    if is_dir and all((path / d).is_dir() for d in ("train800", "val200", "test")):
        return load_exported_task(path.parent, path.name, confine_to=confine_to)  # the exported VTAB layout
    if is_dir:
        return load_imagefolder(path, confine_to=confine_to)
    if is_file and path.suffix.lower() == ".npz":
        return load_npz(path)
    if is_file and path.suffix.lower() == ".csv":
        return load_csv_manifest(path, confine_to=confine_to)
    if exists:
        raise DatasetError(f"{shown} is neither a directory, an .npz nor a .csv manifest.")
    raise DatasetError(
        f"No dataset {spec_str!r}: not a built-in ({', '.join(BUILTINS)}) and no such file or directory."
    )


def _stratified_subsample(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` indices, classes in proportion to their frequency, in a seeded random order."""
    order = rng.permutation(len(labels))
    if n >= len(labels):
        return order
    # round-robin over classes in the permuted order keeps proportions close
    by_class: dict[int, list[int]] = {}
    for i in order:
        by_class.setdefault(int(labels[i]), []).append(int(i))
    quotas = {c: len(v) * n / len(labels) for c, v in by_class.items()}
    chosen = {c: int(np.floor(q)) for c, q in quotas.items()}
    rest = n - sum(chosen.values())
    for c in sorted(quotas, key=lambda c: (-(quotas[c] - chosen[c]), c))[:rest]:
        chosen[c] += 1
    return np.array([i for c, v in by_class.items() for i in v[: chosen[c]]], dtype=np.int64)


def vtab_split(
    ds: ImageDataset,
    n_train: int | None = 800,
    n_val: int | None = 200,
    seed: int = 0,
    max_test: int | None = None,
) -> ImageDataset:
    """Train/val drawn from `train` with a seeded permutation (VTAB-1k style); test as given.

    `n_train=None` keeps the train and val splits as they are (only `max_test` applies).
    `max_test` evaluates on a seeded, class-stratified subsample of the test split.
    """
    rng = np.random.default_rng(seed)
    train = ds.split("train")
    splits: dict[str, Split] = {}
    if n_train is None:
        splits = {k: v for k, v in ds.splits.items() if k != "test"}
    else:
        n_val = n_val or 0
        if n_train + n_val > len(train):
            raise DatasetError(
                f"Dataset {ds.name!r} has {len(train)} training images, fewer than the {n_train} train + "
                f"{n_val} val asked for; lower --n-train/--n-val."
            )
        perm = rng.permutation(len(train))
        splits["train"] = train.subset(np.sort(perm[:n_train]), "train")
        if n_val:
            splits["val"] = train.subset(np.sort(perm[n_train : n_train + n_val]), "val")
    if "test" in ds.splits:
        test = ds.split("test")
        if max_test is not None and max_test < len(test):
            test = test.subset(np.sort(_stratified_subsample(test.labels, max_test, rng)), "test")
        splits["test"] = test
    tag = f"{ds.name}:vtab(n_train={n_train},n_val={n_val},seed={seed},max_test={max_test})"
    return ImageDataset(tag, list(ds.classes), splits, source=ds.source, extra=dict(ds.extra))
