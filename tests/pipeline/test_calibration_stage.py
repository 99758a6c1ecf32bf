"""The ensemble stage's temperature and calibration metrics against an independent computation from the
members' probabilities and weights (Guo et al. 2017: T by grid search of val NLL, ECE bin by bin), and the
warnings it records about its val split."""

from __future__ import annotations

import numpy as np
import pytest

from zooens.pipeline import JobParams, RunRecord, select_ensemble
from zooens.selection.datasets import ImageDataset, Split

N_CLASSES = 4


def _dataset(y_val: np.ndarray, y_test: np.ndarray | None = None) -> ImageDataset:
    def split(name, y):
        return Split(name, np.zeros((len(y), 4, 4), np.uint8), y)

    splits = {"train": split("train", np.arange(8) % N_CLASSES), "val": split("val", y_val)}
    if y_test is not None:
        splits["test"] = split("test", y_test)
    return ImageDataset("toy", [str(c) for c in range(N_CLASSES)], splits)


def _run(i: int) -> RunRecord:
    return RunRecord(
        unit_key=f"finetune:m{i}:linear:lr=0.1:steps=1",
        model_name=f"m{i}",
        strategy="linear",
        hparams={},
        val_ce=1.0,
        val_acc=0.5,
        seconds=1.0,
        updated_params=1,
        update_bytes=4,
    )


def _overconfident(rng: np.random.Generator, y: np.ndarray, n_runs: int) -> np.ndarray:
    """(n_runs, n, classes) probabilities, informative but much too sharp, and alike (their average too)."""
    logits = rng.normal(0, 1, (1, len(y), N_CLASSES)) + 0.2 * rng.normal(0, 1, (n_runs, len(y), N_CLASSES))
    logits[:, np.arange(len(y)), y] += 1.0
    z = 5.0 * logits
    p = np.exp(z - z.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)


def _scaled(p: np.ndarray, t: float) -> np.ndarray:
    z = np.log(np.clip(p, 1e-12, None)) / t
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _nll(p, y):
    return float(np.mean([-np.log(max(p[i, y[i]], 1e-12)) for i in range(len(y))]))


def _brier(p, y):
    return float(np.mean([sum((p[i, k] - (k == y[i])) ** 2 for k in range(p.shape[1])) for i in range(len(y))]))


def _bins(p, y, n_bins=15):
    conf, pred = p.max(1), p.argmax(1)
    out = []
    for m in range(1, n_bins + 1):
        members = [i for i in range(len(y)) if (m - 1) / n_bins < conf[i] <= m / n_bins]
        if members:
            out.append(
                [
                    len(members),
                    sum(conf[i] for i in members) / len(members),
                    np.mean([pred[i] == y[i] for i in members]),
                ]
            )
        else:
            out.append([0, None, None])
    return out


def _ece(p, y):
    return sum(c / len(y) * abs(acc - conf) for c, conf, acc in _bins(p, y) if c)


def _grid_t(p, y):
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    i = int(np.argmin([_nll(_scaled(p, t), y) for t in grid]))
    fine = np.exp(np.linspace(np.log(grid[max(i - 1, 0)]), np.log(grid[min(i + 1, len(grid) - 1)]), 401))
    return float(fine[int(np.argmin([_nll(_scaled(p, t), y) for t in fine]))])


