"""The fine-tuning sweep: run specs and results, artifacts, and the strategy registry.

A *strategy* turns a zoo model and a dataset into a classifier (`linear`: a head on frozen
cached embeddings; `full`: the whole network; the adapters of `ensemble/adapters`). Each
registers itself by name with `@register_strategy("name")`; `STRATEGIES` maps names to
instances. A run (`run_finetune`) returns a `RunResult` holding its validation and test
class probabilities and an `Artifact`: a JSON config plus only the tensors the run changed,
from which `Strategy.load` rebuilds a module mapping preprocessed images to logits.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from zooens.errors import ConfigError, DatasetError, NotFoundError
from zooens.utils import resolve_device

log = logging.getLogger(__name__)

__all__ = [
    "Artifact",
    "ImageStrategy",
    "RunResult",
    "RunSpec",
    "STRATEGIES",
    "Strategy",
    "SweepConfig",
    "build_run_result",
    "get_strategy",
    "load_artifact_model",
    "mean_cross_entropy",
    "register_strategy",
    "run_finetune",
]

CONFIG_FILE = "config.json"
TENSORS_FILE = "model.safetensors"


# --------------------------------------------------------------------------------------
# Hyper-parameters


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
        object.__setattr__(self, "learning_rates", tuple(float(v) for v in self.learning_rates))
        object.__setattr__(self, "steps", tuple(int(v) for v in self.steps))
        if not self.learning_rates or any(not (v > 0 and math.isfinite(v)) for v in self.learning_rates):
            raise ConfigError(
                f"learning_rates must be a non-empty list of positive numbers, got {list(self.learning_rates)}; "
                "e.g. [0.01, 0.1]."
            )
        if not self.steps or any(v < 1 for v in self.steps):
            raise ConfigError(
                f"steps must be a non-empty list of positive integers, got {list(self.steps)}; e.g. [300, 1000]."
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}; e.g. 64.")
        if self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed}.")

    def grid(self) -> list[dict[str, Any]]:
        """Every (lr, steps) pair, learning rates outer, as dicts with batch_size and seed."""
        return [
            {"lr": lr, "steps": steps, "batch_size": self.batch_size, "seed": self.seed}
            for lr, steps in itertools.product(self.learning_rates, self.steps)
        ]


@dataclass(frozen=True)
class RunSpec:
    """One fine-tuning run: which model, which strategy, which hyper-parameters."""

    model: str
    strategy: str
    lr: float
    steps: int
    seed: int = 0
    resolution: int | None = None
    batch_size: int = 64
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> "RunSpec":
        """Check the hyper-parameters; raise ConfigError saying how to fix them."""
        get_strategy(self.strategy)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}; e.g. 0.01.")
        if self.steps < 1:
            raise ConfigError(f"steps must be at least 1, got {self.steps}.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}.")
        if self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed}.")
        if self.resolution is not None and not 16 <= self.resolution <= 1024:
            raise ConfigError(f"resolution must be between 16 and 1024 pixels, got {self.resolution}.")
        if not isinstance(self.options, dict):
            raise ConfigError(f"options must be a dict of strategy options, got {type(self.options).__name__}.")
        return self

    @property
    def hparams(self) -> dict[str, Any]:
        """The hyper-parameters as recorded with a run (options included)."""
        return {"lr": self.lr, "steps": self.steps, "batch_size": self.batch_size, "seed": self.seed,
                "resolution": self.resolution, **self.options}


# --------------------------------------------------------------------------------------
# Artifacts


@dataclass
class Artifact:
    """What a run saves: a JSON-able config and the tensors the run changed (nothing else).

    `config` always holds `model`, `strategy`, `classes`, `hparams` and `data_config`
    (the timm preprocessing used), plus whatever the strategy needs to rebuild the module.
    """

    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def nbytes(self) -> int:
        """Size of the saved tensors in bytes."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @property
    def numel(self) -> int:
        """Number of values in the saved tensors."""
        return sum(t.numel() for t in self.tensors.values())

    def save(self, directory: str | Path) -> Path:
        """Write `config.json` and `model.safetensors` into `directory` (created); return it."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self.config, indent=2, sort_keys=True, default=_json_default))
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.tensors.items()}
        save_file(tensors, str(directory / TENSORS_FILE))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Artifact":
        """Read an artifact written by `save`."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config_path, tensors_path = directory / CONFIG_FILE, directory / TENSORS_FILE
        if not config_path.is_file() or not tensors_path.is_file():
            raise NotFoundError(
                f"No fine-tune artifact in {directory}: expected {CONFIG_FILE} and {TENSORS_FILE} "
                "as written by Artifact.save; check the path or re-run the fine-tune."
            )
        config = json.loads(config_path.read_text())
        return cls(config=config, tensors=load_file(str(tensors_path)))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (tuple, np.ndarray)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# --------------------------------------------------------------------------------------
