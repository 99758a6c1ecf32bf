"""Decoded splits: a split's images decoded and resized once, shared by every model that sees them alike.

A model's evaluation transform (timm's `create_transform(..., is_training=False)`) is a geometric
part on PIL images (resize, centre crop) followed by `ToTensor` and `Normalize`. Only the geometric
part is costly, and PIL works on uint8, so its result is exactly a uint8 array of shape
(N, H, W, 3), PIL's own pixel layout: the *decoded split*. Batches of it are handed out as
(B, 3, H, W) views with channels-last strides, the layout the models run in, so no copy reorders
them. `normalize` then does on the device what `ToTensor` and `Normalize` do (`x.float() / 255`,
then `(x - mean) / std` in float32, the same operations in the same order), so the normalised batch
is bit for bit timm's.

A grey image (a split of (N, H, W) or (N, H, W, 1) arrays, as MNIST-like and most TFDS grey sets
are stored) is resized as one channel and then repeated three times: PIL resamples each band of an
8-bit image alone with the same coefficients, so this equals resizing its RGB conversion exactly,
for a third of the work (`Decoder`).

The geometric part (`geometry`: the resize and crop steps timm builds from input size,
interpolation, crop_pct and crop_mode; `preprocessing` `resize` shows in these fields, since
`zoo.data_config` maps it to them) keys a decoded split together with the dataset fingerprint and
the split name (`DecodeKey`). The key is the steps themselves rather than the config fields, so
configs that build the same steps share (EfficientNet-Lite's crop_pct 0.875/0.882/0.89 do not at
112 px: 128/126/125 px before the crop). Mean and std are not in the key: models that differ only
in them share one decoded split, and a zoo of N models with one geometry decodes the data once.

`DecodedCache` holds decoded splits in this process (an LRU bounded in bytes,
`Settings.decoded_memory_bytes`) and on disk under the embedding cache dir (`decoded/`, bounded in
bytes by `Settings.decoded_disk_bytes`, oldest read first evicted; writes atomic like
`EmbeddingCache`), so later models, later units and other processes (Ray tasks) skip the decode.
A split bigger than a bound is simply not held there.

`decoded_batches` yields a split's uint8 batches: slices of the cached tensor when there is one,
else decoded straight into the array that is then cached (in the caller's process, or in a
DataLoader whose workers decode while the caller runs the forward pass; cached only when the whole
split was read, and only when it fits one of the bounds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform
from torchvision import transforms as T

from zooens.errors import ConfigError
from zooens.selection.cache import read_npy, write_npy
from zooens.selection.datasets import Split
from zooens.settings import get_settings

logger = logging.getLogger(__name__)

__all__ = [
    "DecodeKey",
    "DecodedCache",
    "Decoder",
    "decode_transform",
    "decoded_batches",
    "decoded_cache",
    "geometry",
    "normalize",
]

_LAST_STEPS = ("ToTensor", "MaybeToTensor", "Normalize", "MaybeNormalize")


def _geometric_steps(data_cfg: dict[str, Any]) -> list[Any]:
    """timm's eval transform for `data_cfg` without its final ToTensor/Normalize (PIL -> PIL)."""
    full = create_transform(**data_cfg, is_training=False)
    steps = list(full.transforms)
    while steps and type(steps[-1]).__name__ in _LAST_STEPS:
        steps.pop()
    if any(type(s).__name__ in _LAST_STEPS for s in steps):
        raise ConfigError(f"Unexpected evaluation transform (tensor steps before the end): {full}")
    return steps


def geometry(data_cfg: dict[str, Any]) -> str:
    """What decides the decoded pixels: the geometric steps timm builds from the config's input_size,
    interpolation, crop_pct and crop_mode (not mean/std), as their repr, e.g.
    `Resize(size=128, interpolation=bicubic, ...) | CenterCrop(size=(112, 112))`. Two configs whose
    steps coincide (crop_pct 0.875 and 0.88 at 112 px both resize to 128) share a decoded split."""
    return " | ".join(repr(step) for step in _geometric_steps(data_cfg))