def test_the_stored_calibration_equals_an_independent_computation():
    rng = np.random.default_rng(0)
    y_val, y_test = rng.integers(0, N_CLASSES, 120), rng.integers(0, N_CLASSES, 150)
    P_val, P_test = _overconfident(rng, y_val, 4), _overconfident(rng, y_test, 4)
    runs = [_run(i) for i in range(4)]
    probs = [{"val": P_val[i], "test": P_test[i]} for i in range(4)]
    record = select_ensemble(runs, probs, _dataset(y_val, y_test), JobParams(ensemble_size=5))
    weights = np.array([{m.unit_key: m.weight for m in record.members}.get(r.unit_key, 0.0) for r in runs])
    val = np.tensordot(weights, P_val.astype(np.float64), axes=1)
    test = np.tensordot(weights, P_test.astype(np.float64), axes=1)
    t = _grid_t(val, y_val)
    assert record.temperature == pytest.approx(t, rel=1e-3)
    assert record.temperature > 1  # over-confident members: the ensemble is cooled
    T = record.temperature
    val_cal, test_cal = _scaled(val, T), _scaled(test, T)
    assert record.val_nll == pytest.approx(_nll(val_cal, y_val), rel=1e-9)
    assert record.val_brier == pytest.approx(_brier(val_cal, y_val), rel=1e-9)
    assert record.val_ece == pytest.approx(_ece(val_cal, y_val), abs=1e-9)
    assert record.test_nll == pytest.approx(_nll(test_cal, y_test), rel=1e-9)
    assert record.test_brier == pytest.approx(_brier(test_cal, y_test), rel=1e-9)
    assert record.test_ece == pytest.approx(_ece(test_cal, y_test), abs=1e-9)
    assert record.uncalibrated_test_nll == pytest.approx(_nll(test, y_test), rel=1e-9)
    assert record.uncalibrated_test_ece == pytest.approx(_ece(test, y_test), abs=1e-9)
    assert record.uncalibrated_val_ece == pytest.approx(_ece(val, y_val), abs=1e-9)
    # the selection criterion is untouched: val_ce is the uncalibrated ensemble's, and T only lowers the val NLL
    assert record.val_ce == pytest.approx(_nll(val, y_val), rel=1e-6)
    assert record.val_nll <= record.val_ce + 1e-9
    assert record.test_acc == pytest.approx(float((test_cal.argmax(1) == y_test).mean()))
    diagram = record.reliability
    assert diagram is not None and diagram["split"] == "test" and diagram["n_bins"] == 15
    for got, want in zip(diagram["bins"], _bins(test_cal, y_test), strict=True):
        assert got[0] == want[0]
        if want[0]:
            assert got[1:] == pytest.approx(want[1:], abs=1e-6)
        else:
            assert got[1:] == [None, None]
    assert record.warnings == []  # 120 val images, val CE far from 0


def test_without_a_test_split_the_test_metrics_are_none_and_the_diagram_is_on_val():
    rng = np.random.default_rng(1)
    y_val = rng.integers(0, N_CLASSES, 60)
    P_val = _overconfident(rng, y_val, 3)
    record = select_ensemble([_run(i) for i in range(3)], [{"val": p} for p in P_val], _dataset(y_val), JobParams())
    assert record.test_nll is record.test_brier is record.test_ece is record.uncalibrated_test_ece is None
    assert record.val_nll is not None and record.reliability["split"] == "val"
    assert sum(b[0] for b in record.reliability["bins"]) == 60


def test_a_small_val_split_and_a_near_zero_val_ce_are_warned_about():
    y_val = np.arange(20) % N_CLASSES
    perfect = np.full((20, N_CLASSES), 1e-6, np.float32)
    perfect[np.arange(20), y_val] = 1.0
    record = select_ensemble([_run(0)], [{"val": perfect}], _dataset(y_val), JobParams())
    assert record.val_ce < 1e-3
    assert len(record.warnings) == 2
    assert "only 20 images" in record.warnings[0] and "fewer than 50" in record.warnings[0]
    assert "leak" in record.warnings[1]


