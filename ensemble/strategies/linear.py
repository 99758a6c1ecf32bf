"""Strategy `linear`: the linear-probe protocol on frozen, cached embeddings.

The embeddings come from `selection.embed.embed_with_cache`, so a model ranked already costs no
forward pass. Features are standardised with the training statistics, then (the default solver,
`lbfgs`) a multinomial logistic regression is fitted by full-batch L-BFGS for each C of a log grid
and the C with the lowest validation cross-entropy is kept: the linear-probe protocol of CLIP
(Radford et al. 2021, appendix A.3: scikit-learn's L-BFGS logistic regression, L2 strength swept on
validation). The objective is scikit-learn's `LogisticRegression(penalty="l2", C=C)` multinomial one,
so a probe matches scikit-learn's to solver tolerance. The older solver, SGD momentum under the BiT
schedule on mini-batches (`solver="sgd"`), stays as an option; see `LinearStrategy`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from zooens.cancel import check_cancelled
from zooens.ensemble._registry import register_strategy
from zooens.ensemble.artifacts import Artifact
from zooens.ensemble.results import RunResult, build_run_result, mean_cross_entropy
from zooens.ensemble.specs import RunSpec, SweepConfig
from zooens.ensemble.strategies.base import Strategy, base_config
from zooens.ensemble.training import bit_schedule, default_warmup_steps, iterate_batches
from zooens.errors import ConfigError, DatasetError
from zooens.selection.embed import embed_with_cache
from zooens.zoo import create_model, data_config

log = logging.getLogger(__name__)

__all__ = [
    "C_GRID_BOUNDS",
    "C_SELECTIONS",
    "DEFAULT_C_GRID",
    "LBFGS_MAX_ITER",
    "LBFGS_TOL",
    "MAX_C_GRID",
    "MAX_REFIT_FOLDS",
    "PATH_PATIENCE",
    "REFIT_FOLDS",
    "SOLVERS",
    "LinearProbe",
    "LinearProbeModule",
    "LinearStrategy",
    "LogisticPath",
    "LogisticProbe",
    "check_c_grid",
    "fit_logistic_path",
    "stratified_folds",
]

_MIN_SCALE = 1e-6

SOLVERS = ("lbfgs", "sgd")
"""`lbfgs`: the linear-probe protocol (default); `sgd`: the BiT-style mini-batch head."""

DEFAULT_C_GRID: tuple[float, ...] = tuple(10.0 ** (k / 2) for k in range(-8, 9))
"""C = 10^-4 .. 10^4, two steps per decade (17 values). CLIP sweeps lambda = 1/C over 10^-6 .. 10^6 and
refines by bisection to 8 steps per decade. On standardised features the objective divided by C * n is
mean CE + ||W||^2 / (2 C n), so for n from ~100 to ~10^4 training images C = 10^-4 already gives an
almost constant (prior) classifier and C = 10^4 an almost unregularised one: CLIP's outer decades change
nothing there. Two steps per decade (a factor 3.2) resolve the val CE's minimum finely enough for an
ensemble member while keeping a run to a few seconds on a CPU."""

MAX_C_GRID = 50
"""Most values of a `c_grid` option: each costs up to `steps` L-BFGS iterations."""

C_GRID_BOUNDS = (1e-8, 1e8)
"""Smallest and largest C a `c_grid` may hold."""

LBFGS_MAX_ITER = 200
"""The default sweep's `steps` for `lbfgs`: most L-BFGS iterations per C (see `LinearStrategy`)."""

LBFGS_TOL = 1e-6
"""L-BFGS's stopping tolerance on the max-abs gradient of mean CE + ||W||^2 / (2 C n), divided by max(1, C)
(scikit-learn's default `tol` is 1e-4 on the same scale, undivided)."""

PATH_PATIENCE = 3
"""`fit_logistic_path` stops after this many C values past the lowest val CE without a lower one."""

REFIT_FOLDS = 5
"""Default `refit_folds`: a refit run's held-out probabilities of train and val come from 5 probes, each fitted at
the chosen C on four fifths of train+val and scoring the other fifth (`_cross_fitted`)."""

CROSS_FIT_TOL = 1e-4
"""`LBFGS_TOL` for the cross-fitted probes (`_cross_fitted`): they only score held-out rows for the ensemble's
selection and temperatures, where a hundredth of the shipped probe's precision moves no probability by more than
about 1e-3 (`tests/ensemble/test_linear_protocol.py`), at a third of the iterations."""

MAX_REFIT_FOLDS = 20
"""Most `refit_folds` an option may ask for: each is one more L-BFGS solve."""

