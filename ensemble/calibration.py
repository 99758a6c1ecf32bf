"""Temperature scaling and calibration metrics for class probabilities.

Temperature scaling (Guo et al., ICML 2017, "On Calibration of Modern Neural Networks"): one scalar
T > 0 divides the logits, q = softmax(z / T), fitted by minimising the validation negative
log-likelihood. It never changes the argmax, so accuracy is unchanged; only the confidence moves.
For an ensemble, which outputs averaged probabilities rather than logits, the logits are the log of
those averaged probabilities (`logits_of`): softmax(log p) = p, so T = 1 gives the ensemble back.

The fit is exact and deterministic: with beta = 1 / T the NLL is a convex function of beta (a
log-sum-exp of functions linear in beta, minus one linear in beta), so its derivative is
non-decreasing and the minimiser within the bounds is found by bisection on the derivative's sign
(`fit_temperature`).

Metrics (every one on probabilities, lower is better):
- NLL: mean over examples of -log p[y];
- Brier score (multi-class, Brier 1950): mean over examples of the sum over classes of (p - onehot)^2,
  between 0 and 2;
- ECE (Guo et al., Naeini et al. 2015): confidences (the top probability) fall into `N_BINS` equal-width
  bins ((m-1)/M, m/M]; ECE = sum over bins |B| / n * |acc(B) - conf(B)|. `reliability_bins` gives the
  per-bin counts, mean confidences and accuracies behind it (the reliability diagram).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from zooens.errors import ConfigError

__all__ = [
    "N_BINS",
    "T_BOUNDS",
    "CalibrationMetrics",
    "apply_temperature",
    "brier_score",
    "calibration_metrics",
    "expected_calibration_error",
    "fit_temperature",
    "logits_of",
    "negative_log_likelihood",
    "reliability",
    "reliability_bins",
]

N_BINS = 15
"""Equal-width confidence bins of the ECE and the reliability diagram (Guo et al. use 15)."""
T_BOUNDS = (0.05, 20.0)
"""Temperatures `fit_temperature` chooses from: a fit at a bound means the data asked for more."""
_EPS = 1e-12
"""Probabilities are clipped to at least this before a log (as the greedy selection's cross-entropy)."""
_BISECTIONS = 200


def _check(proba: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    P = np.asarray(proba, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] < 1:
        raise ConfigError(f"Probabilities must have shape (n_examples, n_classes), got {P.shape}.")
    if not np.all(np.isfinite(P)):
        raise ConfigError("Probabilities must be finite.")
    if y is None:
        return P, None
    labels = np.asarray(y)
    if labels.shape != (P.shape[0],):
        raise ConfigError(f"Labels must have shape ({P.shape[0]},), got {labels.shape}.")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= P.shape[1]):
        raise ConfigError(f"Labels must lie in [0, {P.shape[1]}), got {labels.min()}..{labels.max()}.")
    return P, labels


def logits_of(proba: np.ndarray) -> np.ndarray:
    """Logits whose softmax is `proba` (rows renormalised): log of the clipped probabilities."""
    P, _ = _check(proba)
    return np.log(np.clip(P, _EPS, None))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(proba) / T), float64; T = 1 returns the (renormalised) probabilities."""
    if not (isinstance(temperature, (int, float, np.floating)) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"A temperature must be a finite positive number, got {temperature!r}.")
    return _softmax(logits_of(proba) / float(temperature))


def negative_log_likelihood(proba: np.ndarray, y: np.ndarray) -> float:
    """Mean over examples of -log p[y] (probabilities clipped to 1e-12)."""
    P, labels = _check(proba, y)
    assert labels is not None
    if not len(labels):
        return float("nan")
    return float(-np.mean(np.log(np.clip(P[np.arange(len(labels)), labels], _EPS, None))))


def brier_score(proba: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score: mean over examples of sum over classes of (p - onehot)^2."""
    P, labels = _check(proba, y)
    assert labels is not None
    if not len(labels):
        return float("nan")
    onehot = np.zeros_like(P)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum((P - onehot) ** 2, axis=1)))


