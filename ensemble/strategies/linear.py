"""Strategy `linear`: a softmax-regression head on frozen, cached embeddings.

The embeddings come from `selection.embed.embed_with_cache`, so a model ranked already
costs no forward pass. Features are standardised with the training statistics and the
head (zero-initialised, as in BiT) trains with SGD momentum under the BiT schedule on
seeded mini-batches. A few hundred steps take about a second on a CPU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from zooens.cancel import check_cancelled
from zooens.ensemble._registry import register_strategy
from zooens.ensemble.artifacts import Artifact
from zooens.ensemble.results import RunResult, build_run_result
from zooens.ensemble.specs import RunSpec, SweepConfig
from zooens.ensemble.strategies.base import Strategy, base_config
from zooens.ensemble.training import bit_schedule, default_warmup_steps, iterate_batches
from zooens.errors import ConfigError, DatasetError
from zooens.selection.embed import embed_with_cache
from zooens.zoo import create_model, data_config

log = logging.getLogger(__name__)

__all__ = ["LinearProbe", "LinearProbeModule", "LinearStrategy"]

_MIN_SCALE = 1e-6


def _sgd_softmax_regression(
    Z: torch.Tensor,
    targets: torch.Tensor,
    n_classes: int,
    *,
    steps: int,
    batches: Iterator[torch.Tensor],
    lr: Callable[[int], float],
    momentum: float,
    weight_decay: float,
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """A zero-initialised softmax-regression head trained by SGD with momentum on mini-batches of
    (Z, targets): weight (n_classes, d), bias (n_classes,) and the loss of each step.

    The same updates as `nn.Linear` + `F.cross_entropy` + `torch.optim.SGD` (momentum, dampening 0,
    the L2 term `weight_decay * W` added to the weight's gradient, not the bias's), with the
    gradient in closed form, d loss / d logits = (softmax - onehot) / batch: no autograd graph or
    optimiser per step, a few times faster for these small heads (tests/ensemble/test_finetune.py
    checks it against that autograd loop)."""
    weight = torch.zeros(n_classes, Z.shape[1])
    bias = torch.zeros(n_classes)
    buf_w = buf_b = None
    losses: list[float] = []
    for step in range(steps):
        check_cancelled()
        idx = next(batches)
        zb, yb = Z[idx], targets[idx]
        rows = torch.arange(len(idx))
        log_p = torch.log_softmax(torch.addmm(bias, zb, weight.T), dim=1)
        losses.append(-float(log_p[rows, yb].mean()))
        grad = log_p.exp_()
        grad[rows, yb] -= 1.0
        grad /= len(idx)
        grad_w = grad.T @ zb
        if weight_decay:
            grad_w.add_(weight, alpha=weight_decay)
        grad_b = grad.sum(0)
        if momentum:
            buf_w = grad_w if buf_w is None else buf_w.mul_(momentum).add_(grad_w)
            buf_b = grad_b if buf_b is None else buf_b.mul_(momentum).add_(grad_b)
            grad_w, grad_b = buf_w, buf_b
        rate = lr(step)
        weight.add_(grad_w, alpha=-rate)
        bias.add_(grad_b, alpha=-rate)
    return weight, bias, losses


class LinearProbe:
    """Multinomial logistic regression trained like a BiT head (SGD momentum, step decay).

    Parameters
    ----------
    lr : peak learning rate.
    steps : number of SGD steps.
    batch_size : mini-batch size (capped at the number of samples).
    momentum, weight_decay : SGD settings (L2 penalty on the weights, not the bias).
    warmup_steps : linear warm-up; default `default_warmup_steps(steps)`.
    random_state : seed of the mini-batch order.
    """

    def __init__(
        self,
        *,
        lr: float = 0.1,
        steps: int = 1000,
        batch_size: int = 64,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        warmup_steps: int | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.lr = lr
        self.steps = steps
        self.batch_size = batch_size
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray, *, n_classes: int | None = None) -> LinearProbe:
        """Learn the head.

        X : array-like of shape (n_samples, n_features); y : int labels of shape (n_samples,)
        in [0, n_classes). `n_classes` defaults to `max(y) + 1`.
        Sets `mean_`, `scale_` (n_features,), `coef_` (n_classes, n_features),
        `intercept_` (n_classes,), `classes_`, `loss_curve_` (loss per step).
        """
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        if X.ndim != 2 or len(X) == 0:
            raise DatasetError(f"X must be a non-empty 2-D array (n_samples, n_features), got shape {X.shape}.")
        if y.shape != (len(X),):
            raise DatasetError(f"y must have shape ({len(X)},) to match X, got {y.shape}.")
        if not np.all(np.isfinite(X)):
            raise DatasetError("X contains NaN or infinite values; check the embeddings.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}; e.g. 0.1.")
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"steps and batch_size must be at least 1, got {self.steps} and {self.batch_size}.")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ConfigError(
                "momentum must be in [0, 1) and weight_decay non-negative, "
                f"got {self.momentum} and {self.weight_decay}."
            )
        y = y.astype(np.int64)
        n_classes = int(y.max()) + 1 if n_classes is None else int(n_classes)
        if y.min() < 0 or y.max() >= n_classes:
            raise DatasetError(f"Labels must lie in [0, {n_classes}), got [{y.min()}, {y.max()}].")
        warmup = default_warmup_steps(self.steps) if self.warmup_steps is None else self.warmup_steps
        bit_schedule(0, self.steps, self.lr, warmup)

        self.mean_ = X.mean(axis=0)
        self.scale_ = np.maximum(X.std(axis=0), _MIN_SCALE).astype(np.float32)
        Z = torch.from_numpy((X - self.mean_) / self.scale_)
        targets = torch.from_numpy(y)
        seed = 0 if self.random_state is None else int(self.random_state)
        generator = torch.Generator().manual_seed(seed)
        weight, bias, losses = _sgd_softmax_regression(
            Z,
            targets,
            n_classes,
            steps=self.steps,
            batches=iterate_batches(len(Z), self.batch_size, generator),
            lr=lambda step: bit_schedule(step, self.steps, self.lr, warmup),
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )
        self.coef_ = weight.numpy()
        self.intercept_ = bias.numpy()
        if not math.isfinite(losses[-1]):
            raise ConfigError(f"The linear head diverged (loss {losses[-1]}); lower the learning rate (now {self.lr}).")
        self.classes_ = np.arange(n_classes)
        self.loss_curve_ = losses
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise ConfigError("This LinearProbe is not fitted yet; call fit(X, y) first.")

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits of shape (n_samples, n_classes), float32."""
        self._check_fitted()
        Z = (np.asarray(X, dtype=np.float32) - self.mean_) / self.scale_
        return (Z @ self.coef_.T + self.intercept_).astype(np.float32)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities of shape (n_samples, n_classes), float32, columns in `classes_`."""
        logits = torch.from_numpy(self.decision_function(X)).double()
        return torch.softmax(logits, dim=1).float().numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(1)]

    def to_module(self) -> LinearProbeModule:
        """The fitted head as a torch module on embeddings (normalisation + linear)."""
        self._check_fitted()
        module = LinearProbeModule(None, len(self.mean_), len(self.classes_))
        module.load_state_dict(self.tensors(), strict=False)
        return module

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors to save: `norm.mean`, `norm.scale`, `head.weight`, `head.bias`."""
        self._check_fitted()
        return {
            "norm.mean": torch.from_numpy(np.ascontiguousarray(self.mean_, dtype=np.float32)),
            "norm.scale": torch.from_numpy(np.ascontiguousarray(self.scale_, dtype=np.float32)),
            "head.weight": torch.from_numpy(np.ascontiguousarray(self.coef_)),
            "head.bias": torch.from_numpy(np.ascontiguousarray(self.intercept_)),
        }