_LBFGS_HISTORY = 20
_LBFGS_CHANGE_RATIO = 1e-6  # L-BFGS also stops when a step changes the loss or a weight by < tol * this


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


def _lbfgs_softmax_regression(
    F: torch.Tensor,
    targets: torch.Tensor,
    n_classes: int,
    *,
    alpha: float,
    penalty: torch.Tensor,
    max_iter: int,
    lr: float = 1.0,
    tol: float = 1e-6,
    tol_change: float = 1e-12,
    init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int, float]:
    """Minimise `mean_i CE(F_i U.T + b, y_i) + alpha / 2 * sum_j penalty_j ||U[:, j]||^2` over U (n_classes, r)
    and b (n_classes,) by full-batch L-BFGS (strong-Wolfe line search) in F's dtype.

    Returns the flat `[U.ravel(), b]`, the iterations taken and the final max-abs gradient. L-BFGS stops
    when that gradient is at most `tol`, after `max_iter` iterations, or when a step changes nothing
    (below `tol_change`). `init` (same shape) warm-starts, zeros otherwise. No randomness at all.
    `_regularisation_path` maps scikit-learn's objective onto this one (alpha = 1 / (C n), penalty 1).
    """
    n, r = F.shape
    k = n_classes
    rows = torch.arange(n)
    theta = torch.zeros(k * (r + 1), dtype=F.dtype) if init is None else init.detach().clone()
    theta.requires_grad_(True)
    reg = alpha * penalty
    optimiser = torch.optim.LBFGS(
        [theta],
        lr=lr,
        max_iter=max_iter,
        max_eval=max_iter * 5 // 4 + 1,
        tolerance_grad=tol,
        tolerance_change=tol_change,
        history_size=_LBFGS_HISTORY,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        with torch.no_grad():
            check_cancelled()
            weight = theta[: k * r].view(k, r)
            bias = theta[k * r :]
            log_p = torch.log_softmax(torch.addmm(bias, F, weight.T), dim=1)
            loss = -log_p[rows, targets].mean() + 0.5 * (reg * weight.pow(2)).sum()
            grad = log_p.exp_()
            grad[rows, targets] -= 1.0
            grad /= n
            grad_w = torch.addmm(weight * reg, grad.T, F)
            theta.grad = torch.cat([grad_w.reshape(-1), grad.sum(0)])
        return loss

    with _one_thread():
        optimiser.step(closure)
        closure()
    n_iter = int(optimiser.state[optimiser._params[0]].get("n_iter", 0))
    grad_max = float(theta.grad.abs().max())
    return theta.detach(), n_iter, grad_max


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch's CPU kernels on one thread inside the block, then restore the count.

    The probe's arrays are small (n x C logits): on a CPU shared with other work, OpenMP's threads wait on
    each other far longer than the arithmetic takes (a 1,800 x 10 float64 log-softmax measured 40x slower on
    2 busy threads than on 1), and one thread makes the float64 sums, hence the probabilities, independent of
    the machine's thread count."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _row_space(Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features with the same L2-penalised logistic regression in fewer dimensions when n < d.

    With `Z.T = Q R` (reduced QR, Q (d, n) with orthonormal columns), `Z = R.T Q.T`; the optimal W lies in
    the row space of Z (the penalty's gradient must cancel the CE's, `G.T Z`), so `W = W1 Q.T` with
    `Z W.T = R.T W1.T` and `||W|| = ||W1||`: the problem on `R.T` (n x n) with weights W1 is the same problem,
    exactly, and each L-BFGS iteration costs n/d of the original. Returns (features, Q or None)."""
    n, d = Z.shape
    if n >= d:
        return Z, None
    with _one_thread():
        Q, R = torch.linalg.qr(Z.T)
    return R.T.contiguous(), Q


def _check_xy(X: Any, y: Any, n_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    if X.ndim != 2 or len(X) == 0:
        raise DatasetError(f"X must be a non-empty 2-D array (n_samples, n_features), got shape {X.shape}.")
    if y.shape != (len(X),):
        raise DatasetError(f"y must have shape ({len(X)},) to match X, got {y.shape}.")
    if not np.all(np.isfinite(X)):
        raise DatasetError("X contains NaN or infinite values; check the embeddings.")
    y = y.astype(np.int64)
    n_classes = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if y.min() < 0 or y.max() >= n_classes:
        raise DatasetError(f"Labels must lie in [0, {n_classes}), got [{y.min()}, {y.max()}].")
    return X, y, n_classes


def _standardiser(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training mean and standard deviation (floored at `_MIN_SCALE`), float32."""
    mean = X.mean(axis=0)
    scale = np.maximum(X.std(axis=0), _MIN_SCALE).astype(np.float32)
    return mean, scale


class _Probe:
    """What a fitted linear head on standardised embeddings offers, whatever its solver."""

    mean_: np.ndarray
    scale_: np.ndarray
    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise ConfigError(f"This {type(self).__name__} is not fitted yet; call fit(X, y) first.")

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
            "head.weight": torch.from_numpy(np.ascontiguousarray(self.coef_, dtype=np.float32)),
            "head.bias": torch.from_numpy(np.ascontiguousarray(self.intercept_, dtype=np.float32)),
        }


