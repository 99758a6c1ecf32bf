"""Strategy `concat`: one linear probe on the concatenated frozen embeddings of the job's top-K models.

An average of per-model probes (the greedy ensemble of `linear` runs) can only weigh each model's
opinion; one linear model over every model's features can combine them, e.g. when a task's signal is
spread over several networks (a position read partly from each). This is the practitioner's standard
alternative to an ensemble ("concatenate the embeddings and fit a logistic regression"), made a
candidate of the ensemble instead of a rival: the greedy step keeps it when it lowers the val
cross-entropy and mixes it with the per-model runs.

The protocol is `linear`'s (`LinearStrategy`, CLIP's linear probe): each feature is standardised with
the training statistics (so a model's width, not its scale, sets its share), then a multinomial L2
logistic regression is fitted by L-BFGS on a log grid of C, the C with the lowest val cross-entropy
is kept, and the probe is fitted again at that C on train+val (option `refit`, as `linear`), its held-out
probabilities of train and val cross-fitted (option `refit_folds`, as `linear`). Its input
is the models' cached embeddings, side by side in the order of `models`, so a job that ranked the
models pays no forward pass for it.

A job plans one `concat` run, keyed by the best-ranked model (`finetune:<top-1>:concat:...`), whose
option `models` the job sets to the top-K in ranking order (`job_options`); with `top_k` 1 it is not
planned (it would be that model's `linear` run). At prediction every member model's backbone runs with
its own preprocessing, and a backbone shared with `linear` members runs once (the predictor shares
features, the cost model shares passes: `ensemble.cost`).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from zooens.ensemble._registry import register_strategy
from zooens.ensemble.artifacts import Artifact
from zooens.ensemble.results import RunResult
from zooens.ensemble.specs import RunSpec
from zooens.ensemble.strategies.linear import (
    _LBFGS_OPTIONS,
    LinearStrategy,
    _Standardise,
)
from zooens.errors import ConfigError
from zooens.zoo import create_model, data_config

log = logging.getLogger(__name__)

__all__ = ["MAX_CONCAT_MODELS", "ConcatProbeModule", "ConcatStrategy"]

MAX_CONCAT_MODELS = 16
"""Most models one `concat` probe reads (each adds its embedding width to the probe's input)."""


class ConcatProbeModule(nn.Module):
    """Frozen backbones -> their embeddings side by side -> standardisation -> linear head.

    `parts` are (backbone, data config) pairs in the probe's feature order. `forward(x)` feeds every
    backbone the same tensor, resized to the backbone's input size when it differs: that is the member's
    cost (`ensemble.cost.forward_cost`) and exact when the models share their preprocessing; the
    predictor (`EnsemblePredictor`) gives each backbone its own preprocessing (`features`).
    """

    def __init__(self, backbones: nn.ModuleList, data_configs: list[dict[str, Any]], dims: list[int], n_classes: int):
        super().__init__()
        if not (len(backbones) == len(data_configs) == len(dims)):
            raise ConfigError("A concat probe needs one backbone, data config and width per model.")
        self.backbones = backbones
        self.data_configs = data_configs
        self.dims = list(dims)
        self.norm = _Standardise(sum(dims))
        self.head = nn.Linear(sum(dims), n_classes)

    def logits(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits from each backbone's embeddings (B, D_m), in `parts` order."""
        return self.head(self.norm(torch.cat([f.float() for f in features], dim=1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for backbone, cfg in zip(self.backbones, self.data_configs, strict=True):
            size = tuple(int(v) for v in cfg["input_size"][1:])
            xi = x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            feats.append(backbone(xi))
        return self.logits(feats)


@register_strategy("concat")
class ConcatStrategy(LinearStrategy):
    """A linear probe (`linear`'s L-BFGS protocol) on the concatenated embeddings of several models.

    Options: `models` (set by the job: the top-K model names in ranking order, the run's model first;
    2 to `MAX_CONCAT_MODELS` distinct names), `c_grid`, `c_selection`, `refit` and `refit_folds` (as
    `linear`). Solver
    `lbfgs` only: the SGD head exists for old `linear` runs and for training sets too large for a full-batch
    pass, neither of which a new joint probe needs. One run per job (`joint`): see the module docstring.
    """

    joint: ClassVar[bool] = True
    accepted_options: ClassVar[frozenset[str]] = frozenset({"models"}) | _LBFGS_OPTIONS

    def job_options(self, options: dict[str, Any], *, selected_models: list[str]) -> dict[str, Any]:
        """The job's top-K (`selected_models`, ranking order) as `models`."""
        return {**options, "models": list(selected_models)}

    def replay_options(self, options: dict[str, Any]) -> dict[str, Any]:
        kept = super().replay_options(options)
        kept.pop("solver", None)
        return kept

    def check_options(self, options: dict[str, Any]) -> None:
        """`models` (a list of 2 to `MAX_CONCAT_MODELS` distinct model names), `c_grid`, `c_selection`, `refit`,
        `refit_folds`."""
        self._check_known(options, "c_grid, c_selection, refit and refit_folds (its models are the job's top-K)")
        self._check_path_options(options)
        if "models" in options:
            models = options["models"]
            ok = isinstance(models, list) and all(isinstance(m, str) and m for m in models)
            if not ok or not 2 <= len(models) <= MAX_CONCAT_MODELS or len(set(models)) != len(models):
                raise ConfigError(
                    f"models of strategy 'concat' must be 2 to {MAX_CONCAT_MODELS} distinct model names, got "
                    f"{models!r:.200}; a job sets them to its top-K (top_k at least 2)."
                )

    def fit(self, spec: RunSpec, ds: Any, *, cache: Any, device: str = "cpu", progress: bool = True) -> RunResult:
        self._check_run(spec)
        models = list(spec.options.get("models") or [])
        if len(models) < 2 or models[0] != spec.model_name:
            raise ConfigError(
                f"A concat run of {spec.model_name!r} needs option models: that model first, then at least one "
                f"other, got {models!r}."
            )
        parts = [self._features(m, spec, ds, cache=cache, device=device, progress=progress) for m in models]
        X = {s: np.concatenate([p[s] for p in parts], axis=1) for s in parts[0]}
        configs = [dict(data_config(m, resolution=spec.resolution, preprocessing=spec.preprocessing)) for m in models]
        extra = {
            "models": models,
            "dims": [int(p["train"].shape[1]) for p in parts],
            "data_configs": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items()} for c in configs],
        }
        log.info("concat probe over %d models, %d features", len(models), X["train"].shape[1])
        return self._fit_head(spec, ds, X, configs[0], extra)

    def load(self, artifact: Artifact, *, device: str = "cpu", backbone: nn.Module | None = None) -> nn.Module:
        """`backbone`: the models' embedders in `models` order as an `nn.ModuleList` (the predictor's shared
        ones), or None to build them from the zoo."""
        cfg = artifact.config
        models, dims = list(cfg.get("models") or []), [int(d) for d in cfg.get("dims") or []]
        configs = [dict(c) for c in cfg.get("data_configs") or []]
        if len(models) < 2 or not (len(models) == len(dims) == len(configs)):
            raise ConfigError(
                f"The artifact of {cfg.get('model')!r} does not describe a concat probe (models, dims and data "
                "configs, one per model); was it saved by strategy 'concat'?"
            )
        for c in configs:
            for key in ("input_size", "mean", "std"):
                if c.get(key) is not None:
                    c[key] = tuple(c[key])
        if backbone is None:
            backbone = nn.ModuleList(create_model(m, num_classes=0) for m in models)
        if not isinstance(backbone, nn.ModuleList) or len(backbone) != len(models):
            raise ConfigError(f"A concat probe needs {len(models)} backbones as an nn.ModuleList, in models order.")
        weight = artifact.tensors.get("head.weight")
        if weight is None or weight.shape[1] != sum(dims):
            raise ConfigError(
                f"The concat probe of {cfg.get('model')!r} has a head for "
                f"{None if weight is None else weight.shape[1]} features, its models give {sum(dims)}."
            )
        module = ConcatProbeModule(backbone, configs, dims, weight.shape[0])
        missing, unexpected = module.load_state_dict(artifact.tensors, strict=False)
        if unexpected or any(not k.startswith("backbones.") for k in missing):
            raise ConfigError(
                f"The artifact of {cfg.get('model')!r} does not hold a concat probe's head "
                f"(missing {missing}, unexpected {unexpected})."
            )
        return module.eval().to(device)
