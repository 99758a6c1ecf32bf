"""Decoded splits: a split's images decoded and resized once, shared by every model that sees them alike.

A model's evaluation transform (timm's `create_transform(..., is_training=False)`) is a geometric
part on PIL images (resize, centre crop) followed by `ToTensor` and `Normalize`. Only the geometric
part is costly, and PIL works on uint8, so its result is exactly a uint8 tensor of shape
(N, 3, H, W): the *decoded split*. `normalize` then does on the device what `ToTensor` and
`Normalize` do (`x.float() / 255`, then `(x - mean) / std` in float32, the same operations in the
same order), so the normalised batch is bit for bit timm's.

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
else straight from a DataLoader whose workers decode while the caller runs the forward pass; the
batches are copied into the tensor that is then cached (only when the whole split was read).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform
from torchvision import transforms as T

from zooens.errors import ConfigError
from zooens.selection.datasets import Split
from zooens.settings import get_settings

logger = logging.getLogger(__name__)

__all__ = [
    "DecodeKey", "DecodedCache", "decode_transform", "decoded_batches", "decoded_cache", "geometry", "normalize",
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
    def of(cls, fingerprint: str, split: str, data_cfg: dict[str, Any]) -> "DecodeKey":
        return cls(fingerprint, split, geometry(data_cfg))

    @property
    def digest(self) -> str:
        """sha256 hex of the key, the file name on disk."""
        payload = json.dumps({"dataset": self.fingerprint, "split": self.split, "geometry": self.geometry},
                             sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


class _PilToUint8:
    """PIL RGB image -> uint8 tensor (3, H, W), the pixels `ToTensor` would divide by 255."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        arr = np.asarray(img.convert("RGB") if img.mode != "RGB" else img, dtype=np.uint8)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def decode_transform(data_cfg: dict[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """timm's eval transform for `data_cfg` without ToTensor/Normalize: PIL image -> uint8 (3, H, W)."""
    return T.Compose([*_geometric_steps(data_cfg), _PilToUint8()])


def normalize(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 as timm's ToTensor + Normalize, channels-last, on batch's device.

    `mean` and `std` are float32 (3, 1, 1) tensors on the same device."""
    x = batch.to(torch.float32).div_(255).sub_(mean).div_(std)
    return x.contiguous(memory_format=torch.channels_last)


def mean_std(data_cfg: dict[str, Any], device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The config's mean and std as float32 (3, 1, 1) tensors on `device`."""
    mean = torch.as_tensor(data_cfg["mean"], dtype=torch.float32).view(-1, 1, 1).to(device)
    std = torch.as_tensor(data_cfg["std"], dtype=torch.float32).view(-1, 1, 1).to(device)
    return mean, std


class _SplitImages(torch.utils.data.Dataset):
    """A split's images through the decode transform, for a DataLoader."""

    def __init__(self, split: Split, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.split.image(i))


class DecodedCache:
    """Decoded splits in memory (LRU, bounded in bytes) and on disk under `root` (bounded in bytes).

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
        """The uint8 (N, 3, H, W) tensor of `key` from memory, else from disk (then held in memory)."""
        with self._lock:
            hit = self._memory.get(key)
            if hit is not None:
                self._memory.move_to_end(key)
                return hit
        path = self.path(key)
        if path is None or not path.is_file():
            return None
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            logger.warning("unreadable decoded split %s; it will be decoded again", path)
            return None
        if arr.dtype != np.uint8 or arr.ndim != 4 or (n_images is not None and len(arr) != n_images):
            logger.warning("decoded split %s has shape %s %s; it will be decoded again", path, arr.shape, arr.dtype)
            return None
        _touch(path)  # eviction is by last use
        tensor = torch.from_numpy(arr)
        self._hold(key, tensor)
        return tensor

    def put(self, key: DecodeKey, tensor: torch.Tensor) -> None:
        """Hold `tensor` (uint8 (N, 3, H, W), CPU) in memory and on disk, each within its bound."""
        self._hold(key, tensor)
        path = self.path(key)
        nbytes = tensor.numel() * tensor.element_size()
        if path is None or nbytes > self.disk_bytes:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, tensor.numpy())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
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
        if cache is None or (cache.memory_bytes, cache.disk_bytes) != (settings.decoded_memory_bytes,
                                                                       settings.decoded_disk_bytes):
            cache = _CACHES[name] = DecodedCache(root, memory_bytes=settings.decoded_memory_bytes,
                                                 disk_bytes=settings.decoded_disk_bytes)
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
    """uint8 (B, 3, H, W) batches of `split` decoded by `data_cfg`'s geometry, in order.

    With `key` and `cache`: from the cached tensor when held, else decoded in a DataLoader (with
    `num_workers` processes, overlapping the caller's work on each batch) and cached once every
    batch was read."""
    n = len(split)
    if key is not None and cache is not None:
        held = cache.get(key, n_images=n)
        if held is not None:
            if pin_memory and not held.is_pinned():
                held = held.pin_memory()  # once: the pinned copy replaces the held one
                cache._hold(key, held)
            for start in range(0, n, batch_size):
                yield held[start:start + batch_size]
            return
    loader = torch.utils.data.DataLoader(
        _SplitImages(split, decode_transform(data_cfg)), batch_size=batch_size, shuffle=False,
        num_workers=num_workers, pin_memory=pin_memory, persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
    )
    keep = key is not None and cache is not None
    store: np.ndarray | None = None  # numpy: no inference-mode tensor leaks into the cache
    start = 0
    for batch in loader:
        if keep:
            if store is None:
                store = np.empty((n, *batch.shape[1:]), dtype=np.uint8)
            store[start:start + len(batch)] = batch.numpy()
        start += len(batch)
        yield batch
    if keep and store is not None and start == n:
        assert key is not None and cache is not None
        cache.put(key, torch.from_numpy(store))