class LinearProbe(_Probe):
    """Multinomial logistic regression trained like a BiT head (SGD momentum, step decay).

    The `sgd` solver of strategy `linear` (see `LinearStrategy` for when it is the right choice;
    `LogisticProbe` is the default protocol).

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
        X, y, n_classes = _check_xy(X, y, n_classes)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}; e.g. 0.1.")
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"steps and batch_size must be at least 1, got {self.steps} and {self.batch_size}.")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ConfigError(
                "momentum must be in [0, 1) and weight_decay non-negative, "
                f"got {self.momentum} and {self.weight_decay}."
            )
        warmup = default_warmup_steps(self.steps) if self.warmup_steps is None else self.warmup_steps
        bit_schedule(0, self.steps, self.lr, warmup)

        self.mean_, self.scale_ = _standardiser(X)
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


def check_c_grid(values: Any) -> tuple[float, ...]:
    """A `c_grid` option: 1 to `MAX_C_GRID` finite numbers in `C_GRID_BOUNDS`, returned sorted
    ascending (the most regularised first, the order of the warm starts) without duplicates."""
    lo, hi = C_GRID_BOUNDS
    example = "e.g. [0.01, 0.1, 1, 10, 100]"
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Sequence):
        raise ConfigError(f"c_grid must be a list of positive numbers (values of C), got {values!r}; {example}.")
    if not 1 <= len(values) <= MAX_C_GRID:
        raise ConfigError(f"c_grid must hold 1 to {MAX_C_GRID} values of C, got {len(values)}; {example}.")
    grid = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ConfigError(f"c_grid must hold numbers, got {value!r}; {example}.")
        c = float(value)
        if not (math.isfinite(c) and lo <= c <= hi):
            raise ConfigError(f"Each C of c_grid must be a finite number in [{lo:g}, {hi:g}], got {value!r}.")
        grid.append(c)
    return tuple(sorted(set(grid)))


class LogisticProbe(_Probe):
    """scikit-learn's `LogisticRegression(penalty="l2", C=C)` (multinomial, with intercept) on features
    standardised with the training mean and standard deviation, solved by full-batch L-BFGS in float64.

    Parameters
    ----------
    C : inverse L2 strength, as scikit-learn's: the objective is `C * sum_i CE_i + ||W||^2 / 2`
        (intercept not penalised).
    max_iter : most L-BFGS iterations.
    lr : L-BFGS's initial step length (1 is the natural one; the strong-Wolfe line search adapts it).
    tol : L-BFGS stops when the max-abs gradient of that objective divided by `C * n` is at most
        `tol / max(1, C)` (see `_regularisation_path`).

    `fit` sets `mean_`, `scale_`, `coef_` (n_classes, n_features), `intercept_` (n_classes,; centred to
    sum zero, since softmax ignores a shift common to all classes), `classes_`, `n_iter_` and
    `grad_max_` (the final max-abs gradient). The stored weights are float32, as saved in an artifact.
    """

    def __init__(
        self, *, C: float = 1.0, max_iter: int = LBFGS_MAX_ITER, lr: float = 1.0, tol: float = LBFGS_TOL
    ) -> None:
        self.C = C
        self.max_iter = max_iter
        self.lr = lr
        self.tol = tol

    def _check_params(self) -> None:
        check_c_grid([self.C])
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr (L-BFGS's step length) must be a positive number, got {self.lr}; e.g. 1.0.")
        if isinstance(self.max_iter, bool) or int(self.max_iter) != self.max_iter or self.max_iter < 1:
            raise ConfigError(f"max_iter must be a positive integer, got {self.max_iter!r}; e.g. {LBFGS_MAX_ITER}.")
        if not (self.tol > 0 and math.isfinite(self.tol)):
            raise ConfigError(f"tol must be a positive number, got {self.tol}; e.g. {LBFGS_TOL}.")

    def fit(self, X: np.ndarray, y: np.ndarray, *, n_classes: int | None = None) -> LogisticProbe:
        """Learn the head; X (n_samples, n_features), y ints in [0, n_classes) (default `max(y) + 1`)."""
        self._check_params()
        X, y, n_classes = _check_xy(X, y, n_classes)
        (probe,) = _regularisation_path(X, y, n_classes, [float(self.C)], self.max_iter, self.lr, self.tol)
        self.__dict__.update(probe.__dict__)
        return self

    def _set(
        self, mean: np.ndarray, scale: np.ndarray, theta: torch.Tensor, n_classes: int, n_iter: int, grad_max: float
    ) -> LogisticProbe:
        d = len(mean)
        weight = theta[: n_classes * d].view(n_classes, d)
        bias = theta[n_classes * d :]
        if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            raise ConfigError(f"L-BFGS diverged at C={self.C}; use a smaller lr (L-BFGS's step, now {self.lr}).")
        self.mean_, self.scale_ = mean, scale
        self.coef_ = weight.float().numpy().copy()
        self.intercept_ = (bias - bias.mean()).float().numpy().copy()
        self.classes_ = np.arange(n_classes)
        self.n_iter_ = n_iter
        self.grad_max_ = grad_max
        return self


def _regularisation_path(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    grid: Sequence[float],
    max_iter: int,
    lr: float,
    tol: float,
    start: _Probe | None = None,
) -> Iterator[LogisticProbe]:
    """A fitted `LogisticProbe` per C of `grid` (in its order), each warm-started at the previous one.

    scikit-learn's objective `C * sum_i CE_i + ||W||^2 / 2` is divided by `C * n`: `mean CE + alpha ||W||^2 / 2`
    with alpha = 1 / (C n), the same minimiser with a gradient of order one whatever C and n. L-BFGS stops
    at a max-abs gradient of `tol / max(1, C)`: the weights' error is about the gradient over the curvature,
    which at large C (near-separable training data) is little more than alpha, so the tolerance tightens
    with C; without it the large-C fits stop early, look less over-confident than their true minimiser, and
    bias the choice of C towards them.

    `start`, a fitted probe on the same features (another standardisation), warm-starts the first C at the same
    logits: its weights carried over to this standardisation and projected onto the row space (a refit starts at
    the train-only solution, a few iterations from its own)."""
    n = len(X)
    mean, scale = _standardiser(X)
    Z, Q = _row_space(torch.from_numpy((X - mean) / scale).double())
    d = Z.shape[1]
    targets = torch.from_numpy(y)
    theta = None if start is None else _carried_over(start, mean, scale, Q)
    for C in grid:
        theta, n_iter, grad_max = _lbfgs_softmax_regression(
            Z,
            targets,
            n_classes,
            alpha=1.0 / (C * n),
            penalty=torch.ones(d, dtype=Z.dtype),
            max_iter=int(max_iter),
            lr=float(lr),
            tol=float(tol) / max(1.0, C),
            tol_change=float(tol) * _LBFGS_CHANGE_RATIO,
            init=theta,
        )
        weight, bias = theta[: n_classes * d].view(n_classes, d), theta[n_classes * d :]
        if Q is not None:
            with _one_thread():
                weight = weight @ Q.T
        probe = LogisticProbe(C=C, max_iter=max_iter, lr=lr, tol=tol)
        yield probe._set(mean, scale, torch.cat([weight.reshape(-1), bias]), n_classes, n_iter, grad_max)


def _carried_over(probe: _Probe, mean: np.ndarray, scale: np.ndarray, Q: torch.Tensor | None) -> torch.Tensor:
    """`probe`'s weights for features standardised with (mean, scale) instead of its own, giving the same logits,
    as the flat float64 `[W.ravel(), b]` of `_lbfgs_softmax_regression` (W projected onto Q's span when given):
    (x - m1) / s1 . w = (x - m2) / s2 . (w s2 / s1) + (m2 - m1) / s1 . w."""
    coef = probe.coef_.astype(np.float64)
    weight = coef * (scale.astype(np.float64) / probe.scale_.astype(np.float64))
    bias = probe.intercept_.astype(np.float64) + coef @ ((mean - probe.mean_) / probe.scale_).astype(np.float64)
    w = torch.from_numpy(weight)
    if Q is not None:
        with _one_thread():
            w = w @ Q
    return torch.cat([w.reshape(-1), torch.from_numpy(bias)])


@dataclass
class LogisticPath:
    """`LogisticProbe`s along a C grid and their validation cross-entropies and accuracies.

    `best` is the probe `fit_logistic_path`'s `select` chose."""

    c_grid: tuple[float, ...]
    probes: list[LogisticProbe]
    val_ce: list[float]
    best_index: int
    val_acc: list[float] = field(default_factory=list)

    @property
    def best(self) -> LogisticProbe:
        return self.probes[self.best_index]

    @property
    def C(self) -> float:
        return self.c_grid[self.best_index]


C_SELECTIONS = ("val_ce", "accuracy")
"""How `fit_logistic_path` picks C on val: the lowest cross-entropy (the default), or the highest accuracy
(ties to the lower cross-entropy; CLIP's protocol)."""


def fit_logistic_path(
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    *,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    max_iter: int = LBFGS_MAX_ITER,
    lr: float = 1.0,
    tol: float = LBFGS_TOL,
    n_classes: int | None = None,
    patience: int | None = PATH_PATIENCE,
    select: str = "val_ce",
) -> LogisticPath:
    """A `LogisticProbe` per C of `c_grid`, from the smallest C up, each L-BFGS warm-started at the
    previous C's solution (the regularisation path), and the one `select` picks on val: `val_ce` (the
    default: the lowest val cross-entropy, `results.mean_cross_entropy` of its float32 probabilities, the value
    the run records) or `accuracy` (CLIP's protocol: the highest val accuracy, ties to the lower val
    cross-entropy); remaining ties go to the smaller C.

    Val CE is the default: it is the greedy ensemble's own criterion, and on a 200-image val split accuracy is
    flat over a wide range of C and moves by whole images, so the C it picks (and a job's result) can turn on
    one image's near-tie between two classes; on the offline peer tasks neither choice was more accurate
    after the greedy step (`bench/peers.py`).

    With `patience` (default `PATH_PATIENCE`, 3: a decade and a half on the default grid), the path stops
    once that many C values past the best so far gave no better one: beyond the optimum a larger C only
    fits the training set harder, and those fits are the slowest of the path (the least regularised). The
    choice is the whole grid's whenever the criterion has no second, better peak further on; `patience=None`
    fits every C. `probes`, `val_ce` and `val_acc` hold the C values fitted, `c_grid` the whole grid.
    """
    if select not in C_SELECTIONS:
        raise ConfigError(f"c_selection must be one of {', '.join(C_SELECTIONS)}, got {select!r}.")
    grid = check_c_grid(list(c_grid))
    X, y, n_classes = _check_xy(X, y, n_classes)
    X_val, y_val, _ = _check_xy(X_val, y_val, n_classes)
    LogisticProbe(C=grid[0], max_iter=max_iter, lr=lr, tol=tol)._check_params()
    probes: list[LogisticProbe] = []
    val_ce: list[float] = []
    val_acc: list[float] = []
    best = 0

    def key(i: int) -> tuple[float, ...]:  # larger is better
        return (val_acc[i], -val_ce[i]) if select == "accuracy" else (-val_ce[i],)

    for i, probe in enumerate(_regularisation_path(X, y, n_classes, grid, max_iter, lr, tol)):
        probes.append(probe)
        proba = probe.predict_proba(X_val)
        val_ce.append(mean_cross_entropy(proba, y_val))
        val_acc.append(float(np.mean(proba.argmax(1) == y_val)))
        if key(i) > key(best):
            best = i
        log.debug("C=%g: %d L-BFGS iterations, max |grad| %.1e", probe.C, probe.n_iter_, probe.grad_max_)
        if patience is not None and i - best >= patience:
            break
    return LogisticPath(c_grid=grid, probes=probes, val_ce=val_ce, best_index=best, val_acc=val_acc)


def _refit(
    start: LogisticProbe,
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    max_iter: int,
    lr: float,
    tol: float | None = None,
) -> LogisticProbe:
    """The probe at `start`'s C fitted on the rows `X`, `y` (features standardised with their statistics),
    warm-started at `start`'s solution, to `tol` (default `start`'s): one L-BFGS solve, deterministic. The
    objective is strictly convex, so the start changes the number of iterations, not the optimum it converges to."""
    X, y, n_classes = _check_xy(X, y, n_classes)
    tol = start.tol if tol is None else tol
    (probe,) = _regularisation_path(X, y, n_classes, [start.C], max_iter, lr, tol, start=start)
    return probe


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each row's fold (0 .. folds - 1): stratified (each class's rows, in a seeded random order, dealt round
    the folds, the deal carrying on from one class to the next), so every fold holds about `1 / folds` of the
    rows and of each class."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    dealt = 0
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        fold[rows] = (dealt + np.arange(len(rows))) % folds
        dealt += len(rows)
    return fold


