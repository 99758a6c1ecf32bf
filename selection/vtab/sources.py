"""Where VTAB data comes from: the exported layout (no TensorFlow needed) or TFDS.

Exported layout: `DIR/<task>/{train800,val200,test}/`, each `images.npy` + `labels.npy` (what
`export_task` writes), a `data.npz` with `images`, `labels` and optionally `classes`, or an
ImageFolder tree; `DIR/<task>/task.json` names the task, its group and source and lists its
classes. Reading it is a dataset format like the others, so it lives in `selection.datasets`
(re-exported here); `export_task` writes that layout from prepared TFDS data, so data prepared
once runs anywhere.

Export, and where it follows or leaves google-research/task_adaptation:
- Streamed: each split is written example by example into a memory-mapped `images.npy`
  (uint8) and `labels.npy`; no split is ever held in memory (Retinopathy's test split is
  ~43,000 images). Everything is written in a hidden folder renamed into place at the end, so
  an interrupted export leaves no half task and a re-export replaces the old one whole.
- Size: a task whose images all have one shape no larger than 224 on each side keeps its
  native resolution (dSprites 64, sNORB 96, SVHN/CIFAR 32, EuroSAT 64, PCam 96); variable-size
  or larger images (Caltech101, DTD, Flowers, Pets, SUN397, RESISC45 256, Retinopathy, CLEVR
  480x320, DMLab 480x360, KITTI) are resized straight to 224x224 with TensorFlow's bilinear
  `tf.image.resize`, the reference's own input op: no crop, aspect ratio not kept. The only
  difference is that we round to uint8 where the reference feeds the float result on.
- Pixels are uint8 0-255 everywhere: dSprites' 0/1 pixels are multiplied by 255 as the
  reference does; grey images (dSprites, sNORB) are stored (N, H, W) where the reference tiles
  them to three equal channels (zooens converts grey to RGB when it reads an image).
- Labels are derived with `selection.vtab.labels` (the reference's rules, in NumPy) and checked
  to lie in 0..num_classes-1; task.json lists every class name (TFDS's ClassLabel names where
  the label is a feature as given, else the index), so classes without a 1k example are kept.
- Versions: the table's pins are the reference's (KITTI `3.1.0`). A pin the installed
  tensorflow-datasets cannot build is read from data prepared on disk at that version (by an
  older tensorflow-datasets) if there is any; else export stops with a ConfigError saying what
  to do. The reference's Pets `3.*.*` is such a pin: tensorflow-datasets 4.9 builds only 4.0.0
  (same images and splits, corrupt images fixed, new download URL), which `version=` selects.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from zooens.errors import ConfigError, DatasetError
from zooens.selection.datasets import (
    EXPORTED_SPLITS,
    SPLIT_IMAGES,
    SPLIT_LABELS,
    ImageDataset,
    Split,
    load_exported_task,
    write_split_npz,
)
from zooens.selection.vtab import labels as label_fns
from zooens.selection.vtab.tasks import VtabTask

logger = logging.getLogger(__name__)

__all__ = [
    "EXPORTED_SPLITS",
    "load_exported_task",
    "load_tfds_task",
    "export_task",
    "write_split_npz",
    "task_classes",
    "export_size",
    "EXPORT_SIZE",
]

EXPORT_SIZE = 224
"""The reference's evaluation resolution: images larger than this, or of varying size, are resized to it."""

_SPLIT_EXPRS = (("train800", "train800"), ("val200", "val200"), ("test", "test_split"))


def _derive_label(task: VtabTask, example: dict) -> int:
    fn = task.label
    if fn == "given":
        return int(example[task.label_feature])
    if fn == "clevr_count":
        return label_fns.clevr_count(len(example["objects"]["size"]))
    if fn == "clevr_distance":
        return label_fns.clevr_distance(example["objects"]["pixel_coords"])
    if fn == "kitti_distance":
        return label_fns.kitti_distance(example["objects"]["type"], example["objects"]["location"])
    if fn == "dsprites_location":
        return label_fns.dsprites_location(example[task.label_feature])
    if fn == "dsprites_orientation":
        return label_fns.dsprites_orientation(example[task.label_feature])
    raise ConfigError(f"Unknown label derivation {fn!r} of task {task.name}.")


