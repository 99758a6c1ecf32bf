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

__all__ = [
    "MAX_RESOLUTION",
    "AUGMENTATIONS",
    "MAX_STEPS",
    "check_augmentation",
    "MIN_RESOLUTION",
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


def check_augmentation(value: str) -> str:
    """One of `AUGMENTATIONS`."""
    if value not in AUGMENTATIONS:
        raise ConfigError(
            f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {value!r}; use 'flip' only when a "
            "mirrored image keeps its label."
        )
    return value


def check_learning_rate(lr: float) -> float:
    """A positive, finite learning rate, as a float."""
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise ConfigError(f"lr must be a positive number, got {lr!r}; e.g. 0.01.") from None
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"lr must be a positive number, got {lr}; e.g. 0.01.")
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
        raise ConfigError(
            f"resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION} pixels, got {px}."
        )
    return value


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
        object.__setattr__(self, "learning_rates", _check_each(
            learning_rates, check_learning_rate,
            f"learning_rates must be a non-empty list of positive numbers, got {list(learning_rates)}; "
            "e.g. [0.01, 0.1].",
        ))
        object.__setattr__(self, "steps", _check_each(
            steps, check_steps,
            f"steps must be a non-empty list of positive integers, got {list(steps)}; e.g. [300, 1000].",
        ))
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

    def validate(self) -> "RunSpec":
        """Check the strategy name and the hyper-parameters; raise ConfigError saying how to fix them."""
        strategy = get_strategy(self.strategy)
        check_learning_rate(self.lr)
        check_steps(self.steps)
        check_batch_size(self.batch_size)
        check_seed(self.seed)
        check_resolution(self.resolution)
        check_augmentation(self.augmentation)
        if not isinstance(self.options, dict):
            raise ConfigError(f"options must be a dict of strategy options, got {type(self.options).__name__}.")
        strategy.check_options(self.options)
        return self

    @property
    def hparams(self) -> dict[str, Any]:
        """The hyper-parameters as recorded with a run (options included)."""
        return {"lr": self.lr, "steps": self.steps, "batch_size": self.batch_size, "seed": self.seed,
                "resolution": self.resolution, "augmentation": self.augmentation, **self.options}
