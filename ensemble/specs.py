"""What a fine-tune is asked to do: the sweep grid, one run's spec, and the hyper-parameter checks.

The `check_*` functions are the one set of hyper-parameter rules: `SweepConfig`, `RunSpec` and
the service's job parameters all call them, so a limit or a message changes in one place.
Each returns the value in its canonical type or raises ConfigError saying how to fix it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from zooens.ensemble._registry import get_strategy
from zooens.errors import ConfigError
from zooens.zoo import check_preprocessing

__all__ = [
    "AUGMENTATION_CHOICES",
    "AUGMENTATIONS",
    "BIT_BASE_LR",
    "BIT_BATCH",
    "BitRule",
    "MAX_LEARNING_RATE",
    "MAX_RESOLUTION",
    "MAX_STEPS",
    "MIN_RESOLUTION",
    "bit_hyperrule",
    "check_augmentation",
    "resolve_augmentation",
    "RunSpec",
    "SweepConfig",
    "check_batch_size",
    "check_learning_rate",
    "check_resolution",
    "check_seed",
    "check_steps",
]

MIN_RESOLUTION = 16
MAX_RESOLUTION = 1024
MAX_STEPS = 100_000
"""Most optimisation steps of one run: a job's unit must end in bounded time (and be cancellable
before that); longer training is several runs or a change of this constant in a fork, not a request."""

V = TypeVar("V")


AUGMENTATIONS = ("none", "flip", "crop", "crop_flip")
"""Training-time augmentation of images: `flip` (random horizontal flips: only for data whose labels
survive a mirror), `crop` (a random crop of a slightly enlarged image, as BiT's random crop), both, or none."""


AUGMENTATION_CHOICES = ("auto", *AUGMENTATIONS)
"""What a job may ask for: an explicit augmentation, or `auto` (`resolve_augmentation`)."""


def resolve_augmentation(requested: str, strategy: str, extra: dict[str, Any] | None) -> str:
    """The augmentation one run uses: `requested` unless it is `auto`, then what the data declares.

    The data declares, in `ImageDataset.extra` (a VTAB task's table row and `task.json`, a user
    dataset's `zooens.json`), `flip_preserves_label` (default False: a mirror may change the label,
    e.g. digits, text, positions, laterality) and `crop_preserves_label` (default True: BiT
    random-crops every task; False where the label is a position or a count that a crop can move
    or cut off). `auto` then gives:

    - `full`: BiT's fine-tuning augmentation (Kolesnikov et al. 2020, section 3.3: random crop and
      horizontal flip), each part only where the data declares it label-preserving: `crop_flip`,
      `crop`, `flip` or `none`;
    - every other image strategy: `flip` where flips are declared safe, else `none`. No crop: the
      VTAB-1k protocols of the adapter papers (VTAB's reference, FiT, KAdaptation) train without
      augmentation, and a mirror that keeps the label is the one free, harmless view;
    - a strategy that trains on cached embeddings (`linear`): `none` always, whatever was asked,
      since its features are computed once from unaugmented images.

    An explicit request is used as given (the user vouches for their data), except that a strategy
    without image training records `none`.
    """
    if requested != "auto":
        check_augmentation(requested)
    if not get_strategy(strategy).augments_images:
        return "none"
    if requested != "auto":
        return requested
    extra = extra or {}
    flip = bool(extra.get("flip_preserves_label", False))
    crop = bool(extra.get("crop_preserves_label", True)) and strategy == "full"
    return {(True, True): "crop_flip", (True, False): "crop", (False, True): "flip"}.get((crop, flip), "none")


def check_augmentation(value: str) -> str:
    """One of `AUGMENTATIONS`."""
    if value not in AUGMENTATIONS:
        raise ConfigError(
            f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {value!r}; use 'flip' only when a "
            "mirrored image keeps its label."
        )
    return value


MAX_LEARNING_RATE = 10.0
"""Largest learning rate accepted: learning rates lie in (0, 10]. BiT's is 0.003 and the adapters' sweeps reach
0.05; a rate above 10 diverges in a step with any of zooens' optimisers, whatever the model."""


def check_learning_rate(lr: float) -> float:
    """A positive, finite learning rate of at most `MAX_LEARNING_RATE`, as a float."""
    try:
        value = float(lr)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"lr must be a positive number, got {lr!r}; e.g. 0.01.") from None
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"lr must be a positive number, got {lr}; e.g. 0.01.")
    if value > MAX_LEARNING_RATE:
        raise ConfigError(
            f"lr must be a positive number at most {MAX_LEARNING_RATE:g} (learning rates lie in "
            f"(0, {MAX_LEARNING_RATE:g}]), got {value:g}; e.g. 0.01."
        )
    return value