def _cross_fitted(
    refit: LogisticProbe,
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    folds: int,
    seed: int,
    max_iter: int,
    lr: float,
) -> np.ndarray:
    """Held-out probabilities of every row of `X` (train+val) from probes trained like the refit one: for each of
    `folds` stratified folds (`stratified_folds`), the probe at the chosen C fitted on the other folds (warm-started
    at `refit`), scoring its fold. Float32, in `X`'s row order."""
    fold = stratified_folds(y, folds, seed)
    proba = np.empty((len(y), n_classes), dtype=np.float32)
    for f in range(folds):
        check_cancelled()
        held_out = fold == f
        probe = _refit(refit, X[~held_out], y[~held_out], n_classes, max_iter=max_iter, lr=lr, tol=CROSS_FIT_TOL)
        proba[held_out] = probe.predict_proba(X[held_out])
    return proba


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


_SGD_OPTIONS = frozenset({"weight_decay", "momentum"})
_LBFGS_OPTIONS = frozenset({"c_grid", "c_selection", "refit", "refit_folds"})


@register_strategy("linear")
class LinearStrategy(Strategy):
    """A linear head on frozen cached embeddings, by default the linear-probe protocol.

    Solver `lbfgs` (default): for each C of the grid (option `c_grid`, default `DEFAULT_C_GRID`:
    10^-4 .. 10^4, two per decade), scikit-learn's multinomial `LogisticRegression(C=C)` objective
    `C * sum_i CE_i + ||W||^2 / 2` on standardised features, solved by full-batch float64 L-BFGS warm-started
    from the previous (more regularised) C; the C with the lowest val cross-entropy is kept (ties to the
    smaller C) and its probabilities are the run's. CLIP (Radford et al. 2021, A.3) picks C by val
    accuracy (option `c_selection` "accuracy"); val CE is the default because it is what the greedy
    ensemble minimises (`fit_logistic_path` says more). The run is still
    one (lr, steps) unit: `lr` is L-BFGS's step length (1.0; the line search adapts it) and `steps`
    the most L-BFGS iterations per C, so the default sweep is the single point lr 1.0, steps
    `LBFGS_MAX_ITER` (200; on 1,000 x 2,048 synthetic features the most any C of the default grid took was 131).
    When n < d the problem is solved, exactly, in the n-dimensional row space of the features (a QR).
    L-BFGS stops at a max-abs gradient of `LBFGS_TOL / max(1, C)` on the objective divided by C * n.
    The path stops `PATH_PATIENCE` (3) C values past the best (`fit_logistic_path`). The run's
    hparams record `solver`, `c_grid`, the chosen `C`, `c_selection` and the val CE and accuracy of each C
    fitted (`val_ce_path`, `val_acc_path`, from the smallest C). Deterministic: no randomness, one CPU
    thread; the seed is unused.

    Refit (option `refit`, default true; `lbfgs` only): once C is chosen, the probe is fitted again at that C on
    train+val, and that probe is the run's model: its artifact and its test probabilities. This is the VTAB-1k
    protocol (Zhai et al. 2019: hyper-parameters chosen on train800/val200, the final model trained on all 1,000
    examples); in the 1k-example regime a fifth more training data is worth more than anything a probe's settings
    can buy (+4.5 points of test accuracy on the offline dSprites-location stand-in, +0.2 on digits, -0.2 on
    Fashion-MNIST: `bench/peers.py`'s logreg-concat against logreg-concat-refit).

    Cross-fitting (option `refit_folds`, default `REFIT_FOLDS` 5; with refit only): what a job decides after the
    runs (the greedy ensemble, the temperatures) needs held-out probabilities of the model it ships, and the
    train-only probe's val probabilities are a poor stand-in for the refit one's: C was chosen to minimise exactly
    their cross-entropy (optimistic, more so for the wider `concat` probe), and they come from a probe that saw a
    fifth less data (which costs a wide probe more than a narrow one, so the ensemble's weights leaned towards the
    narrow probes). So the run also fits the probe at the chosen C on each `refit_folds`-fold stratified split of
    train+val (`stratified_folds`, seeded by the run's seed), each scoring the rows it left out: every train and
    val row gets a held-out probability (the run's `train_proba` and `val_proba`; its `val_ce`/`val_acc` are
    these). The greedy step then selects on train's rows and val's together, six times the rows of val alone
    (`zooens.pipeline.select_ensemble`), and the temperatures are fitted on them; bagging's out-of-fold
    predictions serve the same purpose in Caruana et al.'s ensemble selection as AutoGluon runs it. The folds stop
    at `CROSS_FIT_TOL`, warm-started at the refit probe (a strictly convex objective: the start changes the
    iterations, not the optimum); on the peer tasks they add about a third to a probe's fit. `refit_folds` 0
    keeps the train-only probe's val probabilities (the protocol before cross-fitting). The run's hparams record
    `refit`, `n_refit` (the examples the shipped probe saw) and `refit_folds` (the folds used: at most one per
    example; 0 for none).

    Solver `sgd`: the BiT-style head (zero-initialised, SGD momentum, BiT schedule, seeded mini-batches
    of `batch_size`), swept over lr x steps; options `weight_decay` (default 0) and `momentum` (0.9).
    It earns its place in two cases: re-running a job recorded before the L-BFGS protocol (a `linear`
    run whose hparams have no `solver` was an SGD run, e.g. lr 0.01/0.1 x 300/1000 steps), and a training
    set too large for a full-batch float64 pass (L-BFGS holds the n x d features in float64 plus n x C
    logits, about three times the float32 embeddings; SGD touches one mini-batch at a time).

    No augmentation: the embeddings are computed once from the unaugmented images (a job records
    `augmentation: none`).
    """

    needs_images: ClassVar[bool] = False
    augments_images: ClassVar[bool] = False
    shares_backbone: ClassVar[bool] = True
    default_sweep: ClassVar[SweepConfig] = SweepConfig(learning_rates=(1.0,), steps=(LBFGS_MAX_ITER,), batch_size=64)
    accepted_options: ClassVar[frozenset[str]] = frozenset({"solver"}) | _SGD_OPTIONS | _LBFGS_OPTIONS

    def replay_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """A recorded lbfgs run trains again at its chosen C alone (`c_grid` [C]): the C was chosen on val,
        which a refit on train+val cannot do again; what the run recorded about the choice is dropped. The
        replay's training split is train+val already, so it does not refit again (`refit` false)."""
        recorded = ("C", "c_selection", "val_ce_path", "val_acc_path", "refit", "n_refit", "refit_folds")
        kept = {k: v for k, v in options.items() if k not in recorded}
        if options.get("solver", "lbfgs") == "lbfgs":
            kept["refit"] = False
            if "C" in options:
                kept["c_grid"] = [float(options["C"])]
        return kept

    def check_options(self, options: dict[str, Any]) -> None:
        """`solver` ("lbfgs" or "sgd"); `c_grid`, `c_selection`, `refit`, `refit_folds` only for lbfgs;
        `weight_decay`, `momentum` only for sgd."""
        self._check_known(
            options,
            "solver, c_grid, c_selection, refit and refit_folds (solver lbfgs), weight_decay and momentum (solver sgd)",
        )
        solver = options.get("solver", "lbfgs")
        if solver not in SOLVERS:
            raise ConfigError(f"solver of strategy 'linear' must be one of {', '.join(SOLVERS)}, got {solver!r}.")
        other = _SGD_OPTIONS if solver == "lbfgs" else _LBFGS_OPTIONS
        wrong = sorted(set(options) & other)
        if wrong:
            needs = "sgd" if solver == "lbfgs" else "lbfgs"
            raise ConfigError(
                f"Option(s) {', '.join(wrong)} of strategy 'linear' apply to solver {needs!r} only, and this run's "
                f"solver is {solver!r}; drop them or set solver to {needs!r}."
            )
        self._check_path_options(options)
        for name in ("weight_decay", "momentum"):
            if name in options:
                value = options[name]
                ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
                if not ok or value < 0 or (name == "momentum" and value >= 1):
                    bound = "in [0, 1)" if name == "momentum" else "a non-negative number"
                    raise ConfigError(f"{name} of strategy 'linear' must be {bound}, got {value!r}.")

    def _check_path_options(self, options: dict[str, Any]) -> None:
        """The L-BFGS path's options: `c_grid` (`check_c_grid`), `c_selection` (`C_SELECTIONS`), `refit` (a bool),
        `refit_folds` (0 to `MAX_REFIT_FOLDS`, with refit only)."""
        if "c_grid" in options:
            check_c_grid(options["c_grid"])
        if not isinstance(options.get("refit", True), bool):
            raise ConfigError(
                f"refit of strategy {self.name!r} must be true or false, got {options['refit']!r}; true (the default) "
                "fits the chosen probe again on train+val."
            )
        if "refit_folds" in options:
            folds = options["refit_folds"]
            if isinstance(folds, bool) or not isinstance(folds, int) or not 0 <= folds <= MAX_REFIT_FOLDS:
                raise ConfigError(
                    f"refit_folds of strategy {self.name!r} must be an integer from 0 to {MAX_REFIT_FOLDS}, got "
                    f"{folds!r:.100}; {REFIT_FOLDS} (the default) cross-fits the refit probe's held-out probabilities "
                    "over that many folds of train+val, 0 takes the train-only probe's val probabilities."
                )
            if options.get("refit", True) is False:
                raise ConfigError(
                    f"refit_folds of strategy {self.name!r} applies to a refit probe only, and this run's refit is "
                    "false; drop refit_folds or set refit true."
                )
        if options.get("c_selection", "val_ce") not in C_SELECTIONS:
            raise ConfigError(
                f"c_selection of strategy {self.name!r} must be one of {', '.join(C_SELECTIONS)}, "
                f"got {options['c_selection']!r}."
            )

    def fit(self, spec: RunSpec, ds: Any, *, cache: Any, device: str = "cpu", progress: bool = True) -> RunResult:
        self._check_run(spec)
        X = self._features(spec.model_name, spec, ds, cache=cache, device=device, progress=progress)
        data_cfg = dict(data_config(spec.model_name, resolution=spec.resolution, preprocessing=spec.preprocessing))
        return self._fit_head(spec, ds, X, data_cfg, {})

    def _check_run(self, spec: RunSpec) -> None:
        if spec.augmentation != "none":
            raise ConfigError(
                f"Strategy {self.name!r} trains on cached embeddings of unaugmented images, so augmentation "
                f"{spec.augmentation!r} cannot apply; use augmentation 'none' (or an image strategy such as 'full')."
            )
        self.check_options(spec.options)

    @staticmethod
    def _features(
        model_name: str, spec: RunSpec, ds: Any, *, cache: Any, device: str, progress: bool
    ) -> dict[str, np.ndarray]:
        """The cached embeddings of `model_name` by split (train, val, and test when the dataset has one)."""
        splits = ["train", "val"] + (["test"] if "test" in ds.splits else [])
        return {
            s: np.asarray(
                embed_with_cache(
                    model_name,
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

    def _fit_head(
        self, spec: RunSpec, ds: Any, X: dict[str, np.ndarray], data_cfg: dict[str, Any], extra: dict[str, Any]
    ) -> RunResult:
        """Fit the head on the features `X` by split with the run's solver, and the run's result; `extra`
        joins the artifact's config."""
        n_classes = len(ds.classes)
        hparams = dict(spec.hparams)
        probe: _Probe
        val_probe: _Probe
        val_proba: np.ndarray
        train_proba = None
        if spec.options.get("solver", "lbfgs") == "sgd":
            probe = LinearProbe(
                lr=spec.lr,
                steps=spec.steps,
                batch_size=spec.batch_size,
                momentum=float(spec.options.get("momentum", 0.9)),
                weight_decay=float(spec.options.get("weight_decay", 0.0)),
                random_state=spec.seed,
            ).fit(X["train"], ds.split("train").labels, n_classes=n_classes)
            val_probe = probe
            val_proba = probe.predict_proba(X["val"])
            hparams["solver"] = "sgd"
        else:
            path = fit_logistic_path(
                X["train"],
                ds.split("train").labels,
                X["val"],
                ds.split("val").labels,
                c_grid=spec.options.get("c_grid", DEFAULT_C_GRID),
                max_iter=spec.steps,
                lr=spec.lr,
                n_classes=n_classes,
                select=spec.options.get("c_selection", "val_ce"),
            )
            probe = val_probe = path.best
            refit = bool(spec.options.get("refit", True))
            hparams |= {
                "solver": "lbfgs",
                "C": path.C,
                "c_grid": list(path.c_grid),
                "c_selection": spec.options.get("c_selection", "val_ce"),
                "val_ce_path": [round(v, 6) for v in path.val_ce],
                "val_acc_path": [round(v, 6) for v in path.val_acc],
                "refit": refit,
            }
            val_proba = val_probe.predict_proba(X["val"])
            if refit:
                X_all = np.concatenate([X["train"], X["val"]])
                y_all = np.concatenate([np.asarray(ds.split(s).labels) for s in ("train", "val")])
                probe = _refit(val_probe, X_all, y_all, n_classes, max_iter=spec.steps, lr=spec.lr)
                folds = min(int(spec.options.get("refit_folds", REFIT_FOLDS)), len(y_all))
                if folds >= 2:
                    oof = _cross_fitted(
                        probe, X_all, y_all, n_classes, folds=folds, seed=spec.seed, max_iter=spec.steps, lr=spec.lr
                    )
                    train_proba, val_proba = oof[: len(X["train"])], oof[len(X["train"]) :]
                hparams |= {"n_refit": len(y_all), "refit_folds": folds if folds >= 2 else 0}
        config = base_config(spec, ds, data_cfg) | {"hparams": hparams} | extra
        artifact = Artifact(config=config, tensors=probe.tensors())
        result = build_run_result(
            spec,
            ds,
            val_proba=val_proba,  # held out: the train-only probe's, or cross-fitted (refit)
            train_proba=train_proba,
            test_proba=probe.predict_proba(X["test"]) if "test" in X else None,
            artifact=artifact,
            updated_params=int(probe.coef_.size + probe.intercept_.size),
        )
        result.hparams = hparams
        return result

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
