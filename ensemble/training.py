"""The shared training loop of image-based fine-tuning strategies and adapters.

SGD with momentum under BiT's hyper-rule schedule (Kolesnikov et al. 2020): a linear
warm-up, then the learning rate divided by 10 at 30%, 60% and 90% of the steps. Every
source of randomness (sampling order, flips) comes from one generator seeded by `seed`,
so two calls with the same arguments give bitwise-equal weights on the CPU.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import timm.data
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from zooens.cancel import check_cancelled
from zooens.ensemble.specs import check_augmentation
from zooens.errors import ConfigError, DatasetError
from zooens.progress import inner_bars
from zooens.selection.decoded import Decoder, mean_std, normalize
from zooens.selection.images import to_rgb
from zooens.utils import resolve_device

log = logging.getLogger(__name__)

__all__ = [
    "DECAY_POINTS",
    "ImageList",
    "ImageSplitDataset",
    "LossFn",
    "SplitLike",
    "augment_batch",
    "bit_schedule",
    "default_warmup_steps",
    "eval_transform",
    "fit_classifier",
    "iterate_batches",
    "predict_logits",
    "predict_proba",
]

DECAY_POINTS: tuple[float, ...] = (0.3, 0.6, 0.9)
"""Fractions of the total steps at which the learning rate is divided by 10."""

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
"""`loss_fn(model, images (B, 3, H, W), labels (B,)) -> scalar loss`."""

_TRANSFORM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


class SplitLike(Protocol):
    """What the loop needs of a dataset split (`selection.datasets.Split` is one)."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def image(self, i: int) -> Image.Image: ...


class ImageList:
    """A list of PIL images seen as a split without labels (for prediction on new images)."""

    def __init__(self, images: Sequence[Image.Image]) -> None:
        self._images = list(images)
        self.labels = np.full(len(self._images), -1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._images)

    def image(self, i: int) -> Image.Image:
        return to_rgb(self._images[i])  # EXIF orientation, 16-bit, transparency: as every other decode


def bit_schedule(
    step: int, total_steps: int, base_lr: float, warmup_steps: int, decay_steps: Sequence[int] | None = None
) -> float:
    """Learning rate at `step` (0-based) under BiT's hyper-rule.

    During warm-up the rate rises linearly, `base_lr * (step + 1) / warmup_steps`, so the
    first step already moves (BiT's code starts at 0, a step that trains nothing); afterwards it
    is `base_lr / 10**k` where k counts the decay steps that `step` has reached: `decay_steps`
    when given (e.g. `specs.BitRule.decay_steps`), else `DECAY_POINTS` (30%, 60%, 90%) of
    `total_steps`, the paper's fractions.
    """
    if total_steps < 1:
        raise ConfigError(f"total_steps must be at least 1, got {total_steps}.")
    if not base_lr > 0 or not math.isfinite(base_lr):
        raise ConfigError(f"The learning rate must be a positive number, got {base_lr}.")
    if not 0 <= warmup_steps <= total_steps:
        raise ConfigError(
            f"warmup_steps must be in [0, total_steps], got {warmup_steps} for {total_steps} steps; "
            "use fewer warm-up steps or more steps."
        )
    if step < 0:
        raise ConfigError(f"step must be non-negative, got {step}.")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    points = [p * total_steps for p in DECAY_POINTS] if decay_steps is None else list(decay_steps)
    decays = sum(step >= point for point in points)
    return base_lr / 10**decays