def _as_int(name: str, value: Any, example: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}; e.g. {example}.")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}; e.g. {example}.") from None
    if isinstance(value, float) and number != value:
        raise ConfigError(f"{name} must be an integer, got {value!r}; e.g. {example}.")
    return number


def check_steps(n: int) -> int:
    """A number of optimisation steps of one run, between 1 and `MAX_STEPS`."""
    steps = _as_int("steps", n, "300")
    if steps < 1:
        raise ConfigError(f"steps must be at least 1, got {n}.")
    if steps > MAX_STEPS:
        raise ConfigError(
            f"steps must be at most {MAX_STEPS:,} per run, got {n}; this is the step count of one fine-tuning "
            f"run, so ask for a larger learning rate or a sweep of shorter runs (e.g. [300, 1000])."
        )
    return steps


def check_batch_size(n: int) -> int:
    """A mini-batch size, at least 1."""
    size = _as_int("batch_size", n, "64")
    if size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {n}; e.g. 64.")
    return size


def check_seed(n: int) -> int:
    """A random seed, a non-negative integer."""
    seed = _as_int("seed", n, "0")
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {n}.")
    return seed


def check_resolution(px: int | None) -> int | None:
    """An input resolution in pixels between 16 and 1024, or None for the model's own."""
    if px is None:
        return None
    value = _as_int("resolution", px, "224")
    if not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
        raise ConfigError(f"resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION} pixels, got {px}.")
    return value


BIT_BASE_LR = 0.003
"""BiT's fine-tuning learning rate (SGD, momentum 0.9, batch 512)."""
BIT_BATCH = 512
"""BiT's fine-tuning batch size; reached by gradient accumulation where memory is short."""
BIT_SMALL_IMAGE_AREA = 96 * 96
"""Images with fewer pixels than this count as small for BiT's resolution rule."""


@dataclass(frozen=True)
class BitRule:
    """BiT's hyper-rule for one dataset: what `full` uses unless the user says otherwise.

    steps : schedule length; warmup : linear warm-up steps; decay_steps : the steps at which the
    learning rate is divided by 10; batch : examples per optimisation step; mixup : MixUp's alpha
    (0 = off); resize, resolution : images are resized to `resize` px and cropped to `resolution` px
    (random crop in training); lr : the base learning rate.
    """

    steps: int
    warmup: int
    decay_steps: tuple[int, ...]
    batch: int
    mixup: float
    resize: int
    resolution: int
    lr: float = BIT_BASE_LR

    def scaled(self, steps: int) -> tuple[int, tuple[int, ...]]:
        """(warm-up, decay steps) of this schedule stretched or shrunk to `steps` steps, same fractions."""
        warmup = min(steps, round(steps * self.warmup / self.steps))
        return warmup, tuple(round(steps * d / self.steps) for d in self.decay_steps)


def bit_hyperrule(n_examples: int, image_size: tuple[int, int] | None, device: str) -> BitRule:
    """BiT-HyperRule (Kolesnikov et al. 2020, section 3.3; the authors' `bit_hyperrule.py`).

    Schedule by training-set size: under 20k examples 500 steps (warm-up 100, decays at 200, 300,
    400), under 500k 10k steps (warm-up 500, decays at 3k, 6k, 9k), else 20k steps (warm-up 500,
    decays at 6k, 12k, 18k). The paper's text gives the decays as 30%, 60% and 90% of the steps and a
    500-step warm-up; the authors' released rule (followed here, being the executable definition)
    matches that for the two longer schedules and uses warm-up 100 and decays at 40/60/80% for the
    500-step one, where a 500-step warm-up would be the whole run. Batch 512, lr 0.003. MixUp with
    alpha 0.1 from 20k examples on, never below.

    Resolution: on a GPU, images smaller than 96x96 px are resized to 160 and cropped to 128, larger
    ones resized to 448 and cropped to 384, as the paper states (the released code uses 512/480 for
    the larger ones; the paper's numbers are followed). On a CPU (`device` not CUDA) the small-image
    setting 160/128 is used for every dataset: 384 px full fine-tuning is impractical there, and the
    run records the resolution it used. `image_size` (height, width) None counts as large.
    """
    n = int(n_examples)
    if n < 1:
        raise ConfigError(
            f"BiT's hyper-rule needs the number of training examples, got {n_examples}; "
            "give a dataset with at least one training image."
        )
    if n < 20_000:
        steps, warmup, decays = 500, 100, (200, 300, 400)
    elif n < 500_000:
        steps, warmup, decays = 10_000, 500, (3_000, 6_000, 9_000)
    else:
        steps, warmup, decays = 20_000, 500, (6_000, 12_000, 18_000)
    small = image_size is not None and image_size[0] * image_size[1] < BIT_SMALL_IMAGE_AREA
    if small or not str(device).startswith("cuda"):
        resize, resolution = 160, 128
    else:
        resize, resolution = 448, 384
    return BitRule(
        steps=steps,
        warmup=warmup,
        decay_steps=decays,
        batch=BIT_BATCH,
        mixup=0.0 if n < 20_000 else 0.1,
        resize=resize,
        resolution=resolution,
    )