def test_each_member_gets_its_own_temperature_and_metrics():
    """`calibrate`, what a run records as its `calibration`, against the same independent computation."""
    from zooens.pipeline.stages import calibrate

    rng = np.random.default_rng(3)
    y_val, y_test = rng.integers(0, N_CLASSES, 100), rng.integers(0, N_CLASSES, 80)
    P_val, P_test = _overconfident(rng, y_val, 1)[0], _overconfident(rng, y_test, 1)[0]
    got = calibrate(P_val, y_val, P_test, y_test)
    T = _grid_t(P_val.astype(np.float64), y_val)
    assert got["temperature"] == pytest.approx(T, rel=1e-3) and got["temperature"] > 1
    val_cal, test_cal = (
        _scaled(P_val.astype(np.float64), got["temperature"]),
        _scaled(P_test.astype(np.float64), got["temperature"]),
    )
    assert got["val_nll"] == pytest.approx(_nll(val_cal, y_val), rel=1e-9)
    assert got["test_nll"] == pytest.approx(_nll(test_cal, y_test), rel=1e-9)
    assert got["test_ece"] == pytest.approx(_ece(test_cal, y_test), abs=1e-9)
    assert got["val_brier"] == pytest.approx(_brier(val_cal, y_val), rel=1e-9)
    assert got["uncalibrated_test_ece"] == pytest.approx(_ece(P_test.astype(np.float64), y_test), abs=1e-9)
    assert got["test_nll"] < got["uncalibrated_test_nll"]  # over-confident: cooling helps on test too
    assert set(calibrate(P_val, y_val)) == {"temperature", "uncalibrated_val_ece", "val_nll", "val_brier", "val_ece"}


def test_a_cross_fitted_runs_temperature_is_fitted_on_its_held_out_train_and_val_rows(zooens_home, tmp_path) -> None:
    """`finetune_run` on a refit `linear` run (cross-fitted: `RunResult.train_proba`): the run's temperature is the
    NLL-minimising T of its held-out probabilities of train's rows and val's together (a grid search, independent
    of `fit_temperature`'s solver), its calibration metrics are val's and test's rows under that T; with
    `refit_folds` 0 (no held-out training rows) the temperature is val's alone."""
    from zooens.pipeline.plan import UnitKey
    from zooens.pipeline.stages import finetune_run
    from zooens.selection.cache import EmbeddingCache
    from zooens.zoo.testing import register_random_model

    register_random_model("tiny-calibrated", "test_efficientnet", tmp_path / "weights")
    rng = np.random.default_rng(0)

    def split(name: str, n: int) -> Split:
        y = rng.integers(0, 3, n)
        colours = np.array([[130, 100, 100], [100, 130, 100], [100, 100, 130]], dtype=np.float64)
        x = colours[y][:, None, None, :] + rng.normal(0, 50, (n, 32, 32, 3))
        return Split(name, np.clip(x, 0, 255).astype(np.uint8), y)

    ds = ImageDataset("calib", ["a", "b", "c"], {s: split(s, n) for s, n in (("train", 90), ("val", 60), ("test", 45))})
    key = UnitKey.finetune("tiny-calibrated", "linear", 1.0, 200)

    cache = EmbeddingCache(tmp_path / "cache")
    common = dict(selected_models=["tiny-calibrated"], cache=cache, device="cpu", progress=False)
    params = JobParams(resolution=32, strategies=["linear"])
    record, result = finetune_run(ds, key, params, **common)
    assert result.train_proba is not None and record.hparams["refit_folds"] == 5
    y_train, y_val = ds.split("train").labels, ds.split("val").labels
    rows = np.concatenate([result.train_proba, result.val_proba]).astype(np.float64)
    T = _grid_t(rows, np.concatenate([y_train, y_val]))
    assert record.calibration["temperature"] == pytest.approx(T, rel=2e-3)
    assert abs(T - _grid_t(result.val_proba.astype(np.float64), y_val)) > 0.01  # val alone would differ
    scaled = _scaled(result.val_proba.astype(np.float64), record.calibration["temperature"])
    assert record.calibration["val_nll"] == pytest.approx(_nll(scaled, y_val))
    assert "test_nll" in record.calibration
    # no held-out training rows: the temperature is val's
    plain = JobParams(resolution=32, strategies=["linear"], strategy_options={"linear": {"refit_folds": 0}})
    record0, result0 = finetune_run(ds, key, plain, **common)
    assert result0.train_proba is None
    T0 = _grid_t(result0.val_proba.astype(np.float64), y_val)
    assert record0.calibration["temperature"] == pytest.approx(T0, rel=2e-3)
