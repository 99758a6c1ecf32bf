"""Temperature scaling and calibration metrics against independent computations of the papers' formulas
(Guo et al. 2017: T minimising val NLL, ECE over 15 equal-width bins; Brier 1950)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss

from zooens.ensemble.calibration import (
    T_BOUNDS,
    apply_temperature,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability,
    reliability_bins,
)
from zooens.errors import ConfigError


def _probs(n: int, k: int, seed: int, sharpness: float) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities whose confidence is off by `sharpness` (> 1: over-confident), and labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 1.5  # informative, ~60-70 % accurate
    z = sharpness * logits
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), y


def _ref_nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([-np.log(max(p[i, y[i]], 1e-12)) for i in range(len(y))]))


def _ref_scaled(p: np.ndarray, t: float) -> np.ndarray:
    z = np.log(np.clip(p, 1e-12, None)) / t
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _ref_ece(p: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Guo et al.'s ECE, one bin at a time with a plain loop."""
    n = len(y)
    conf = p.max(1)
    pred = p.argmax(1)
    total = 0.0
    for m in range(1, n_bins + 1):
        lo, hi = (m - 1) / n_bins, m / n_bins
        members = [i for i in range(n) if lo < conf[i] <= hi]
        if not members:
            continue
        acc = sum(pred[i] == y[i] for i in members) / len(members)
        avg = sum(conf[i] for i in members) / len(members)
        total += len(members) / n * abs(acc - avg)
    return total


def _grid_temperature(p: np.ndarray, y: np.ndarray) -> float:
    grid = np.exp(np.linspace(np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1]), 20001))
    losses = [_ref_nll(_ref_scaled(p, t), y) for t in grid[::10]]
    i = int(np.argmin(losses)) * 10  # coarse, then refine around the coarse minimum
    lo, hi = max(0, i - 10), min(len(grid) - 1, i + 10)
    fine = grid[lo : hi + 1]
    losses = [_ref_nll(_ref_scaled(p, t), y) for t in fine]
    return float(fine[int(np.argmin(losses))])


@pytest.mark.parametrize("sharpness", [0.4, 1.0, 3.0])
def test_the_temperature_matches_a_grid_search(sharpness):
    p, y = _probs(400, 5, seed=1, sharpness=sharpness)
    t = fit_temperature(p, y)
    assert t == pytest.approx(_grid_temperature(p, y), abs=1e-3, rel=1e-3)
    # over-confident probabilities are cooled (T > 1), under-confident ones sharpened (T < 1)
    assert (t > 1) if sharpness > 1 else (t < 1) if sharpness < 1 else True
    assert _ref_nll(_ref_scaled(p, t), y) <= _ref_nll(p, y) + 1e-12


def test_the_temperature_is_deterministic_and_keeps_the_argmax():
    p, y = _probs(300, 4, seed=2, sharpness=2.5)
    t = fit_temperature(p, y)
    assert t == fit_temperature(p.copy(), y.copy())
    q = apply_temperature(p, t)
    assert np.array_equal(q.argmax(1), p.argmax(1))
    np.testing.assert_allclose(q.sum(1), 1.0)
    np.testing.assert_allclose(q, _ref_scaled(p, t), atol=1e-12)
    np.testing.assert_allclose(apply_temperature(p, 1.0), p, atol=1e-12)


def test_a_perfectly_separated_split_hits_the_lower_bound():
    y = np.array([0, 1, 2, 0, 1, 2])
    p = np.full((6, 3), 0.2)
    p[np.arange(6), y] = 0.6
    assert fit_temperature(p, y) == T_BOUNDS[0]  # sharper is always better: the bound
    assert fit_temperature(np.full((4, 2), 0.5), np.array([0, 1, 0, 1])) == T_BOUNDS[1]  # flat: any T, the bound


def test_nll_and_brier_against_sklearn_and_the_formula():
    p, y = _probs(250, 6, seed=3, sharpness=1.7)
    assert negative_log_likelihood(p, y) == pytest.approx(log_loss(y, p, labels=list(range(6))), rel=1e-10)
    onehot = np.eye(6)[y]
    brier = sum(sum((p[i, k] - onehot[i, k]) ** 2 for k in range(6)) for i in range(len(y))) / len(y)
    assert brier_score(p, y) == pytest.approx(brier, rel=1e-12)
    # two classes: the multi-class score is twice the binary Brier score of the positive class
    p2, y2 = _probs(100, 2, seed=4, sharpness=1.0)
    assert brier_score(p2, y2) == pytest.approx(2 * np.mean((p2[:, 1] - y2) ** 2))


@pytest.mark.parametrize("seed,sharpness", [(5, 0.5), (6, 1.0), (7, 4.0)])
def test_ece_against_a_loop_over_bins(seed, sharpness):
    p, y = _probs(500, 10, seed=seed, sharpness=sharpness)
    assert expected_calibration_error(p, y) == pytest.approx(_ref_ece(p, y), abs=1e-12)
    m = calibration_metrics(p, y)
    assert (m.nll, m.brier, m.ece) == (
        negative_log_likelihood(p, y),
        brier_score(p, y),
        expected_calibration_error(p, y),
    )


def test_reliability_bins_and_edges():
    # confidences on the bin edges go to the bin they close: (m-1)/M < conf <= m/M
    p = np.array([[1 / 3, 1 / 3, 1 / 3], [0.4, 0.6, 0.0], [1.0, 0.0, 0.0], [0.2, 0.8, 0.0]])
    y = np.array([0, 1, 1, 0])
    bins = reliability_bins(p, y)
    assert len(bins) == 15
    assert bins[4][0] == 1 and bins[4][1] == pytest.approx(1 / 3)  # 1/3 = 5/15 closes bin 5
    assert bins[8][:1] == (1,) and bins[8][2] == 1.0  # 0.6 = 9/15
    assert bins[11][0] == 1 and bins[11][2] == 0.0  # 0.8 = 12/15, wrong
    assert bins[14] == (1, 1.0, 0.0)
    assert sum(b[0] for b in bins) == 4
    assert np.isnan(bins[0][1])
    assert expected_calibration_error(p, y) == pytest.approx(_ref_ece(p, y))
    diagram = reliability(p, y, split="test")
    assert diagram["split"] == "test" and diagram["n_bins"] == 15
    assert diagram["bins"][0] == [0, None, None] and diagram["bins"][14] == [1, 1.0, 0.0]


def test_temperature_scaling_lowers_the_ece_of_an_over_confident_model():
    p_val, y_val = _probs(2000, 5, seed=8, sharpness=4.0)
    p_test, y_test = _probs(2000, 5, seed=9, sharpness=4.0)
    t = fit_temperature(p_val, y_val)
    q = apply_temperature(p_test, t)
    assert expected_calibration_error(q, y_test) < 0.5 * expected_calibration_error(p_test, y_test)
    assert negative_log_likelihood(q, y_test) < negative_log_likelihood(p_test, y_test)


def test_bad_inputs_are_refused():
    p, y = _probs(10, 3, seed=0, sharpness=1.0)
    with pytest.raises(ConfigError):
        apply_temperature(p, 0.0)
    with pytest.raises(ConfigError):
        fit_temperature(p, y[:5])
    with pytest.raises(ConfigError):
        negative_log_likelihood(p, y + 3)
    with pytest.raises(ConfigError):
        fit_temperature(p, y, bounds=(2.0, 3.0))
    assert fit_temperature(p[:0], y[:0]) == 1.0
