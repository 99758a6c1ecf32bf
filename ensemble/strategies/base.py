"""The strategy interface, and the shared machinery of strategies that train on images.

A *strategy* turns a zoo model and a dataset into a classifier. It registers itself by name
with `@register_strategy("name")` (see `zooens.ensemble._registry`); its run returns a
`RunResult` whose `Artifact` holds only the tensors the run changed, from which `load`
rebuilds a module mapping preprocessed images to logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from zooens.ensemble.artifacts import Artifact
from zooens.ensemble.results import RunResult, build_run_result
from zooens.ensemble.specs import RunSpec, SweepConfig
from zooens.ensemble.training import fit_classifier, predict_proba
from zooens.errors import ConfigError
from zooens.utils import resolve_device
from zooens.zoo import data_config

__all__ = [
    "IMAGE_TRAINING_OPTIONS",
    "MAX_EVAL_BATCH_SIZE",
    "ImageClassifier",
    "ImageStrategy",
    "Strategy",
    "base_config",
    "check_training_options",
    "embedding_dim",
]

# The options `ImageStrategy.fit` reads, whatever the strategy.
IMAGE_TRAINING_OPTIONS = frozenset({"momentum", "weight_decay", "freeze_norm_stats", "eval_batch_size"})
MAX_EVAL_BATCH_SIZE = 4096
"""Most images of one evaluation batch (`eval_batch_size`), as `JobParams.batch_size` for training."""


def check_training_options(strategy: str, options: dict[str, Any]) -> None:
    """ConfigError unless the shared training options present in `options` are in range: `momentum` in
    [0, 1), `weight_decay` in [0, 1], `eval_batch_size` an integer from 1 to 4096, `freeze_norm_stats` a bool."""

    def number(key: str) -> float | None:
        value = options.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{strategy}.{key} must be a finite number, got {value!r}.")
        return float(value)

    momentum = number("momentum")
    if momentum is not None and not 0 <= momentum < 1:
        raise ConfigError(f"{strategy}.momentum must be in [0, 1), got {momentum:g}; SGD's usual value is 0.9.")
    weight_decay = number("weight_decay")
    if weight_decay is not None and not 0 <= weight_decay <= 1:
        raise ConfigError(f"{strategy}.weight_decay must be in [0, 1], got {weight_decay:g}; e.g. 1e-4.")
    batch = options.get("eval_batch_size")
    if batch is not None and (
        isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_EVAL_BATCH_SIZE
    ):
        raise ConfigError(
            f"{strategy}.eval_batch_size must be an integer from 1 to {MAX_EVAL_BATCH_SIZE}, got {batch!r}; e.g. 256."
        )
    freeze = options.get("freeze_norm_stats")
    if freeze is not None and not isinstance(freeze, bool):
        raise ConfigError(f"{strategy}.freeze_norm_stats must be true or false, got {freeze!r}.")


class Strategy:
    """How to fine-tune a zoo model on a dataset; subclasses register with `register_strategy`.

    Class attributes
    ----------------
    name : the registry name (set by `register_strategy`).
    needs_images : True when `fit` reads images (not only cached embeddings).
    shares_backbone : True when `load` leaves the backbone it is given untouched, so the
        predictor may pass one backbone to several members of the same model.
    default_sweep : the grid the pipeline uses unless the user gives one.
    accepted_options : the option names `check_options` lets through by default.
    augments_images : False for strategies that train on cached embeddings: they can apply no
        augmentation, so a job records `none` for them (`specs.resolve_augmentation`).
    joint : True for a strategy whose one run reads several models (`concat`: a probe over the top-K's
        embeddings): a job plans it once, keyed by the best-ranked model, not once per model.
    """

    name: ClassVar[str] = ""
    needs_images: ClassVar[bool] = True
    augments_images: ClassVar[bool] = True
    shares_backbone: ClassVar[bool] = False
    joint: ClassVar[bool] = False
    default_sweep: ClassVar[SweepConfig] = SweepConfig()
    accepted_options: ClassVar[frozenset[str]] = frozenset()

    def check_options(self, options: dict[str, Any]) -> None:
        """Raise ConfigError, saying what to change, unless `options` suit this strategy.

        Called when a job is submitted and when a run is validated, so that a bad option fails
        before any work. By default only the names in `accepted_options` are allowed.
        """
        self._check_known(options, ", ".join(sorted(self.accepted_options)) or "no options")

    def _check_known(self, options: Any, accepts: str) -> None:
        """`options` is a mapping of names in `accepted_options`; else a ConfigError saying what it `accepts`."""
        if not isinstance(options, dict):
            raise ConfigError(f"Options of {self.name} must be a mapping of option names to values.")
        unknown = set(options) - self.accepted_options
        if unknown:
            raise ConfigError(
                f"Unknown option(s) {', '.join(sorted(unknown))} for strategy {self.name!r}; it accepts {accepts}."
            )
        check_training_options(self.name, options)

    def check_job(self, options: dict[str, Any], *, top_k: int, zoo_size: int) -> None:
        """Raise ConfigError, saying what to change, when a job that selects `min(top_k, zoo_size)` models
        could never run this strategy with `options` (e.g. `aft` with one model: no teacher other than the
        student). Called at submission (`pipeline.checks.check_job`), so such a job is refused before any
        unit runs, not after hours of the others. By default every job can run it."""

    def supports(self, model_name: str, options: dict[str, Any]) -> str | None:
        """Why this strategy cannot fine-tune the zoo entry `model_name` with `options` (a sentence that says what to
        use instead), or None when it can. Decided from the architecture alone, without weights, so a job
        checks it at submission (`pipeline.checks.check_job`) and plans no run it cannot train
        (`pipeline.plan.plan_finetune_units`). By default every entry."""
        return None

    def job_options(self, options: dict[str, Any], *, selected_models: list[str]) -> dict[str, Any]:
        """The options a job's runs use, given the models the job selected (by default `options`)."""
        return options

    def replay_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The options that train a recorded run's chosen configuration again, from the strategy options its
        hparams recorded (`RunSpec.hparams`), with no choice left to make on a validation split (a VTAB refit
        trains on train+val): by default the recorded options themselves."""
        return dict(options)

    def sweep_on(self, device: str | None) -> SweepConfig:
        """The default grid on a worker of `device` (`cuda`, `cpu`; None: any): `default_sweep` unless the
        strategy sweeps differently where compute allows (`full` on a GPU)."""
        return self.default_sweep

    def job_steps(self, steps: int, ds: Any, device: str, *, steps_given: bool) -> int:
        """The steps a job's run of this strategy takes on `ds`: by default `steps`, the sweep's (the
        user's when `steps_given`, else the strategy's `default_sweep`)."""
        return steps

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


def base_config(spec: RunSpec, ds: Any, data_cfg: dict[str, Any]) -> dict[str, Any]:
    """The artifact config entries every strategy saves (`model` is the model's name)."""
    return {
        "model": spec.model_name,
        "strategy": spec.strategy,
        "resolution": spec.resolution,
        "classes": list(ds.classes),
        "hparams": spec.hparams,
        "data_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in data_cfg.items()},
    }


class ImageStrategy(Strategy):
    """Base of strategies that train on images with `ensemble.training.fit_classifier`.

    Subclasses implement `build` (the classifier and the parameters that train),
    `artifact_tensors` (what to save) and `load`; options may define `loss_fn`,
    `momentum`, `weight_decay` and `freeze_norm_stats`.
    """

    needs_images: ClassVar[bool] = True
    freeze_norm_stats: ClassVar[bool] = False
    accepted_options: ClassVar[frozenset[str]] = IMAGE_TRAINING_OPTIONS

    def build(self, spec: RunSpec, n_classes: int, data_cfg: dict[str, Any]) -> tuple[nn.Module, list[nn.Parameter]]:
        raise NotImplementedError

    def artifact_tensors(self, model: nn.Module, spec: RunSpec) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def artifact_config(self, model: nn.Module, spec: RunSpec) -> dict[str, Any]:
        """Extra config entries the strategy's `load` needs (none by default)."""
        return {}

    def loss_fn(self, spec: RunSpec) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None:
        return None

    def training_plan(self, spec: RunSpec, ds: Any, device: str) -> tuple[RunSpec, dict[str, Any]]:
        """The spec as it will really run (e.g. the resolution a rule chose, so that the run records it)
        and extra keyword arguments of `fit_classifier` (schedule, accumulation, MixUp). By default
        the spec as given and nothing more."""
        return spec, {}

    def adjust_data_config(self, data_cfg: dict[str, Any], spec: RunSpec) -> dict[str, Any]:
        """The preprocessing of the run (by default the model's own at `spec.resolution`)."""
        return data_cfg

    def after_training(self, model: nn.Module, spec: RunSpec, ds: Any, data_cfg: dict[str, Any], device: str) -> None:
        """A hook between training and evaluation (e.g. fitting a head on all training features)."""

    def fit(self, spec: RunSpec, ds: Any, *, cache: Any, device: str = "cpu", progress: bool = True) -> RunResult:
        device = resolve_device(device)
        spec, extra_kwargs = self.training_plan(spec, ds, device)
        data_cfg = self.adjust_data_config(
            dict(data_config(spec.model_name, resolution=spec.resolution, preprocessing=spec.preprocessing)), spec
        )
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
            augmentation=spec.augmentation,
            freeze_norm_stats=bool(options.get("freeze_norm_stats", self.freeze_norm_stats)),
            **extra_kwargs,
        )
        self.after_training(model, spec, ds, data_cfg, device)
        eval_batch = int(options.get("eval_batch_size", min(max(spec.batch_size, 64), 256)))
        val_proba = predict_proba(model, ds.split("val"), data_cfg, batch_size=eval_batch, device=device)
        test_proba = None
        if "test" in ds.splits:
            test_proba = predict_proba(model, ds.split("test"), data_cfg, batch_size=eval_batch, device=device)
        tensors = self.artifact_tensors(model, spec)
        config = base_config(spec, ds, data_cfg) | self.artifact_config(model, spec)
        artifact = Artifact(config=config, tensors=tensors)
        updated = sum(p.numel() for p in params)
        return build_run_result(
            spec, ds, val_proba=val_proba, test_proba=test_proba, artifact=artifact, updated_params=updated
        )