@dataclass(frozen=True)
class DecodeKey:
    """What determines a decoded split: dataset fingerprint, split name, `geometry`."""

    fingerprint: str
    split: str
    geometry: str

    @classmethod
    def of(cls, fingerprint: str, split: str, data_cfg: dict[str, Any]) -> DecodeKey:
        return cls(fingerprint, split, geometry(data_cfg))

    @property
    def digest(self) -> str:
        """sha256 hex of the key, the file name on disk."""
        payload = json.dumps(
            {"dataset": self.fingerprint, "split": self.split, "geometry": self.geometry, "layout": LAYOUT},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()


BAND_WISE_STEPS = frozenset({"Resize", "CenterCrop", "ResizeKeepRatio"})
"""Geometric steps that resample or crop each band of an image alike, without fill colours."""

LAYOUT = "NHWC"
"""How decoded splits are stored (part of every `DecodeKey.digest`, so files of another layout are
never read as this one)."""


class Decoder:
    """The geometric part of timm's eval transform for a config: PIL image -> uint8 pixels (H, W, 3).

    `image(split, i)` reads image `i` of a split for it: a grey array split gives its 'L' image, which
    `into` resizes as one channel and repeats three times (exactly the RGB conversion's result, see
    the module's docstring); everything else is read as RGB."""

    def __init__(self, data_cfg: dict[str, Any]) -> None:
        steps = _geometric_steps(data_cfg)
        self.steps = T.Compose(steps)
        _, self.height, self.width = (int(v) for v in data_cfg["input_size"])
        # Only steps known to treat each band alike may see one grey band; a pad with a colour fill
        # (timm's 'border' crop mode) makes the result RGB, and an unknown step is not assumed safe.
        self.grey = all(type(step).__name__ in BAND_WISE_STEPS for step in steps)

    def image(self, split: Split, i: int) -> Image.Image:
        """Image `i` of `split` as this decoder reads it ('L' for a grey array split when `grey`)."""
        return split.image(i, keep_grey=True) if self.grey and isinstance(split, Split) else split.image(i)

    def into(self, out: np.ndarray, img: Image.Image) -> None:
        """Decode `img` into `out`, a uint8 (H, W, 3) array."""
        if img.mode != "RGB" and not (img.mode == "L" and self.grey):
            img = img.convert("RGB")
        img = self.steps(img)
        arr = np.asarray(img.convert("RGB") if img.mode != "RGB" else img)  # PIL repeats a band fastest
        if arr.shape != out.shape:
            raise ConfigError(f"The evaluation transform gave {arr.shape} pixels, not {out.shape}: {self.steps}")
        out[...] = arr

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """uint8 (3, H, W) (a channels-last view of the (H, W, 3) pixels)."""
        out = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self.into(out, img)
        return torch.from_numpy(out).permute(2, 0, 1)


def decode_transform(data_cfg: dict[str, Any]) -> Decoder:
    """timm's eval transform for `data_cfg` without ToTensor/Normalize: PIL image -> uint8 (3, H, W)."""
    return Decoder(data_cfg)


def normalize(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 as timm's ToTensor + Normalize, channels-last, on batch's device.

    `mean` and `std` are float32 (3, 1, 1) tensors on the same device. A batch with channels-last
    strides (what `decoded_batches` yields) is converted in that layout, without reordering."""
    x = batch.to(torch.float32).div_(255).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last)


def mean_std(data_cfg: dict[str, Any], device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The config's mean and std as float32 (3, 1, 1) tensors on `device`."""
    mean = torch.as_tensor(data_cfg["mean"], dtype=torch.float32).view(-1, 1, 1).to(device)
    std = torch.as_tensor(data_cfg["std"], dtype=torch.float32).view(-1, 1, 1).to(device)
    return mean, std


class _SplitImages(torch.utils.data.Dataset):
    """A split's images decoded to uint8 (H, W, 3), for a DataLoader."""

    def __init__(self, split: Split, decoder: Decoder) -> None:
        self.split, self.decoder = split, decoder

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> torch.Tensor:
        out = np.empty((self.decoder.height, self.decoder.width, 3), dtype=np.uint8)
        self.decoder.into(out, self.decoder.image(self.split, i))
        return torch.from_numpy(out)


class DecodedCache:
    """Decoded splits, uint8 (N, H, W, 3), in memory (LRU, bounded in bytes) and on disk under `root`
    (bounded in bytes).

    `root=None` keeps them in memory only. Thread-safe; one instance per root per process
    (`decoded_cache`), so every model of a job shares it."""

    def __init__(self, root: str | os.PathLike | None, *, memory_bytes: int, disk_bytes: int) -> None:
        self.root = Path(root) if root is not None else None
        self.memory_bytes, self.disk_bytes = int(memory_bytes), int(disk_bytes)
        self._memory: OrderedDict[DecodeKey, torch.Tensor] = OrderedDict()
        self._lock = threading.RLock()

    def path(self, key: DecodeKey) -> Path | None:
        """The file of `key` on disk (whether or not it exists); None without a root."""
        return None if self.root is None else self.root / key.digest[:2] / f"{key.digest}.npy"

    def get(self, key: DecodeKey, n_images: int | None = None) -> torch.Tensor | None:
        """The uint8 (N, H, W, 3) tensor of `key` from memory, else from disk (then held in memory)."""
        with self._lock:
            hit = self._memory.get(key)
            if hit is not None:
                self._memory.move_to_end(key)
                return hit
        path = self.path(key)
        arr = None if path is None else read_npy(path, "decoded split", "decoded again")
        if arr is None:
            return None
        if (
            arr.dtype != np.uint8
            or arr.ndim != 4
            or arr.shape[-1] != 3
            or (n_images is not None and len(arr) != n_images)
        ):
            logger.warning("decoded split %s has shape %s %s; it will be decoded again", path, arr.shape, arr.dtype)
            return None
        _touch(path)  # eviction is by last use
        tensor = torch.from_numpy(arr)
        self._hold(key, tensor)
        return tensor

    def put(self, key: DecodeKey, tensor: torch.Tensor) -> None:
        """Hold `tensor` (uint8 (N, H, W, 3), CPU) in memory and on disk, each within its bound."""
        self._hold(key, tensor)
        path = self.path(key)
        nbytes = tensor.numel() * tensor.element_size()
        if path is None or nbytes > self.disk_bytes:
            return
        try:
            write_npy(path, tensor.numpy())
        except OSError as exc:
            logger.warning("cannot store decoded split %s: %s", path, exc)
            return
        _touch(path)
        self._evict_disk(keep=path)

    def _hold(self, key: DecodeKey, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        with self._lock:
            self._memory.pop(key, None)
            if nbytes > self.memory_bytes:
                return
            self._memory[key] = tensor
            total = sum(t.numel() * t.element_size() for t in self._memory.values())
            while total > self.memory_bytes:
                _, old = self._memory.popitem(last=False)
                total -= old.numel() * old.element_size()

    def _evict_disk(self, keep: Path) -> None:
        assert self.root is not None
        files = []
        for p in self.root.glob("*/*.npy"):
            try:
                st = p.stat()
            except OSError:
                continue
            files.append((st.st_mtime_ns, st.st_size, p))
        total = sum(size for _, size, _ in files)
        for _, size, p in sorted(files, key=lambda f: f[0]):
            if total <= self.disk_bytes:
                break
            if p == keep:
                continue
            p.unlink(missing_ok=True)
            total -= size

    def clear_memory(self) -> None:
        """Forget what is held in memory (the disk copies stay)."""
        with self._lock:
            self._memory.clear()


_CACHES_LOCK = threading.Lock()
_last_touch = 0


def _touch(path: Path) -> None:
    """Set `path`'s mtime to now, strictly after the previous touch (coarse file-system clocks
    would otherwise tie, and eviction order is by mtime)."""
    global _last_touch
    with _CACHES_LOCK:
        _last_touch = max(time.time_ns(), _last_touch + 1_000)
        stamp = _last_touch
    try:
        os.utime(path, ns=(stamp, stamp))
    except OSError:
        pass


_CACHES: dict[str | None, DecodedCache] = {}


def decoded_cache(root: str | os.PathLike | None) -> DecodedCache:
    """This process's DecodedCache for `root` (None: memory only), bounded by the settings."""
    settings = get_settings()
    name = None if root is None else str(Path(root).resolve())
    with _CACHES_LOCK:
        cache = _CACHES.get(name)
        if cache is None or (cache.memory_bytes, cache.disk_bytes) != (
            settings.decoded_memory_bytes,
            settings.decoded_disk_bytes,
        ):
            cache = _CACHES[name] = DecodedCache(
                root, memory_bytes=settings.decoded_memory_bytes, disk_bytes=settings.decoded_disk_bytes
            )
        return cache


def decoded_batches(
    split: Split,
    data_cfg: dict[str, Any],
    *,
    batch_size: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    key: DecodeKey | None = None,
    cache: DecodedCache | None = None,
) -> Iterator[torch.Tensor]:
    """uint8 (B, 3, H, W) batches (channels-last views) of `split` decoded by `data_cfg`'s geometry, in order.

    With `key` and `cache`: from the cached tensor when held, else decoded (in this process, or with
    `num_workers` DataLoader processes, overlapping the caller's work on each batch) into the array
    that is cached once every batch was read; a split larger than both of the cache's bounds is
    decoded batch by batch instead. Batches are read-only."""
    n = len(split)
    if key is not None and cache is not None:
        held = cache.get(key, n_images=n)
        if held is not None:
            if pin_memory and not held.is_pinned():
                held = held.pin_memory()  # once: the pinned copy replaces the held one
                cache._hold(key, held)
            for start in range(0, n, batch_size):
                yield held[start : start + batch_size].permute(0, 3, 1, 2)
            return
    decoder = Decoder(data_cfg)
    shape = (decoder.height, decoder.width, 3)
    keep = key is not None and cache is not None and n * math.prod(shape) <= max(cache.memory_bytes, cache.disk_bytes)
    store = np.empty((n, *shape), dtype=np.uint8) if keep else None  # numpy: no inference-mode tensor is cached
    start = 0
    if num_workers == 0:
        for start in range(0, n, batch_size):
            end = min(n, start + batch_size)
            out = store[start:end] if store is not None else np.empty((end - start, *shape), dtype=np.uint8)
            for i in range(start, end):
                decoder.into(out[i - start], decoder.image(split, i))
            batch = torch.from_numpy(out)
            yield (batch.pin_memory() if pin_memory else batch).permute(0, 3, 1, 2)
        start = n
    else:
        loader = torch.utils.data.DataLoader(
            _SplitImages(split, decoder),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=False,
            prefetch_factor=4,
        )
        for batch in loader:
            if store is not None:
                store[start : start + len(batch)] = batch.numpy()
            start += len(batch)
            yield batch.permute(0, 3, 1, 2)
    if store is not None and start == n:
        assert key is not None and cache is not None
        with torch.inference_mode(False):
            cache.put(key, torch.from_numpy(store))