class _Standardise(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class LinearProbeModule(nn.Module):
    """Frozen backbone -> standardisation with training statistics -> linear head.

    With `backbone=None` it maps embeddings (B, D) to logits; otherwise images (B, 3, H, W).
    """

    def __init__(self, backbone: nn.Module | None, dim: int, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.norm = _Standardise(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backbone is not None:
            x = self.backbone(x)
        return self.head(self.norm(x.float()))

    def head_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}


@register_strategy("linear")
class LinearStrategy(Strategy):
    """A linear head on frozen cached embeddings.

    Default sweep: lr (0.01, 0.1) x steps (300, 1000) at batch 64. With standardised
    features and a zero-initialised head, lr 0.1 for 1000 steps (80 epochs of 800 images)
    fits a VTAB-1k task closely; lr 0.01 and 300 steps are the regularised end (an early
    stop), which the greedy ensemble may prefer for its lower val cross-entropy.
    Options: `weight_decay` (default 0), `momentum` (0.9). No augmentation: the embeddings
    are computed once from the unaugmented images (a job records `augmentation: none`).
    """

    needs_images: ClassVar[bool] = False
    augments_images: ClassVar[bool] = False
    shares_backbone: ClassVar[bool] = True
    default_sweep: ClassVar[SweepConfig] = SweepConfig(learning_rates=(0.01, 0.1), steps=(300, 1000), batch_size=64)
    accepted_options: ClassVar[frozenset[str]] = frozenset({"weight_decay", "momentum"})

    def check_options(self, options: dict[str, Any]) -> None:
        """Only `weight_decay` and `momentum`."""
        if not isinstance(options, dict):
            raise ConfigError(f"Options of {self.name} must be a mapping of option names to values.")
        unknown = set(options) - self.accepted_options
        if unknown:
            raise ConfigError(
                f"Unknown option(s) {', '.join(sorted(unknown))} for strategy 'linear'; "
                "it accepts weight_decay and momentum."
            )

    def fit(self, spec: RunSpec, ds: Any, *, cache: Any, device: str = "cpu", progress: bool = True) -> RunResult:
        if spec.augmentation != "none":
            raise ConfigError(
                f"Strategy 'linear' trains on cached embeddings of unaugmented images, so augmentation "
                f"{spec.augmentation!r} cannot apply; use augmentation 'none' (or an image strategy such as 'full')."
            )
        splits = ["train", "val"] + (["test"] if "test" in ds.splits else [])
        X = {
            s: np.asarray(
                embed_with_cache(
                    spec.model_name,
                    ds,
                    s,
                    cache=cache,
                    resolution=spec.resolution,
                    preprocessing=spec.preprocessing,
                    device=device,
                    progress=progress,
                ).embeddings,
                dtype=np.float32,
            )
            for s in splits
        }
        self.check_options(spec.options)
        probe = LinearProbe(
            lr=spec.lr,
            steps=spec.steps,
            batch_size=spec.batch_size,
            momentum=float(spec.options.get("momentum", 0.9)),
            weight_decay=float(spec.options.get("weight_decay", 0.0)),
            random_state=spec.seed,
        ).fit(X["train"], ds.split("train").labels, n_classes=len(ds.classes))
        data_cfg = dict(data_config(spec.model_name, resolution=spec.resolution, preprocessing=spec.preprocessing))
        artifact = Artifact(config=base_config(spec, ds, data_cfg), tensors=probe.tensors())
        return build_run_result(
            spec,
            ds,
            val_proba=probe.predict_proba(X["val"]),
            test_proba=probe.predict_proba(X["test"]) if "test" in X else None,
            artifact=artifact,
            updated_params=int(probe.coef_.size + probe.intercept_.size),
        )

    def load(self, artifact: Artifact, *, device: str = "cpu", backbone: nn.Module | None = None) -> nn.Module:
        if backbone is None:
            backbone = create_model(artifact.config["model"], num_classes=0)
        weight = artifact.tensors["head.weight"]
        module = LinearProbeModule(backbone, weight.shape[1], weight.shape[0])
        missing, unexpected = module.load_state_dict(artifact.tensors, strict=False)
        if unexpected or any(not k.startswith("backbone.") for k in missing):
            raise ConfigError(
                f"The artifact of {artifact.config.get('model')!r} does not hold a linear head "
                f"(missing {missing}, unexpected {unexpected}); was it saved by strategy 'linear'?"
            )
        return module.eval().to(device)
