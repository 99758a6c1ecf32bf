"""An offline suite in the exported VTAB layout, for tests and demos on machines without TFDS.

Stand-ins, never VTAB: every task is named `offline-*` and flagged `stand_in` in its task.json.
- offline-fashion-mnist (natural-style): Fashion-MNIST from Debian's dataset-fashion-mnist.
- offline-digits (natural-style): scikit-learn's digits.
- offline-dsprites-location / offline-dsprites-orientation (structured-style): a white shape on
  black, rendered with PIL; label = x position or orientation in 16 bins (as dSprites' tasks).
- offline-clevr-count (structured-style): 3 to 10 coloured objects; label = count - 3 (as Clevr).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from zooens.selection.datasets import EXPORTED_SPLITS, FASHION_MNIST_CLASSES, load_builtin, write_split_npz

__all__ = ["OFFLINE_DECLARATIONS", "OFFLINE_TASKS", "make_offline_suite", "render_sprite", "render_clevr_like"]

OFFLINE_DECLARATIONS = {
    "offline-fashion-mnist": {"flip_preserves_label": True, "crop_preserves_label": True},
    "offline-digits": {"flip_preserves_label": False, "crop_preserves_label": True},
    "offline-dsprites-location": {"flip_preserves_label": False, "crop_preserves_label": False},
    "offline-dsprites-orientation": {"flip_preserves_label": False, "crop_preserves_label": True},
    "offline-clevr-count": {"flip_preserves_label": True, "crop_preserves_label": False},
}
"""What each stand-in declares about its labels, as the VTAB task it stands in for (`tasks.FLIP_SAFE`)."""

OFFLINE_TASKS = {
    "offline-fashion-mnist": "natural",
    "offline-digits": "natural",
    "offline-dsprites-location": "structured",
    "offline-dsprites-orientation": "structured",
    "offline-clevr-count": "structured",
}
SIZE = 64
N_BINS = 16


def render_sprite(x: float, y: float, angle: float, scale: float, size: int = SIZE) -> np.ndarray:
    """A white isosceles triangle (no rotational symmetry) whose centroid is at (x, y) in [0, 1]^2."""
    img = Image.new("L", (size, size), 0)
    r = scale * size
    cx, cy = 6 + x * (size - 12), 6 + y * (size - 12)
    pts = [(0.0, -1.2), (0.55, 0.6), (-0.55, 0.6)]  # centroid at the origin
    rot = [
        (cx + r * (px * math.cos(angle) - py * math.sin(angle)), cy + r * (px * math.sin(angle) + py * math.cos(angle)))
        for px, py in pts
    ]
    ImageDraw.Draw(img).polygon(rot, fill=255)
    return np.asarray(img)


def sprite_centre_x(x: float, size: int = SIZE) -> float:
    return 6 + x * (size - 12)


def render_clevr_like(n_objects: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    img = Image.new("RGB", (size, size), (110, 110, 110))
    draw = ImageDraw.Draw(img)
    placed: list[tuple[float, float]] = []
    tries = 0
    while len(placed) < n_objects:
        tries += 1
        if tries > 2000:  # an unlucky layout: start again
            placed, tries = [], 0
        cx, cy = rng.uniform(6, size - 6, 2)
        if all((cx - a) ** 2 + (cy - b) ** 2 > 15**2 for a, b in placed):  # objects never touch
            placed.append((cx, cy))
    for cx, cy in placed:
        r = rng.uniform(3, 5)
        colour = tuple(int(c) for c in rng.integers(20, 255, 3))
        if rng.random() < 0.5:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    return np.asarray(img)


def _dsprites(n: int, rng: np.random.Generator, target: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    angles = rng.uniform(0, 2 * math.pi, n)
    scales = rng.uniform(0.12, 0.2, n)
    images = np.stack([render_sprite(*a) for a in zip(xs, ys, angles, scales, strict=False)])
    if target == "location":
        labels = np.minimum((xs * N_BINS).astype(np.int64), N_BINS - 1)
    else:
        labels = np.minimum((angles / (2 * math.pi) * N_BINS).astype(np.int64), N_BINS - 1)
    return images, labels


def _task_arrays(task: str, n_total: int, rng: np.random.Generator):
    if task == "offline-fashion-mnist":
        ds = load_builtin("fashion-mnist")
        tr, te = ds.split("train"), ds.split("test")
        i = rng.permutation(len(tr))[: n_total[0]]
        j = rng.permutation(len(te))[: n_total[1]]
        return (tr.images[i], tr.labels[i], te.images[j], te.labels[j]), list(FASHION_MNIST_CLASSES)
    if task == "offline-digits":
        ds = load_builtin("digits")
        tr, te = ds.split("train"), ds.split("test")
        i = rng.permutation(len(tr))[: n_total[0]]
        j = rng.permutation(len(te))[: n_total[1]]
        return (tr.images[i], tr.labels[i], te.images[j], te.labels[j]), ds.classes
    if task.startswith("offline-dsprites"):
        target = task.rsplit("-", 1)[1]
        a, b = _dsprites(n_total[0], rng, target), _dsprites(n_total[1], rng, target)
        return (*a, *b), [str(i) for i in range(N_BINS)]
    if task == "offline-clevr-count":

        def make(n):
            counts = rng.integers(3, 11, n)
            return np.stack([render_clevr_like(int(c), rng) for c in counts]), counts - 3

        a, b = make(n_total[0]), make(n_total[1])
        return (*a, *b), [str(i) for i in range(3, 11)]
    raise ValueError(task)


def make_offline_suite(
    out_dir: str | Path, *, seed: int = 0, n_test: int = 500, tasks: list[str] | None = None
) -> list[Path]:
    """Write the stand-in tasks (800 train, 200 val, n_test test each); deterministic for a seed."""
    out = Path(out_dir)
    written = []
    for task in tasks or list(OFFLINE_TASKS):
        if task not in OFFLINE_TASKS:
            raise ValueError(f"Unknown offline task {task!r}; choose from {', '.join(OFFLINE_TASKS)}.")
        rng = np.random.default_rng([seed, list(OFFLINE_TASKS).index(task)])  # the same data, whatever subset
        (tr_x, tr_y, te_x, te_y), classes = _task_arrays(task, (1000, n_test), rng)
        base = out / task
        parts = {"train800": (tr_x[:800], tr_y[:800]), "val200": (tr_x[800:1000], tr_y[800:1000]), "test": (te_x, te_y)}
        for folder in EXPORTED_SPLITS:
            write_split_npz(base / folder, *parts[folder], classes)
        (base / "task.json").write_text(
            json.dumps(
                {
                    "task": task,
                    "group": OFFLINE_TASKS[task],
                    "stand_in": True,
                    "seed": seed,
                    "note": "offline stand-in generated by zooens; not a VTAB task",
                    **OFFLINE_DECLARATIONS[task],
                },
                indent=2,
            )
        )
        written.append(base)
    return written
