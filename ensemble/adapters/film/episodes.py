"""FiT's episodic fine-tuning (Shysheya et al. 2022, Sec. 3 "Training", Eq. 3; the authors'
`TaskResampler` in `dataset.py` and `FiT.fine_tune` in `model.py`).

The downstream training set D is split once, per class, into a context half (ceil(n/2) examples)
and a target half (the rest). Each step samples a task from it: a number of classes ("way")
uniformly in [min(C, 5), min(C, task_size)], the classes without replacement, then per class
``min(available, max(1, round(task_size / way)))`` context examples and
``min(available, max(1, max_target_size // way))`` target examples. The head is configured on the
context features (closed form, differentiable) and the loss is the cross-entropy of the targets
(Eq. 3), accumulated over chunks of `task_size` targets, each weighted by its share. Adam at a
constant learning rate updates the FiLM parameters and the head's mixing weights; the backbone
stays in eval mode (its normalisation statistics frozen), as in the authors' code.

Where this differs from the authors' code, and why:
- Only classes with at least two training examples are sampled (each then has >= 1 context and
  >= 1 target example); the authors sample every class, so a one-example class enters a task with no
  target, and a task whose targets are all missing is skipped (their TODO). Here no step is empty: at
  397 classes as at 10, every sampled class contributes a target, so every step has a loss with a
  gradient. Fewer than two such classes is a DatasetError (a one-way task has zero loss).
- The context features are computed once per step and kept for every target chunk (their code
  recomputes them per chunk); the gradient is the same.
- The sampled images go through the run's declared `augmentation` (none by default).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from zooens.cancel import check_cancelled
from zooens.ensemble.adapters.film.classifier import FiTClassifier
from zooens.ensemble.training import ImageSplitDataset, SplitLike, augment_batch, eval_transform
from zooens.errors import ConfigError, DatasetError
from zooens.utils import resolve_device

log = logging.getLogger(__name__)

__all__ = ["Episode", "EpisodeSampler", "train_episodic"]

MIN_WAY = 5
"""The authors' `min_classes`: a task has at least this many classes (or all of them when fewer)."""


@dataclass(frozen=True)
class Episode:
    """One task: indices into the training split, and labels renumbered 0..way-1."""

    context: np.ndarray
    context_labels: np.ndarray
    target: np.ndarray
    target_labels: np.ndarray

    @property
    def way(self) -> int:
        return int(self.context_labels.max()) + 1


