"""Dataset thumbnails: made once, when a dataset is registered, and served from disk.

Decoding images in a request cost memory and time per view (a page of 120 thumbnails read
120 source images, and a hostile image could cost gigabytes). Instead each registered
dataset gets, under `ZOOENS_HOME/thumbnails/<fingerprint>/`, small PNGs of the first
`PER_CLASS` images of each class of each split and an `index.json` listing them; the
dashboard serves only files listed there. The folder is keyed by content fingerprint, so
the same content registered twice shares it, and `index.json` is written last: a folder
without it is unfinished and is made again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from zooens.errors import DatasetError, NotFoundError
from zooens.selection.datasets import ImageDataset, Split, load_dataset
from zooens.selection.images import open_image
from zooens.service.dataroots import allowed_roots
from zooens.settings import Settings

logger = logging.getLogger(__name__)

__all__ = [
    "THUMB_SIZE",
    "PER_CLASS",
    "thumbnails_dir",
    "make_thumbnails",
    "place_thumbnails",
    "sample_indices",
    "thumbnail_file",
    "ensure_thumbnails",
]

THUMB_SIZE = 128
PER_CLASS = 12
INDEX = "index.json"

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def thumbnails_dir(settings: Settings, fingerprint: str) -> Path:
    """Where the thumbnails of the content with this fingerprint live."""
    if not fingerprint or not all(c in "0123456789abcdef" for c in fingerprint):
        raise NotFoundError(f"{fingerprint!r} is not a dataset fingerprint (hex sha256); list datasets to find it.")
    return settings.home / "thumbnails" / fingerprint


def _thumbnail(split: Split, index: int) -> Image.Image:
    """Image `index` with its longer side at most THUMB_SIZE: tiny images enlarged by a whole
    factor with nearest neighbour (pixel art stays crisp), larger ones reduced with Lanczos."""
    if isinstance(split.images, np.ndarray):
        img = split.image(index)
    else:
        img = open_image(split.images[index], max_side=THUMB_SIZE, name=f"{split.name} image {index}")
    longer = max(img.size)
    if longer > THUMB_SIZE:
        scale = THUMB_SIZE / longer
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        return img.resize(size, Image.LANCZOS)
    factor = THUMB_SIZE // longer
    if factor > 1:
        return img.resize((img.width * factor, img.height * factor), Image.NEAREST)
    return img


def make_thumbnails(ds: ImageDataset, dest: Path) -> None:
    """Write `dest/<split>/<index>.png` for the first PER_CLASS images of each class of each
    split, then `dest/index.json` (`{split: [[indices of class 0], ...]}`), atomically, last."""
    index: dict[str, list[list[int]]] = {}
    for name, split in ds.splits.items():
        labels = np.asarray(split.labels)
        chosen = [np.flatnonzero(labels == c)[:PER_CLASS].tolist() for c in range(len(ds.classes))]
        folder = dest / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in sorted(i for per_class in chosen for i in per_class):
            _thumbnail(split, i).save(folder / f"{i}.png", format="PNG")
        index[name] = chosen
    tmp = dest / f".{INDEX}.{uuid.uuid4().hex}"
    tmp.write_text(json.dumps(index))
    os.replace(tmp, dest / INDEX)


def place_thumbnails(built: Path, dest: Path) -> Path:
    """Move a finished thumbnails folder `built` to `dest` unless `dest` is already finished.

    A rename is atomic: readers see either no folder or a complete one. When another
    registration of the same content got there first, `built` is dropped.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if (dest / INDEX).is_file():
        shutil.rmtree(built, ignore_errors=True)
        return dest
    if dest.exists():  # unfinished (a crash while making it in place): replace it
        shutil.rmtree(dest, ignore_errors=True)
    try:
        os.rename(built, dest)
    except OSError:
        if not (dest / INDEX).is_file():
            raise
        shutil.rmtree(built, ignore_errors=True)
    return dest


def _build(ds: ImageDataset, dest: Path) -> Path:
    """Make the thumbnails beside `dest` and move them into place (see `place_thumbnails`)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    built = dest.parent / f".tmp-{dest.name}-{uuid.uuid4().hex}"
    try:
        make_thumbnails(ds, built)
        return place_thumbnails(built, dest)
    finally:
        shutil.rmtree(built, ignore_errors=True)


def sample_indices(dest: Path) -> dict[str, list[list[int]]] | None:
    """The indices with a thumbnail, per split and class; None when not made yet."""
    try:
        data = json.loads((dest / INDEX).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        logger.warning("unreadable thumbnails index in %s; it will be made again", dest.name)
        return None
    return {str(k): [[int(i) for i in per_class] for per_class in v] for k, v in data.items()}


def thumbnail_file(dest: Path, split: str, index: int) -> Path:
    """The PNG of image `index` of `split`; NotFoundError unless it is a listed sample.

    The path is built only from the split name and index found in `index.json`, never from
    the request's text.
    """
    samples = sample_indices(dest)
    if samples is None:
        raise NotFoundError("This dataset has no thumbnails yet; open its page to make them.")
    listed = next((name for name in samples if name == split), None)
    if listed is None:
        raise NotFoundError(f"No split {split!r} with thumbnails; the dataset has {sorted(samples)}.")
    found = next((i for per_class in samples[listed] for i in per_class if i == index), None)
    if found is None:
        raise NotFoundError(
            f"Image {index} of split {listed!r} has no thumbnail; only the first {PER_CLASS} images of each class do."
        )
    path = dest / listed / f"{int(found)}.png"
    if not path.is_file():
        raise NotFoundError(
            f"The thumbnail of image {found} of split {listed!r} is missing; register the dataset again to make it."
        )
    return path


def _lock(fingerprint: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(fingerprint, threading.Lock())


def ensure_thumbnails(settings: Settings, source: str, fingerprint: str) -> Path:
    """The thumbnails folder of a registered dataset, made now (from `source`) if missing.

    For datasets registered before thumbnails existed. The dataset is loaded confined to its
    own stored folder (or ZOOENS_DATA_ROOTS) and must still have `fingerprint`. Safe when two
    threads or processes ask at once: one makes them, and the folder appears whole.
    """
    dest = thumbnails_dir(settings, fingerprint)
    if (dest / INDEX).is_file():
        return dest
    with _lock(fingerprint):
        if (dest / INDEX).is_file():
            return dest
        ds = load_dataset(source, confine_to=allowed_roots(settings, source))
        if ds.fingerprint != fingerprint:
            raise DatasetError(
                "The dataset's files changed since it was registered (its fingerprint differs); register it again."
            )
        return _build(ds, dest)