# Results


@dataclass
class RunResult:
    """The outcome of one run. Probabilities are float32 with columns in `ds.classes` order."""

    model: str
    strategy: str
    hparams: dict[str, Any]
    val_ce: float
    val_acc: float
    test_acc: float | None
    seconds: float
    updated_params: int
    update_bytes: int
    val_proba: np.ndarray
    test_proba: np.ndarray | None
    artifact: Artifact

    def summary(self) -> dict[str, Any]:
        """The scalar facts, JSON-able (no probabilities, no tensors)."""
        out = asdict(replace(self, val_proba=np.zeros(0), test_proba=None, artifact=Artifact({}, {})))
        for key in ("val_proba", "test_proba", "artifact"):
            out.pop(key)
        return out


def mean_cross_entropy(proba: np.ndarray, y: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-probability of the true classes; `proba` (n, C), `y` (n,) ints."""
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    picked = proba[np.arange(len(y)), y]
    return 0.0 - float(np.mean(np.log(np.clip(picked, eps, None))))


def build_run_result(
    spec: RunSpec,
    ds: Any,
    *,
    val_proba: np.ndarray,
    test_proba: np.ndarray | None,
    artifact: Artifact,
    updated_params: int,
    seconds: float = 0.0,
) -> RunResult:
    """A RunResult with the metrics computed from the probabilities against `ds`'s labels."""
    y_val = np.asarray(ds.split("val").labels)
    val_proba = np.asarray(val_proba, dtype=np.float32)
    test_acc = None
    if test_proba is not None:
        test_proba = np.asarray(test_proba, dtype=np.float32)
        y_test = np.asarray(ds.split("test").labels)
        test_acc = float(np.mean(test_proba.argmax(1) == y_test)) if len(y_test) else None
    return RunResult(
        model=spec.model,
        strategy=spec.strategy,
        hparams=spec.hparams,
        val_ce=mean_cross_entropy(val_proba, y_val),
        val_acc=float(np.mean(val_proba.argmax(1) == y_val)),
        test_acc=test_acc,
        seconds=float(seconds),
        updated_params=int(updated_params),
        update_bytes=int(artifact.nbytes),
        val_proba=val_proba,
        test_proba=test_proba,
        artifact=artifact,
    )


# --------------------------------------------------------------------------------------
# Strategies


class Strategy:
    """How to fine-tune a zoo model on a dataset; subclasses register with `register_strategy`.

    Class attributes
    ----------------
    name : the registry name (set by `register_strategy`).
    needs_images : True when `fit` reads images (not only cached embeddings).
    shares_backbone : True when `load` leaves the backbone it is given untouched, so the
        predictor may pass one backbone to several members of the same model.
    default_sweep : the grid the pipeline uses unless the user gives one.
    """

    name: ClassVar[str] = ""
    needs_images: ClassVar[bool] = True
    shares_backbone: ClassVar[bool] = False
    default_sweep: ClassVar[SweepConfig] = SweepConfig()

    def fit(self, spec: RunSpec, ds: Any, *, cache: Any, device: str = "cpu", progress: bool = True) -> RunResult:
        """Train on `ds.split("train")`, score on val (and test when present)."""
        raise NotImplementedError

    def load(self, artifact: Artifact, *, device: str = "cpu", backbone: nn.Module | None = None) -> nn.Module:
        """The trained classifier, in eval mode on `device`: images (B, 3, H, W) -> logits (B, C).

        `backbone`, when given, is `zoo.create_model(artifact.config["model"], num_classes=0)`
        built by the caller (only used by strategies with `shares_backbone`).
        """
        raise NotImplementedError

    def data_config(self, artifact: Artifact) -> dict[str, Any]:
        """The timm preprocessing the loaded module expects (input_size, mean, std, ...)."""
        cfg = dict(artifact.config["data_config"])
        for key in ("input_size", "mean", "std"):
            if key in cfg and cfg[key] is not None:
                cfg[key] = tuple(cfg[key])
        return cfg

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ImageClassifier(nn.Module):
    """A backbone (images -> embeddings (B, D)) followed by a linear head (D -> C)."""

    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


def embedding_dim(backbone: nn.Module, data_cfg: dict[str, Any]) -> int:
    """Width of the backbone's pooled output (timm's `num_features`, else a dummy forward)."""
    dim = getattr(backbone, "num_features", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    with torch.inference_mode():
        return int(backbone.eval()(torch.zeros(1, *data_cfg["input_size"])).shape[-1])


class ImageStrategy(Strategy):
    """Base of strategies that train on images with `ensemble.training.fit_classifier`.

    Subclasses implement `build` (the classifier and the parameters that train),
    `artifact_tensors` (what to save) and `load`; options may define `loss_fn`,
    `momentum`, `weight_decay` and `freeze_norm_stats`.
    """

    needs_images: ClassVar[bool] = True
    freeze_norm_stats: ClassVar[bool] = False

    def build(self, spec: RunSpec, n_classes: int, data_cfg: dict[str, Any]) -> tuple[nn.Module, list[nn.Parameter]]:
        raise NotImplementedError

    def artifact_tensors(self, model: nn.Module, spec: RunSpec) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def artifact_config(self, model: nn.Module, spec: RunSpec) -> dict[str, Any]:
        """Extra config entries the strategy's `load` needs (none by default)."""
        return {}

    def loss_fn(self, spec: RunSpec) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None:
        return None

    def after_training(self, model: nn.Module, spec: RunSpec, ds: Any, data_cfg: dict[str, Any], device: str) -> None:
        """A hook between training and evaluation (e.g. fitting a head on all training features)."""

    def fit(self, spec: RunSpec, ds: Any, *, cache: Any, device: str = "cpu", progress: bool = True) -> RunResult:
        from zooens.ensemble.training import fit_classifier, predict_proba
        from zooens.zoo import data_config

        device = resolve_device(device)
        data_cfg = dict(data_config(spec.model, resolution=spec.resolution))
        n_classes = len(ds.classes)
        model, params = self.build(spec, n_classes, data_cfg)
        options = dict(spec.options)
        fit_classifier(
            model,
            params,
            ds.split("train"),
            data_cfg,
            lr=spec.lr,
            steps=spec.steps,
            batch_size=spec.batch_size,
            seed=spec.seed,
            device=device,
            momentum=float(options.get("momentum", 0.9)),
            weight_decay=float(options.get("weight_decay", 0.0)),
            loss_fn=self.loss_fn(spec),
            progress=progress,
            augment=bool(options.get("augment", True)),
            freeze_norm_stats=bool(options.get("freeze_norm_stats", self.freeze_norm_stats)),
        )
        self.after_training(model, spec, ds, data_cfg, device)
        eval_batch = int(options.get("eval_batch_size", max(spec.batch_size, 64)))
        val_proba = predict_proba(model, ds.split("val"), data_cfg, batch_size=eval_batch, device=device)
        test_proba = None
        if "test" in ds.splits:
            test_proba = predict_proba(model, ds.split("test"), data_cfg, batch_size=eval_batch, device=device)
        tensors = self.artifact_tensors(model, spec)
        config = _base_config(spec, ds, data_cfg) | self.artifact_config(model, spec)
        artifact = Artifact(config=config, tensors=tensors)
        updated = sum(p.numel() for p in params)
        return build_run_result(spec, ds, val_proba=val_proba, test_proba=test_proba, artifact=artifact,
                                updated_params=updated)


def _base_config(spec: RunSpec, ds: Any, data_cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": spec.model,
        "strategy": spec.strategy,
        "resolution": spec.resolution,
        "classes": list(ds.classes),
        "hparams": spec.hparams,
        "data_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in data_cfg.items()},
    }


STRATEGIES: dict[str, Strategy] = {}

S = TypeVar("S", bound=type[Strategy])


def register_strategy(name: str) -> Callable[[S], S]:
    """Class decorator: register an instance of the class under `name` in `STRATEGIES`."""

    def decorate(cls: S) -> S:
        if name in STRATEGIES:
            raise ConfigError(
                f"A strategy named {name!r} is already registered ({type(STRATEGIES[name]).__name__}); "
                "choose another name."
            )
        cls.name = name
        STRATEGIES[name] = cls()
        return cls

    return decorate


def get_strategy(name: str) -> Strategy:
    """The registered strategy `name`; ConfigError listing the valid names otherwise."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(
            f"Unknown fine-tuning strategy {name!r}; choose from {', '.join(sorted(STRATEGIES))}."
        ) from None


def load_artifact_model(
    artifact: Artifact | str | Path, *, device: str = "cpu", backbone: nn.Module | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved run: (module images -> logits, its timm data config)."""
    if not isinstance(artifact, Artifact):
        artifact = Artifact.load(artifact)
    strategy = get_strategy(artifact.config.get("strategy", ""))
    if backbone is not None and not strategy.shares_backbone:
        backbone = None
    module = strategy.load(artifact, device=resolve_device(device), backbone=backbone)
    return module, strategy.data_config(artifact)


def run_finetune(spec: RunSpec, ds: Any, *, cache: Any, device: str = "cpu", progress: bool = True) -> RunResult:
    """Run one fine-tune of `spec.model` on `ds` with `spec.strategy`; `seconds` is the wall time."""
    spec.validate()
    for split in ("train", "val"):
        if split not in ds.splits:
            raise DatasetError(
                f"Fine-tuning needs 'train' and 'val' splits; {ds.name!r} has {', '.join(sorted(ds.splits))}. "
                "Use selection.datasets.vtab_split to draw them."
            )
    strategy = get_strategy(spec.strategy)
    device = resolve_device(device)
    log.info("Fine-tuning %s with %s: lr %g, %d steps, batch %d, seed %d",
             spec.model, spec.strategy, spec.lr, spec.steps, spec.batch_size, spec.seed)
    start = time.perf_counter()
    result = strategy.fit(spec, ds, cache=cache, device=device, progress=progress)
    result.seconds = time.perf_counter() - start
    log.info("%s/%s: val CE %.4f, val acc %.4f, %.1f s", spec.model, spec.strategy,
             result.val_ce, result.val_acc, result.seconds)
    return result


# Registration happens at import time; the strategy modules import the names above.
from zooens.ensemble import full as _full  # noqa: E402,F401
from zooens.ensemble import linear as _linear  # noqa: E402,F401

try:  # the adapters register themselves when their package is importable
    import zooens.ensemble.adapters as _adapters  # noqa: E402,F401
except ImportError as exc:  # pragma: no cover - only while the adapters are being written
    log.warning("zooens.ensemble.adapters could not be imported, so its strategies are missing: %s", exc)