def _check_each(values: Iterable[V], check: Callable[[V], Any], message: str) -> tuple[Any, ...]:
    """Every value through `check`; one message about the whole list when any fails or it is empty."""
    try:
        checked = tuple(check(v) for v in values)
    except ConfigError:
        raise ConfigError(message) from None
    if not checked:
        raise ConfigError(message)
    return checked


@dataclass(frozen=True)
class SweepConfig:
    """A grid of learning rates x numbers of steps, with one batch size and seed.

    The defaults suit a linear head on standardised embeddings of a VTAB-1k-sized
    task (800 training images); each strategy carries its own `default_sweep`.
    """

    learning_rates: tuple[float, ...] = (0.01, 0.1)
    steps: tuple[int, ...] = (300, 1000)
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        learning_rates = tuple(self.learning_rates)
        steps = tuple(self.steps)
        object.__setattr__(
            self,
            "learning_rates",
            _check_each(
                learning_rates,
                check_learning_rate,
                f"learning_rates must be a non-empty list of positive numbers, got {list(learning_rates)}; "
                "e.g. [0.01, 0.1].",
            ),
        )
        object.__setattr__(
            self,
            "steps",
            _check_each(
                steps,
                check_steps,
                f"steps must be a non-empty list of positive integers, got {list(steps)}; e.g. [300, 1000].",
            ),
        )
        object.__setattr__(self, "batch_size", check_batch_size(self.batch_size))
        object.__setattr__(self, "seed", check_seed(self.seed))

    def grid(self) -> list[dict[str, Any]]:
        """Every (lr, steps) pair, learning rates outer, as dicts with batch_size and seed."""
        return [
            {"lr": lr, "steps": steps, "batch_size": self.batch_size, "seed": self.seed}
            for lr, steps in itertools.product(self.learning_rates, self.steps)
        ]


@dataclass(frozen=True)
class RunSpec:
    """One fine-tuning run: which model, which strategy, which hyper-parameters.

    `augmentation` is a property of the data, declared by the caller (see `AUGMENTATIONS`):
    no flip unless the task says flips preserve its labels.
    """

    model_name: str
    strategy: str
    lr: float
    steps: int
    seed: int = 0
    resolution: int | None = None
    batch_size: int = 64
    options: dict[str, Any] = field(default_factory=dict)
    augmentation: str = "none"
    preprocessing: str = "model"

    def validate(self) -> RunSpec:
        """Check the strategy name and the hyper-parameters; raise ConfigError saying how to fix them."""
        strategy = get_strategy(self.strategy)
        check_learning_rate(self.lr)
        check_steps(self.steps)
        check_batch_size(self.batch_size)
        check_seed(self.seed)
        check_resolution(self.resolution)
        check_augmentation(self.augmentation)
        check_preprocessing(self.preprocessing)
        if not isinstance(self.options, dict):
            raise ConfigError(f"options must be a dict of strategy options, got {type(self.options).__name__}.")
        strategy.check_options(self.options)
        return self

    @property
    def hparams(self) -> dict[str, Any]:
        """The hyper-parameters as recorded with a run (options included)."""
        return {
            "lr": self.lr,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "resolution": self.resolution,
            "augmentation": self.augmentation,
            "preprocessing": self.preprocessing,
            **self.options,
        }