class EpisodeSampler:
    """Samples FiT tasks from a labelled training set (see the module docstring).

    Parameters
    ----------
    labels : array-like of shape (n_samples,), the training labels.
    task_size : the authors' `train_batch_size` (100): the context budget of a task and the most
        classes it has.
    max_target_size : the authors' cap on a task's targets (2000).
    generator : the only source of randomness (the fixed split and every task).
    """

    def __init__(
        self, labels: Iterable[int], *, task_size: int = 100, max_target_size: int = 2000, generator: torch.Generator
    ) -> None:
        if task_size < 2:
            raise ConfigError(f"FiT's task size (the batch size) must be at least 2, got {task_size}; FiT uses 100.")
        if max_target_size < 1:
            raise ConfigError(f"max_target_size must be at least 1, got {max_target_size}; FiT uses 2000.")
        labels = np.asarray(labels)
        self.task_size, self.max_target_size, self.generator = task_size, max_target_size, generator
        self.context_pool: dict[int, np.ndarray] = {}
        self.target_pool: dict[int, np.ndarray] = {}
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            idx = idx[self._perm(len(idx))]
            n_context = math.ceil(len(idx) / 2)
            if len(idx) - n_context >= 1:
                self.context_pool[int(c)], self.target_pool[int(c)] = idx[:n_context], idx[n_context:]
        self.classes = np.array(sorted(self.context_pool))
        if len(self.classes) < 2:
            raise DatasetError(
                f"FiT's episodic training needs at least two classes with two or more training examples (one as "
                f"context, one as target); this training split has {len(self.classes)}. Add examples, or use the "
                "'linear' strategy."
            )

    def _perm(self, n: int) -> np.ndarray:
        return torch.randperm(n, generator=self.generator).numpy()

    def sample(self) -> Episode:
        n = len(self.classes)
        low, high = min(n, MIN_WAY), min(n, self.task_size)
        way = low + int(torch.randint(high - low + 1, (1,), generator=self.generator))
        chosen = self.classes[self._perm(n)[:way]]
        shots = max(1, round(self.task_size / way))
        target_shots = max(1, self.max_target_size // way)
        context, context_labels, target, target_labels = [], [], [], []
        for k, c in enumerate(chosen):
            ctx, tgt = self.context_pool[int(c)], self.target_pool[int(c)]
            ctx = ctx[self._perm(len(ctx))[:shots]]
            tgt = tgt[self._perm(len(tgt))[:target_shots]]
            context.append(ctx)
            context_labels.append(np.full(len(ctx), k))
            target.append(tgt)
            target_labels.append(np.full(len(tgt), k))
        return Episode(
            np.concatenate(context),
            np.concatenate(context_labels),
            np.concatenate(target),
            np.concatenate(target_labels),
        )


def _load(
    dataset: ImageSplitDataset, indices: np.ndarray, augmentation: str, generator: torch.Generator, device: str
) -> torch.Tensor:
    images = torch.stack([dataset[int(i)][0] for i in indices])
    images = augment_batch(images, augmentation, generator).to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if device.startswith("cuda") else images


def train_episodic(
    model: FiTClassifier,
    params: Iterable[nn.Parameter],
    train_split: SplitLike,
    data_cfg: dict[str, Any],
    *,
    lr: float,
    steps: int,
    task_size: int,
    seed: int,
    max_target_size: int = 2000,
    weight_decay: float = 0.0,
    augmentation: str = "none",
    device: str = "cpu",
    progress: bool = True,
    on_step: Callable[[int, float, float], None] | None = None,
) -> FiTClassifier:
    """Fine-tune `params` (FiLM and head weights) of `model` episodically; return it in eval mode.

    lr : Adam's constant learning rate (the authors use 0.0035).
    task_size, max_target_size : see `EpisodeSampler`; targets are processed `task_size` at a time.
    on_step : called as `on_step(step, loss, gradient_norm)` after each step (before the update).
    """
    if not lr > 0 or not math.isfinite(lr):
        raise ConfigError(f"lr must be a positive number, got {lr}; FiT uses 0.0035.")
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}; FiT uses 400.")
    if weight_decay < 0:
        raise ConfigError(f"weight_decay must be non-negative, got {weight_decay}.")
    device = resolve_device(device)
    params = list(params)
    if not params:
        raise ConfigError("No trainable parameters were given to train_episodic.")
    trainable = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    generator = torch.Generator().manual_seed(int(seed))
    sampler = EpisodeSampler(
        train_split.labels, task_size=task_size, max_target_size=max_target_size, generator=generator
    )
    dataset = ImageSplitDataset(train_split, eval_transform(data_cfg))
    model.to(device).eval()  # FiT keeps the backbone in eval mode: normalisation statistics stay frozen
    on_cuda = device.startswith("cuda")
    if on_cuda:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    log.info(
        "FiT: training %d values for %d steps, Adam lr %g, task size %d, seed %d on %s",
        sum(p.numel() for p in params),
        steps,
        lr,
        task_size,
        seed,
        device,
    )
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="fit-episodes", disable=not progress, leave=False)
    for step in bar:
        check_cancelled()  # a cancelled job or a unit past its time limit stops within one step
        episode = sampler.sample()
        optimizer.zero_grad(set_to_none=True)
        context = _load(dataset, episode.context, augmentation, generator, device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
            context_features = model.backbone(context)
        context_labels = torch.as_tensor(episode.context_labels, device=device)
        with torch.autocast(context.device.type, enabled=False):
            stats = model.head.fit_stats(context_features.float(), context_labels, episode.way)
        n_targets, total = len(episode.target), 0.0
        for chunk_start in range(0, n_targets, task_size):
            chunk = slice(chunk_start, chunk_start + task_size)
            images = _load(dataset, episode.target[chunk], augmentation, generator, device)
            labels = torch.as_tensor(episode.target_labels[chunk], device=device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
                features = model.backbone(images)
            with torch.autocast(images.device.type, enabled=False):
                logits = model.head.logits(features.float(), stats)
            loss = F.cross_entropy(logits, labels) * (len(labels) / n_targets)
            if not torch.isfinite(loss):
                raise ConfigError(
                    f"The FiT loss became {loss.item()} at step {step}; lower the learning rate (now {lr})."
                )
            loss.backward(retain_graph=chunk_start + task_size < n_targets)
            total += float(loss.detach())
        grads = [p.grad for p in params if p.grad is not None]
        grad_norm = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads))) if grads else 0.0
        if on_step is not None:
            on_step(step, total, grad_norm)
        optimizer.step()
        bar.set_postfix(loss=f"{total:.4f}")
    log.info("FiT: trained %d steps in %.1f s", steps, time.perf_counter() - start)
    return model.eval()