def _tfds():
    """tensorflow_datasets, imported quietly (TensorFlow's C++ and absl logs off, no progress bars)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and importlib.util.find_spec("triton") is not None:
        # triton (torch's compiler, loaded lazily by torch) segfaults when it is first imported after
        # TensorFlow (their bundled native libraries clash); loaded first, both work in one process
        import triton  # noqa: F401
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError:
        raise ConfigError(
            "Reading VTAB from TFDS needs tensorflow-datasets: `pip install 'zooens[vtab]'`, prepare the data "
            "with `tfds build`, or use the exported layout (`zooens vtab export` on a machine that has it)."
        ) from None
    logging.getLogger("absl").setLevel(logging.ERROR)  # TFDS's absl warnings (deprecations, mock notes)
    tf.get_logger().setLevel(logging.ERROR)
    try:  # export only reads data: keep TensorFlow off any GPU that torch may use
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError):  # already initialised: nothing to change
        pass
    tfds.disable_progress_bar()
    return tfds


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _build_hint(task: VtabTask, data_dir: str | None, version: str) -> str:
    where = f" --data_dir {data_dir}" if data_dir else ""
    return f"`tfds build {task.builder}:{version}{where}`"


def _prepared_on_disk(tfds, task: VtabTask, data_dir: str | None, version: str):
    """A read-only builder over data prepared at a version matching `version`, if any is on disk."""
    root = Path(data_dir) if data_dir else Path(tfds.core.constants.DATA_DIR).expanduser()
    folder = root.joinpath(*task.builder.split("/"))
    if not folder.is_dir():
        return None
    found = sorted(
        (d for d in folder.iterdir() if (d / "dataset_info.json").is_file()), key=lambda d: d.name, reverse=True
    )
    for d in found:
        try:
            if tfds.core.Version(d.name).match(version):
                return tfds.builder_from_directory(str(d))
        except ValueError:  # not a version folder
            continue
    return None


def _buildable_versions(tfds, task: VtabTask) -> list[str]:
    """The versions of the task's builder (or builder config) the installed tensorflow-datasets can build."""
    name, _, config = task.builder.partition("/")
    cls = tfds.builder_cls(name)
    if config:
        versions = [getattr(c, "version", None) for c in getattr(cls, "BUILDER_CONFIGS", []) if c.name == config]
        versions += [
            v
            for c in getattr(cls, "BUILDER_CONFIGS", [])
            if c.name == config
            for v in (getattr(c, "supported_versions", None) or [])
        ]
    else:
        versions = [cls.VERSION, *(getattr(cls, "SUPPORTED_VERSIONS", None) or [])]
    return list(dict.fromkeys(str(v) for v in versions if v is not None))


