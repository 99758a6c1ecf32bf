"""Small labelled image sets for the ensemble tests (colour-coded classes, flip invariant)."""

from __future__ import annotations

import numpy as np
from PIL import Image

COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=np.float64)


def toy_arrays(n: int, seed: int, size: int = 32, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, size, size, 3) whose mean colour gives the class, and labels (n,)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    noise = rng.normal(0, 50, size=(n, size, size, 3))
    x = np.clip(COLOURS[y][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return x, y.astype(np.int64)


class ToySplit:
    """The Split interface (`len`, `image(i)`, `labels`) over in-memory arrays."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.labels = x, y

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.x[i]).convert("RGB")


def toy_split(n: int, seed: int, **kwargs) -> ToySplit:
    return ToySplit(*toy_arrays(n, seed, **kwargs))
