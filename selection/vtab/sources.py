"""Where VTAB data comes from: the exported layout (no TensorFlow needed) or TFDS.

Exported layout: `DIR/<task>/{train800,val200,test}/`, each an ImageFolder tree (class
sub-folders) or a `data.npz` with `images`, `labels` and optionally `classes`. Reading it is a
dataset format like the others, so it lives in `selection.datasets` (re-exported here);
`export_task` writes that layout from TFDS, so data prepared once runs anywhere.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from zooens.errors import ConfigError
from zooens.selection.datasets import EXPORTED_SPLITS, ImageDataset, Split, load_exported_task, write_split_npz
from zooens.selection.vtab import labels as label_fns
from zooens.selection.vtab.tasks import VtabTask

logger = logging.getLogger(__name__)

__all__ = ["EXPORTED_SPLITS", "load_exported_task", "load_tfds_task", "export_task", "write_split_npz"]


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
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ConfigError(
            "Reading VTAB from TFDS needs tensorflow-datasets: `pip install 'zooens[vtab]'`, prepare the data "
            "with `tfds build`, or use the exported layout (`zooens vtab export` on a machine that has it)."
        ) from None
    return tfds


def _tfds_split(task: VtabTask, split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    tfds = _tfds()
    ds = tfds.load(task.tfds_name, split=split, data_dir=data_dir, download=False)
    images, labels = [], []
    for ex in tfds.as_numpy(ds):
        img = ex["image"]
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        images.append(img)
        labels.append(_derive_label(task, ex))
    shapes = {im.shape for im in images}
    if len(shapes) > 1:  # natural images vary in size: resize to a common square for the npz layout
        size = 224
        images = [np.asarray(Image.fromarray(im).convert("RGB").resize((size, size), Image.BICUBIC)) for im in images]
    return np.stack(images), np.array(labels, dtype=np.int64)


def load_tfds_task(task: VtabTask, data_dir: str | None = None) -> ImageDataset:
    """A task straight from prepared TFDS data, with task_adaptation's 1k splits."""
    splits = {}
    for name, expr in (("train", task.train800), ("val", task.val200), ("test", task.test_split)):
        images, labels = _tfds_split(task, expr, data_dir)
        splits[name] = Split(name, images, labels)
    return ImageDataset(f"vtab/{task.name}", [str(i) for i in range(task.num_classes)], splits,
                        source=f"tfds:{task.tfds_name}")


def export_task(task: VtabTask, out_dir: str | Path, data_dir: str | None = None) -> Path:
    """Write the exported layout of one task from TFDS."""
    ds = load_tfds_task(task, data_dir)
    base = Path(out_dir) / task.name
    for folder, split in EXPORTED_SPLITS.items():
        sp = ds.split(split)
        write_split_npz(base / folder, np.asarray(sp.images), sp.labels, ds.classes)
    (base / "task.json").write_text(json.dumps({"task": task.name, "group": task.group, "stand_in": False,
                                                "source": task.tfds_name, **task.declarations}, indent=2))
    return base