def _builder(task: VtabTask, data_dir: str | None, version: str | None = None):
    """The TFDS builder of `task` at its pinned version (or `version`), errors as one-line ConfigErrors."""
    tfds = _tfds()
    version = version or task.version
    spec = f"{task.builder}:{version}"
    try:
        return tfds.builder(spec, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as exc:
        raise ConfigError(
            f"Task {task.name}: the installed tensorflow-datasets has no builder {task.builder} "
            f"({_first_line(exc)}); upgrade it with `pip install -U 'zooens[vtab]'`."
        ) from None
    except (AssertionError, ValueError) as exc:
        if "version" not in str(exc).lower():
            raise ConfigError(f"Task {task.name}: TFDS cannot open {spec} ({_first_line(exc)}).") from None
        on_disk = _prepared_on_disk(tfds, task, data_dir, version)
        if on_disk is not None:
            logger.info("%s: reading %s prepared at %s", task.name, spec, on_disk.info.version)
            return on_disk
        can = _buildable_versions(tfds, task)
        where = f" --data_dir {data_dir}" if data_dir else ""
        pin = "the reference's pin" if version == task.version else "the version asked for"
        raise ConfigError(
            f"Task {task.name}: tensorflow-datasets {tfds.__version__} cannot build {spec}, {pin}; "
            f"it builds {', '.join(can) or 'other versions'}. Either prepare {spec} with an older "
            f"tensorflow-datasets release that still builds it, in another environment "
            f"(`tfds build {task.builder}{where}`; export then reads the prepared folder), or export "
            f"{can[0] if can else 'a version it builds'} instead (`zooens vtab export --tfds-version "
            f"{task.name}={can[0] if can else 'VERSION'}`, recorded in task.json)."
        ) from None


def _as_dataset(task: VtabTask, builder, split: str, data_dir: str | None):
    try:
        return builder.as_dataset(split=split, shuffle_files=False)
    except Exception as exc:  # TFDS raises AssertionError, ValueError, NotFoundError... for unprepared data
        spec = f"{task.builder}:{builder.info.version}"
        raise DatasetError(
            f"Task {task.name}: cannot read {spec} split {split!r} from TFDS ({_first_line(exc)}); prepare it with "
            f"{_build_hint(task, data_dir, str(builder.info.version))} (some builders need a manual download first: "
            "see their TFDS catalog page)."
        ) from None


def export_size(image_shape: tuple[int | None, ...]) -> tuple[int, int] | None:
    """The (height, width) exported images are resized to, or None to keep them as they are.

    None for one fixed shape no larger than `EXPORT_SIZE` on each side; else EXPORT_SIZE square.
    """
    height, width = image_shape[0], image_shape[1]
    if height is not None and width is not None and height <= EXPORT_SIZE and width <= EXPORT_SIZE:
        return None
    return EXPORT_SIZE, EXPORT_SIZE


def task_classes(task: VtabTask, features) -> list[str]:
    """The task's full class list: TFDS's label names for a label used as given, else the indices."""
    if task.label == "given":
        names = getattr(features[task.label_feature], "names", None)
        if names is not None and len(names) == task.num_classes:
            return [str(n) for n in names]
    return [str(i) for i in range(task.num_classes)]


def _image_fn(task: VtabTask) -> Callable[[np.ndarray], np.ndarray]:
    """What turns one TFDS image into the stored uint8 array (grey squeezed to H x W)."""
    binary = task.builder.startswith("dsprites")

    def convert(img: np.ndarray) -> np.ndarray:
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        if binary:  # TFDS stores dSprites as 0/1; the reference multiplies by 255
            if img.max(initial=0) > 1:
                raise DatasetError(
                    f"Task {task.name}: dSprites images should hold 0/1 pixels but hold values up to {img.max()}; "
                    "re-prepare the dsprites TFDS data."
                )
            img = img.astype(np.uint8) * np.uint8(255)
        if img.dtype != np.uint8:
            raise DatasetError(f"Task {task.name}: TFDS images are {img.dtype}, expected uint8.")
        return img

    return convert


def _count(ds, builder, split: str) -> int:
    n = int(ds.cardinality())
    if n >= 0:
        return n
    return int(builder.info.splits[split].num_examples)


def _export_split(task: VtabTask, builder, split: str, folder: Path, data_dir: str | None) -> int:
    """Stream one split into `folder/images.npy` and `labels.npy`; returns the number of examples."""
    tfds = _tfds()
    import tensorflow as tf

    ds = _as_dataset(task, builder, split, data_dir)
    n = _count(ds, builder, split)
    image_shape = tuple(builder.info.features["image"].shape)
    size = export_size(image_shape)
    if size is not None:  # the reference's resize: bilinear, straight to the square, no crop

        def resize(ex: dict) -> dict:
            img = tf.image.resize(ex["image"], size, method="bilinear")
            return {**ex, "image": tf.cast(tf.round(tf.clip_by_value(img, 0, 255)), tf.uint8)}

        ds = ds.map(resize, num_parallel_calls=tf.data.AUTOTUNE)
        shape = (*size, 3)
    else:
        shape = image_shape
    if shape[-1] == 1:
        shape = shape[:-1]
    folder.mkdir(parents=True)
    images = np.lib.format.open_memmap(folder / SPLIT_IMAGES, mode="w+", dtype=np.uint8, shape=(n, *shape))
    labels = np.lib.format.open_memmap(folder / SPLIT_LABELS, mode="w+", dtype=np.int64, shape=(n,))
    convert = _image_fn(task)
    i = 0
    try:
        for ex in tfds.as_numpy(ds):
            if i >= n:
                raise DatasetError(
                    f"Task {task.name}: split {split!r} yields more than the {n} examples TFDS "
                    "declares; re-prepare the data."
                )
            img = convert(ex["image"])
            if img.shape != tuple(shape):
                raise DatasetError(
                    f"Task {task.name}: example {i} of {split!r} has shape {img.shape}, "
                    f"expected {tuple(shape)}; re-prepare the data."
                )
            try:
                label = _derive_label(task, ex)
            except (ValueError, IndexError, KeyError) as exc:
                raise DatasetError(
                    f"Task {task.name}: example {i} of {split!r} has no valid label ({exc}); "
                    f"is this real {task.builder} data?"
                ) from None
            if not 0 <= label < task.num_classes:
                raise DatasetError(
                    f"Task {task.name}: example {i} of {split!r} has label {label}, outside "
                    f"0..{task.num_classes - 1}; is this real {task.builder} data?"
                )
            images[i] = img
            labels[i] = label
            i += 1
        if i != n:
            raise DatasetError(
                f"Task {task.name}: split {split!r} yields {i} examples where TFDS declares {n}; re-prepare the data."
            )
        images.flush()
        labels.flush()
    finally:
        del images, labels  # close the maps before the folder is renamed or removed
    return n


def export_task(
    task: VtabTask, out_dir: str | Path, data_dir: str | None = None, *, version: str | None = None
) -> Path:
    """Write the exported layout of one task from prepared TFDS data; returns `OUT_DIR/<task>`.

    Streams each split to disk (bounded memory) and renames the finished task into place, so
    an interrupted export leaves nothing behind and a re-export replaces the old one. `version`
    overrides the table's TFDS pin (task.json records the version read). See the module's
    docstring for the sizes, pixel ranges and labels written.
    """
    builder = _builder(task, data_dir, version)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = out / task.name
    tmp = out / f".{task.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        counts = {}
        for folder, attr in _SPLIT_EXPRS:
            split = getattr(task, attr)
            counts[folder] = _export_split(task, builder, split, tmp / folder, data_dir)
        meta: dict[str, Any] = {
            "task": task.name,
            "group": task.group,
            "stand_in": False,
            "source": f"{task.builder}:{builder.info.version}",
            "pinned": task.tfds_name,
            "splits": {folder: getattr(task, attr) for folder, attr in _SPLIT_EXPRS},
            "counts": counts,
            "classes": task_classes(task, builder.info.features),
            **task.declarations,
        }
        (tmp / "task.json").write_text(json.dumps(meta, indent=2))
        old = None
        if base.exists():
            old = out / f".{task.name}.old-{uuid.uuid4().hex[:8]}"
            base.rename(old)
        tmp.rename(base)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return base


def load_tfds_task(task: VtabTask, data_dir: str | None = None, *, version: str | None = None) -> ImageDataset:
    """A task straight from prepared TFDS data, with task_adaptation's 1k splits, held in memory.

    Images are converted as `export_task` writes them; the test split can be large (use
    `export_task` and `load_exported_task` for bounded memory).
    """
    tfds = _tfds()
    builder = _builder(task, data_dir, version)
    convert = _image_fn(task)
    size = export_size(tuple(builder.info.features["image"].shape))
    splits = {}
    for folder, attr in _SPLIT_EXPRS:
        images, labels = [], []
        for ex in tfds.as_numpy(_as_dataset(task, builder, getattr(task, attr), data_dir)):
            img = convert(ex["image"])
            if size is not None:
                import tensorflow as tf

                img = tf.image.resize(img[..., None] if img.ndim == 2 else img, size, method="bilinear").numpy()
                img = np.clip(np.round(img), 0, 255).astype(np.uint8)
            images.append(img)
            labels.append(_derive_label(task, ex))
        splits[EXPORTED_SPLITS[folder]] = Split(EXPORTED_SPLITS[folder], np.stack(images), np.array(labels))
    return ImageDataset(
        f"vtab/{task.name}",
        task_classes(task, builder.info.features),
        splits,
        source=f"tfds:{task.builder}:{builder.info.version}",
        extra=dict(task.declarations),
    )