def reliability_bins(proba: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> list[tuple[int, float, float]]:
    """Per equal-width confidence bin ((m-1)/M, m/M]: (count, mean confidence, accuracy); an empty bin
    is (0, nan, nan). Confidence is the top probability, a hit is its class being the label."""
    P, labels = _check(proba, y)
    assert labels is not None
    if n_bins < 1:
        raise ConfigError(f"n_bins must be at least 1, got {n_bins}.")
    conf = P.max(axis=1)
    hit = (P.argmax(axis=1) == labels).astype(np.float64)
    # bin m (0-based) holds conf in (m/M, (m+1)/M]; a confidence of 0 (impossible for probabilities) goes to bin 0
    index = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(index, weights=hit, minlength=n_bins)
    out = []
    for m in range(n_bins):
        c = int(counts[m])
        out.append((c, float(conf_sum[m] / c), float(hit_sum[m] / c)) if c else (0, float("nan"), float("nan")))
    return out


def expected_calibration_error(proba: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE: sum over bins |B| / n * |acc(B) - conf(B)| (`reliability_bins`)."""
    bins = reliability_bins(proba, y, n_bins)
    n = sum(c for c, _, _ in bins)
    if not n:
        return float("nan")
    return float(math.fsum(c / n * abs(acc - conf) for c, conf, acc in bins if c))


def reliability(proba: np.ndarray, y: np.ndarray, *, split: str, n_bins: int = N_BINS) -> dict[str, Any]:
    """The reliability diagram's numbers as JSON: `split`, `n_bins` and `bins`, one [count, mean confidence,
    accuracy] per bin, lowest confidence first (confidence and accuracy null for an empty bin)."""
    bins = [
        [c, None if c == 0 else round(conf, 6), None if c == 0 else round(acc, 6)]
        for c, conf, acc in reliability_bins(proba, y, n_bins)
    ]
    return {"split": split, "n_bins": n_bins, "bins": bins}


def _nll_slope(z: np.ndarray, labels: np.ndarray, beta: float) -> float:
    """d NLL / d beta of softmax(beta z): mean over examples of E_q[z] - z[y] (non-decreasing in beta)."""
    q = _softmax(beta * z)
    return float(np.mean(np.sum(q * z, axis=1) - z[np.arange(len(labels)), labels]))


def fit_temperature(proba: np.ndarray, y: np.ndarray, *, bounds: tuple[float, float] = T_BOUNDS) -> float:
    """The T within `bounds` minimising the NLL of softmax(log(proba) / T) on (proba, y).

    Exact up to floating point: the NLL is convex in beta = 1 / T, so its minimiser is where the
    derivative changes sign, found by bisection on [1 / T_max, 1 / T_min] (a bound when the derivative
    keeps one sign there). Deterministic; no examples gives T = 1.
    """
    P, labels = _check(proba, y)
    assert labels is not None
    t_min, t_max = float(bounds[0]), float(bounds[1])
    if not (0 < t_min <= 1 <= t_max and math.isfinite(t_max)):
        raise ConfigError(f"Temperature bounds must satisfy 0 < low <= 1 <= high, got {bounds}.")
    if not len(labels):
        return 1.0
    z = logits_of(P)
    lo, hi = 1.0 / t_max, 1.0 / t_min
    if _nll_slope(z, labels, lo) >= 0:
        return t_max
    if _nll_slope(z, labels, hi) <= 0:
        return t_min
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _nll_slope(z, labels, mid) > 0:
            hi = mid
        else:
            lo = mid
    return float(1.0 / (0.5 * (lo + hi)))


@dataclass(frozen=True)
class CalibrationMetrics:
    """NLL, Brier score and ECE of one set of probabilities against its labels."""

    nll: float
    brier: float
    ece: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def calibration_metrics(proba: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> CalibrationMetrics:
    """`negative_log_likelihood`, `brier_score` and `expected_calibration_error` at once."""
    return CalibrationMetrics(
        nll=negative_log_likelihood(proba, y),
        brier=brier_score(proba, y),
        ece=expected_calibration_error(proba, y, n_bins),
    )
