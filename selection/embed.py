"""Embedding a split with a zoo model: its own preprocessing, batched, cached on disk."""
from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from timm.data import create_transform
from torch import nn
from tqdm.auto import tqdm

from zooens import zoo
from zooens.cancel import check_cancelled
from zooens.selection.cache import EmbeddingCache, cache_key
from zooens.selection.datasets import ImageDataset, Split
from zooens.settings import get_settings
from zooens.zoo import WeightSet

logger = logging.getLogger(__name__)

__all__ = ["embed_split", "embed_with_cache", "EmbeddingResult", "SplitDataset", "default_batch_size"]


class SplitDataset(torch.utils.data.Dataset):
    """A split's images through a transform, for a DataLoader."""

    def __init__(self, split: Split, transform: Callable[[Any], torch.Tensor]) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.split.image(i))


def default_batch_size(device: str) -> int:
    """Images per forward pass: larger on CUDA, where memory and parallelism allow it."""
    return 256 if str(device).startswith("cuda") else 64


def embed_split(
    model: nn.Module,
    data_cfg: dict[str, Any],
    split: Split,
    *,
    batch_size: int | None = None,
    device: str = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "",
) -> np.ndarray:
    """float32 embeddings (N, D) of a split: eval transform, inference mode, channels-last."""
    transform = create_transform(**data_cfg, is_training=False)
    batch_size = batch_size or default_batch_size(device)
    loader = torch.utils.data.DataLoader(
        SplitDataset(split, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=str(device).startswith("cuda"),
        persistent_workers=False,
    )
    cuda = str(device).startswith("cuda")
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    chunks: list[np.ndarray] = []
    with torch.inference_mode(), autocast, tqdm(total=len(split), desc=desc or "embedding", unit="img",
                                                disable=not progress, leave=False) as bar:
        for batch in loader:
            check_cancelled()  # a cancelled job or a unit past its time limit stops within one batch
            batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            out = model(batch)
            if out.ndim > 2:  # models whose pooled output is not flat
                out = out.flatten(1)
            chunks.append(out.float().cpu().numpy())
            bar.update(len(batch))
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


@dataclass
class EmbeddingResult:
    """Embeddings of one split and how they were obtained (`cached`: no forward pass ran)."""

    embeddings: np.ndarray
    cached: bool
    seconds: float
    images_per_s: float | None
    key: str
    path: Path


def embed_with_cache(
    ws_or_name: str | WeightSet,
    ds: ImageDataset,
    split: str,
    *,
    cache: EmbeddingCache,
    resolution: int | None = None,
    preprocessing: str = "model",
    device: str = "cpu",
    batch_size: int | None = None,
    progress: bool = True,
) -> EmbeddingResult:
    """Embeddings of `ds[split]`, from the cache when the same inputs were embedded before.

    `preprocessing` as `zoo.PREPROCESSINGS` (the model's own eval transform, or VTAB's plain resize);
    it is part of the data config, so of the cache key."""
    started = time.perf_counter()
    ws = zoo.get_weight_set(ws_or_name) if isinstance(ws_or_name, str) else ws_or_name
    sp = ds.split(split)
    data_cfg = zoo.data_config(ws, resolution=resolution, preprocessing=preprocessing)
    key = cache_key(ws.name, zoo.weights_sha256(ws), ds.fingerprint, split, data_cfg)
    hit = cache.get(key, n_rows=len(sp))
    if hit is not None:
        logger.info("%s / %s of %s: %d embeddings cached (%s), no forward pass",
                    ws.name, split, ds.name, len(hit), cache.path(key))
        return EmbeddingResult(hit, True, time.perf_counter() - started, None, key, cache.path(key))
    model = zoo.create_model(ws, num_classes=0)
    t0 = time.perf_counter()
    emb = embed_split(
        model, data_cfg, sp, batch_size=batch_size, device=device, num_workers=get_settings().num_workers,
        progress=progress, desc=f"{ws.name} {split}",
    )
    seconds = time.perf_counter() - t0
    path = cache.put(key, emb, meta={"model": ws.name, "split": split, "dataset": ds.fingerprint,
                                     "data_config": data_cfg, "n": len(sp), "seconds": seconds})
    ips = len(sp) / seconds if seconds > 0 else None
    logger.info("%s / %s: embedded %d images in %.1f s (%.1f img/s)", ws.name, split, len(sp), seconds, ips or 0)
    return EmbeddingResult(emb, False, time.perf_counter() - started, ips, key, path)