def default_warmup_steps(steps: int) -> int:
    """BiT warms up for about a tenth of a short schedule (capped at BiT's 500 steps)."""
    return min(500, steps // 10)


def _transform_kwargs(data_cfg: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in ("input_size", "mean", "std") if k not in data_cfg]
    if missing:
        raise ConfigError(f"The data config lacks {', '.join(missing)}; build it with zoo.data_config(model).")
    kwargs = {k: data_cfg[k] for k in _TRANSFORM_KEYS if k in data_cfg and data_cfg[k] is not None}
    kwargs["input_size"] = tuple(kwargs["input_size"])
    kwargs["mean"] = tuple(kwargs["mean"])
    kwargs["std"] = tuple(kwargs["std"])
    return kwargs


def eval_transform(data_cfg: dict[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """timm's evaluation transform for a timm data config (resize, crop, normalise)."""
    return timm.data.create_transform(**_transform_kwargs(data_cfg), is_training=False)


TRAIN_DECODE_MAX_BYTES = 2 * 1024**3
"""Training images are decoded (resized, cropped) once and kept as uint8 when the split takes at most
this much memory at the model's input size (1,000 images at 224 px: 150 MB)."""


class TrainImages:
    """A training split's images as the model sees them, each decoded at most once per fit.

    A schedule draws every image many times (BiT's 500 steps of 512 draw each of 1,000 images 256
    times); decoding and resizing each draw again would keep a GPU waiting on one CPU core. The
    geometric part of the eval transform (`selection.decoded.Decoder`) runs once per image,
    on first use, into a uint8 buffer; `batch` normalises the drawn rows exactly as timm's ToTensor +
    Normalize do (`selection.decoded.normalize`), so the tensors equal `eval_transform`'s bit for bit.
    Splits larger than `TRAIN_DECODE_MAX_BYTES` are decoded per draw, as before.
    """

    def __init__(self, split: SplitLike, data_cfg: dict[str, Any]) -> None:
        self.split = split
        kwargs = _transform_kwargs(data_cfg)
        _, h, w = kwargs["input_size"]
        self.pixels: torch.Tensor | None = None
        if len(split) * 3 * h * w <= TRAIN_DECODE_MAX_BYTES:
            self.decoder = Decoder(kwargs)
            self.pixels = torch.empty((len(split), h, w, 3), dtype=torch.uint8)  # PIL's layout: channels-last
            self.done = torch.zeros(len(split), dtype=torch.bool)
            self.mean, self.std = mean_std(kwargs, "cpu")
        else:
            self.transform = eval_transform(data_cfg)

    def __len__(self) -> int:
        return len(self.split)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The preprocessed images (B, 3, H, W) float32 of the indices `idx`."""
        if self.pixels is None:
            return torch.stack([self.transform(self.split.image(int(i))) for i in idx])
        for i in torch.unique(idx[~self.done[idx]]).tolist():
            check_cancelled()  # a first batch of 512 decodes 512 images: stop within one
            self.decoder.into(self.pixels[i].numpy(), self.decoder.image(self.split, int(i)))
            self.done[i] = True
        return normalize(self.pixels[idx].permute(0, 3, 1, 2), self.mean, self.std).contiguous()


class ImageSplitDataset(torch.utils.data.Dataset):
    """A split as a torch Dataset of (preprocessed image (3, H, W), label)."""

    def __init__(self, split: SplitLike, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.split.image(int(i))), int(self.split.labels[int(i)])


def iterate_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless mini-batches of indices: a fresh permutation each epoch, drawn from `generator`.

    A batch never spans two epochs; with `batch_size >= n` every batch is the whole set.
    """
    if n < 1:
        raise DatasetError("The training split is empty; give at least one labelled example.")
    size = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - size + 1, size):
            yield perm[start : start + size]


CROP_ENLARGE = 1.143
"""`crop` enlarges a preprocessed image by this factor and takes a random crop of the original size
(BiT resizes to 512 and crops 480 at random: 512 / 480 = 1.067; 256 / 224 = 1.143 is the common
ImageNet ratio, used here since zooens's images arrive at the model's size)."""


def augment_batch(
    images: torch.Tensor, augmentation: str, generator: torch.Generator, crop_enlarge: float = CROP_ENLARGE
) -> torch.Tensor:
    """A randomly augmented copy of a preprocessed batch (B, 3, H, W), drawn from `generator`.

    `flip`: each image mirrored left-right with probability 1/2; `crop`: each image enlarged by
    `crop_enlarge` (bilinear; BiT's resize / crop ratio, e.g. 160 / 128, for `full`) and cropped back
    to (H, W) at a random offset; `crop_flip`: both;
    `none`: the batch unchanged. The draws happen in a fixed order, so a seed gives one sequence.
    """
    check_augmentation(augmentation)
    if augmentation == "none":
        return images
    out = images
    if augmentation in ("crop", "crop_flip"):
        h, w = images.shape[-2:]
        if not crop_enlarge > 1:
            raise ConfigError(f"crop_enlarge must be above 1, got {crop_enlarge}; e.g. {CROP_ENLARGE}.")
        big_h, big_w = max(h + 1, round(h * crop_enlarge)), max(w + 1, round(w * crop_enlarge))
        enlarged = F.interpolate(images, size=(big_h, big_w), mode="bilinear", align_corners=False)
        tops = torch.randint(0, big_h - h + 1, (len(images),), generator=generator)
        lefts = torch.randint(0, big_w - w + 1, (len(images),), generator=generator)
        corners = enumerate(zip(tops.tolist(), lefts.tolist(), strict=False))
        out = torch.stack([enlarged[i, :, top : top + h, left : left + w] for i, (top, left) in corners])
    if augmentation in ("flip", "crop_flip"):
        flip = torch.rand(len(images), generator=generator) < 0.5
        out = out.clone() if out is images else out
        out[flip] = out[flip].flip(-1)
    return out


def _validate(lr: float, steps: int, batch_size: int, momentum: float, weight_decay: float) -> None:
    if not lr > 0 or not math.isfinite(lr):
        raise ConfigError(f"lr must be a positive number, got {lr}; try 0.01.")
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {steps}.")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
    if not 0 <= momentum < 1:
        raise ConfigError(f"momentum must be in [0, 1), got {momentum}; BiT uses 0.9.")
    if weight_decay < 0:
        raise ConfigError(f"weight_decay must be non-negative, got {weight_decay}.")


def _default_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(images).float(), labels)


def _beta(alpha: float, generator: torch.Generator) -> float:
    """A draw from Beta(alpha, alpha) decided by `generator` (torch's Beta sampler takes none), so
    a seed still gives one sequence: numpy's Beta, seeded by a number drawn from `generator`."""
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    return float(rng.beta(alpha, alpha))


def _set_train_mode(model: nn.Module, freeze_norm_stats: bool) -> None:
    model.train()
    if freeze_norm_stats:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def fit_classifier(
    model: nn.Module,
    params: Iterable[nn.Parameter],
    train_split: SplitLike,
    data_cfg: dict[str, Any],
    *,
    lr: float,
    steps: int,
    batch_size: int,
    seed: int,
    device: str = "cpu",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    loss_fn: LossFn | None = None,
    progress: bool = True,
    augmentation: str = "none",
    warmup_steps: int | None = None,
    decay_steps: Sequence[int] | None = None,
    micro_batch_size: int | None = None,
    mixup_alpha: float = 0.0,
    crop_enlarge: float = CROP_ENLARGE,
    freeze_norm_stats: bool = False,
    on_step: Callable[[int, float], None] | None = None,
    on_batch: Callable[[torch.Tensor], None] | None = None,
) -> nn.Module:
    """Train `params` of `model` on the images of `train_split`; return the model (in eval mode).

    Parameters
    ----------
    model : maps a preprocessed image batch of shape (B, 3, H, W) to logits (B, n_classes).
    params : the only parameters that train; every other parameter gets `requires_grad=False`.
    train_split : `len(split)`, `split.image(i)` -> PIL RGB, `split.labels` int array (N,).
    data_cfg : timm data config (input_size, mean, std, interpolation, crop_pct, crop_mode).
    lr, steps, batch_size : SGD learning rate (peak of the BiT schedule), number of
        optimisation steps, mini-batch size (capped at N).
    seed : seeds the sampling order and the augmentation; nothing else draws random numbers.
    loss_fn : `loss_fn(model, images, labels) -> scalar`; default cross-entropy of `model(images)`.
    augmentation : one of `specs.AUGMENTATIONS` (`augment_batch`); "none" by default: flips only where
        the data declares them label-preserving.
    warmup_steps : linear warm-up length; default `default_warmup_steps(steps)`.
    decay_steps : the steps at which the rate is divided by 10 (`bit_schedule`); default 30/60/90%.
    micro_batch_size : gradient accumulation (BiT's `batch_split`): each step's batch of
        `batch_size` is run in chunks of at most this many images whose gradients add up to the
        whole batch's mean-loss gradient; the memory is that of one chunk. Exact for models without
        batch-dependent layers; batch-norm statistics are those of each chunk (as in BiT's code).
    mixup_alpha : MixUp (Zhang et al. 2018) as BiT applies it: one ratio l ~ Beta(alpha, alpha) per
        step, each image mixed with another of the same batch, loss l CE(y) + (1 - l) CE(y');
        0 turns it off. Only with the default cross-entropy loss.
    crop_enlarge : the enlargement before a random crop (`augment_batch`).
    freeze_norm_stats : keep batch-norm layers in eval mode so their running statistics
        (buffers, not parameters) stay as they were: use it when only adapters train.
    on_step : called as `on_step(step, loss)` after each step (for logging or tests).
    on_batch : called with each augmented batch of images (on the CPU, before the model sees it; tests).
    """
    _validate(lr, steps, batch_size, momentum, weight_decay)
    if micro_batch_size is not None and micro_batch_size < 1:
        raise ConfigError(f"micro_batch_size must be at least 1, got {micro_batch_size}; e.g. 32.")
    if not (mixup_alpha >= 0 and math.isfinite(mixup_alpha)):
        raise ConfigError(f"mixup_alpha must be a non-negative number, got {mixup_alpha}; BiT uses 0.1.")
    if mixup_alpha > 0 and loss_fn is not None:
        raise ConfigError("MixUp works with the default cross-entropy loss only; set mixup_alpha=0 for this strategy.")
    warmup = default_warmup_steps(steps) if warmup_steps is None else warmup_steps
    bit_schedule(0, steps, lr, warmup)  # validates warmup
    device = resolve_device(device)
    params = list(params)
    if not params:
        raise ConfigError("No trainable parameters were given to fit_classifier.")
    trainable = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    for p in params:
        p.requires_grad_(True)

    model.to(device)
    on_cuda = device.startswith("cuda")
    if on_cuda:
        model.to(memory_format=torch.channels_last)
    loss_fn = loss_fn or _default_loss
    generator = torch.Generator().manual_seed(int(seed))
    dataset = TrainImages(train_split, data_cfg)
    batches = iterate_batches(len(dataset), batch_size, generator)
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    _set_train_mode(model, freeze_norm_stats)

    log.info(
        "Training %d tensors (%d values) for %d steps, lr %g, batch %d, seed %d on %s",
        len(params),
        sum(p.numel() for p in params),
        steps,
        lr,
        batch_size,
        seed,
        device,
    )
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="fine-tune", disable=not inner_bars(progress), leave=False)
    for step in bar:
        check_cancelled()  # a cancelled job or a unit past its time limit stops within one step
        idx = next(batches)
        images = dataset.batch(idx)
        labels = torch.as_tensor(train_split.labels[idx.numpy()], dtype=torch.long)
        images = augment_batch(images, augmentation, generator, crop_enlarge)
        if on_batch is not None:
            on_batch(images)
        partner, ratio = None, 1.0
        if mixup_alpha > 0:
            ratio = _beta(mixup_alpha, generator)
            partner = torch.randperm(len(idx), generator=generator)
            images = ratio * images + (1 - ratio) * images[partner]
        for group in optimizer.param_groups:
            group["lr"] = bit_schedule(step, steps, lr, warmup, decay_steps)
        optimizer.zero_grad(set_to_none=True)
        chunk = len(idx) if micro_batch_size is None else min(micro_batch_size, len(idx))
        total = 0.0
        for start_i in range(0, len(idx), chunk):
            if start_i:  # a step of many micro-batches (BiT's 512 in 32s) stops within one of them
                check_cancelled()
            part = slice(start_i, start_i + chunk)
            x = images[part].to(device, non_blocking=True)
            y = labels[part].to(device, non_blocking=True)
            if on_cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
                if partner is None:
                    loss = loss_fn(model, x, y)
                else:
                    logits = model(x).float()
                    y2 = labels[partner][part].to(device, non_blocking=True)
                    loss = ratio * F.cross_entropy(logits, y) + (1 - ratio) * F.cross_entropy(logits, y2)
            if not torch.isfinite(loss):
                raise ConfigError(
                    f"The training loss became {loss.item()} at step {step}; lower the learning rate (now {lr})."
                )
            weight = len(y) / len(idx)  # chunks of a mean loss add up to the batch's mean
            (loss * weight).backward()
            total += float(loss.detach()) * weight
        optimizer.step()
        value = total
        if on_step is not None:
            on_step(step, value)
        bar.set_postfix(loss=f"{value:.4f}")
    log.info("Trained %d steps in %.1f s", steps, time.perf_counter() - start)
    model.eval()
    return model


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    split: SplitLike,
    data_cfg: dict[str, Any],
    *,
    batch_size: int = 64,
    device: str = "cpu",
) -> np.ndarray:
    """Logits of `model` for every image of `split`, float32 of shape (N, n_classes)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
    device = resolve_device(device)
    on_cuda = device.startswith("cuda")
    model.eval().to(device)
    transform = eval_transform(data_cfg)
    out: list[np.ndarray] = []
    for start in range(0, len(split), batch_size):
        check_cancelled()
        stop = min(start + batch_size, len(split))
        images = torch.stack([transform(split.image(i)) for i in range(start, stop)]).to(device)
        if on_cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
            logits = model(images)
        out.append(logits.float().cpu().numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def predict_proba(
    model: nn.Module,
    split: SplitLike,
    data_cfg: dict[str, Any],
    *,
    batch_size: int = 64,
    device: str = "cpu",
) -> np.ndarray:
    """Class probabilities (softmax of the logits), float32 of shape (N, n_classes)."""
    logits = predict_logits(model, split, data_cfg, batch_size=batch_size, device=device)
    return torch.softmax(torch.from_numpy(logits).double(), dim=1).float().numpy()
