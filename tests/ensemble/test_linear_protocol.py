"""Strategy `linear` as the linear-probe protocol: scikit-learn's L2 logistic regression on standardised
embeddings, C chosen on val by cross-entropy, deterministic, options checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from zooens.ensemble import RunSpec, get_strategy, run_finetune
from zooens.ensemble.strategies.linear import (
    DEFAULT_C_GRID,
    LBFGS_MAX_ITER,
    MAX_C_GRID,
    MAX_REFIT_FOLDS,
    REFIT_FOLDS,
    LogisticProbe,
    _carried_over,
    _regularisation_path,
    check_c_grid,
    fit_logistic_path,
    stratified_folds,
)
from zooens.errors import ConfigError

MODEL = "tiny-effnet-probe"
SIZE = 32


def _sklearn(Z: np.ndarray, y: np.ndarray, C: float) -> LogisticRegression:
    return LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(Z.astype(np.float64), y)


def _blobs(n: int, d: int, seed: int, n_classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian classes through a random ReLU layer: non-negative, anisotropic, offset features."""
    rng = np.random.default_rng(seed)
    fixed = np.random.default_rng(7)
    centres, mixing = fixed.normal(0, 0.7, (n_classes, 16)), fixed.normal(0, 1, (16, d))
    y = rng.integers(0, n_classes, n)
    X = np.maximum((centres[y] + rng.normal(0, 1, (n, 16))) @ mixing + rng.normal(0, 2, (n, d)), 0) + 3.0
    return X.astype(np.float32), y


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(lambda: load_digits(n_class=6, return_X_y=True), id="digits-1083x64"),
        pytest.param(lambda: _blobs(150, 300, 0), id="blobs-150x300"),  # n < d: the row-space reduction
    ],
)
@pytest.mark.parametrize("C", [0.01, 0.3, 10.0])
def test_probe_solves_sklearns_objective(data, C) -> None:
    X, y = data()
    X = np.asarray(X, dtype=np.float32)
    probe = LogisticProbe(C=C, max_iter=2000, tol=1e-9).fit(X, y)
    Z = (X - probe.mean_) / probe.scale_
    ref = _sklearn(Z, y, C)
    scale = np.abs(ref.coef_).max()
    np.testing.assert_allclose(probe.coef_, ref.coef_, rtol=0, atol=1e-3 * scale)
    # softmax ignores a shift common to all classes: compare intercepts centred (ours sum to zero)
    np.testing.assert_allclose(probe.intercept_, ref.intercept_ - ref.intercept_.mean(), rtol=0, atol=1e-3 * scale)
    np.testing.assert_allclose(probe.predict_proba(X), ref.predict_proba(Z), rtol=0, atol=1e-4)
    # the default tolerance (what a run uses) is close too
    default = LogisticProbe(C=C).fit(X, y)
    np.testing.assert_allclose(default.predict_proba(X), ref.predict_proba(Z), rtol=0, atol=2e-3)


def test_path_warm_starts_to_the_cold_solutions_and_selects_by_val_ce() -> None:
    X, y = _blobs(200, 64, 0)
    Xv, yv = _blobs(100, 64, 1)
    grid = (1e-3, 1e-2, 0.1, 1.0, 10.0)
    path = fit_logistic_path(X, y, Xv, yv, c_grid=list(reversed(grid)), tol=1e-9, max_iter=1000, select="val_ce")
    assert path.c_grid == grid  # sorted, the most regularised first
    for C, probe in zip(grid, path.probes, strict=True):
        cold = LogisticProbe(C=C, tol=1e-9, max_iter=1000).fit(X, y)
        np.testing.assert_allclose(probe.predict_proba(Xv), cold.predict_proba(Xv), atol=1e-4)
    ce = [log_loss(yv, p.predict_proba(Xv), labels=range(4)) for p in path.probes]
    np.testing.assert_allclose(path.val_ce, ce, rtol=1e-6)
    assert path.best_index == int(np.argmin(ce)) and path.C == grid[path.best_index]
    assert 0 < path.best_index < len(grid) - 1  # an interior optimum: the test means something


def test_ties_go_to_the_stronger_regularisation() -> None:
    X = np.ones((60, 8), dtype=np.float32)  # constant features: every C gives the training prior
    y = np.arange(60) % 4
    path = fit_logistic_path(X, y, X[:5], y[:5], c_grid=[1e-2, 1.0, 100.0])
    assert path.val_ce[0] == path.val_ce[1] == path.val_ce[2] and path.best_index == 0
    np.testing.assert_allclose(path.best.predict_proba(X[:1]), 0.25, atol=1e-6)


@pytest.fixture
def probe_task(zooens_home: Path, tmp_path: Path):
    from zooens.selection.cache import EmbeddingCache
    from zooens.selection.datasets import ImageDataset
    from zooens.selection.datasets import Split as DataSplit
    from zooens.zoo.testing import register_random_model

    register_random_model(MODEL, "test_efficientnet", tmp_path / "weights")

    def arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Three classes of close mean colours under heavy noise: overlapping, so C matters."""
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 3, n)
        colours = np.array([[120, 100, 100], [100, 120, 100], [100, 100, 120]], dtype=np.float64)
        x = colours[y][:, None, None, :] + rng.normal(0, 60, (n, SIZE, SIZE, 3))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    splits = {name: DataSplit(name, *arrays(n, seed)) for name, n, seed in (("train", 120, 0), ("val", 90, 1))}
    ds = ImageDataset("probe", ["a", "b", "c"], splits)
    return ds, EmbeddingCache(tmp_path / "cache")


def _spec(**options) -> RunSpec:
    sweep = get_strategy("linear").default_sweep
    return RunSpec(
        model_name=MODEL,
        strategy="linear",
        lr=sweep.learning_rates[0],
        steps=sweep.steps[0],
        resolution=SIZE,
        batch_size=sweep.batch_size,
        options=options,
    )


def test_default_sweep_is_one_lbfgs_point() -> None:
    sweep = get_strategy("linear").default_sweep
    assert sweep.learning_rates == (1.0,) and sweep.steps == (LBFGS_MAX_ITER,)
    assert len(sweep.grid()) == 1
    assert len(DEFAULT_C_GRID) == 17 and DEFAULT_C_GRID[0] == pytest.approx(1e-4) and DEFAULT_C_GRID[-1] == 1e4


def test_run_picks_c_by_val_ce_like_a_sklearn_loop_and_is_deterministic(probe_task) -> None:
    from zooens.selection.embed import embed_with_cache

    ds, cache = probe_task
    spec = _spec(refit=False)  # the default choice (val CE); no refit, so the run's val numbers are the chosen C's
    result = run_finetune(spec, ds, cache=cache, progress=False)
    by_acc = run_finetune(_spec(c_selection="accuracy", refit=False), ds, cache=cache, progress=False)  # CLIP's
    X = {s: embed_with_cache(MODEL, ds, s, cache=cache, resolution=SIZE, progress=False).embeddings for s in ds.splits}
    y = {s: ds.split(s).labels for s in ds.splits}
    X = {s: np.asarray(v, dtype=np.float32) for s, v in X.items()}
    assert X["train"].shape[0] < X["train"].shape[1]  # 120 images of 256 features: the reduced problem

    mean, scale = X["train"].mean(0), np.maximum(X["train"].std(0), 1e-6)
    Z = {s: (v - mean) / scale for s, v in X.items()}
    refs = [_sklearn(Z["train"], y["train"], C) for C in DEFAULT_C_GRID]
    ref_ce = [log_loss(y["val"], r.predict_proba(Z["val"]), labels=range(3)) for r in refs]
    best = int(np.argmin(ref_ce))  # the first minimum: ties to the smaller C
    assert 0 < best < len(DEFAULT_C_GRID) - 1, ref_ce  # interior: the choice is not the grid's edge

    hp = result.hparams
    assert hp["solver"] == "lbfgs" and hp["c_selection"] == "val_ce"
    assert hp["C"] == DEFAULT_C_GRID[best] and hp["c_grid"] == list(DEFAULT_C_GRID)
    assert hp["lr"] == 1.0 and hp["steps"] == LBFGS_MAX_ITER
    assert result.artifact.config["hparams"] == hp
    # up to two steps past the optimum; further on (near-separable embeddings, tiny penalty) the fits are
    # capped at `steps` iterations and their val CE is approximate, as with scikit-learn's own default tol
    np.testing.assert_allclose(hp["val_ce_path"][: best + 3], ref_ce[: best + 3], atol=2e-3)
    assert result.val_ce == pytest.approx(min(hp["val_ce_path"]), abs=1e-6)
    ref_acc = refs[best].score(Z["val"], y["val"])
    assert abs(result.val_acc - ref_acc) <= 0.005
    # by accuracy: scikit-learn's val accuracy along the path, its first maximum by (accuracy, -CE), within
    # the first C values the default patience fits
    accs = [r.score(Z["val"], y["val"]) for r in refs]
    hp_acc = by_acc.hparams
    fitted = len(hp_acc["val_acc_path"])
    np.testing.assert_allclose(hp_acc["val_acc_path"][: best + 3], accs[: best + 3], atol=0.012)  # one image
    chosen = DEFAULT_C_GRID.index(hp_acc["C"])
    assert hp_acc["c_selection"] == "accuracy" and chosen < fitted
    assert hp_acc["val_acc_path"][chosen] == max(hp_acc["val_acc_path"])
    assert abs(by_acc.val_acc - accs[chosen]) <= 0.012
    assert set(result.artifact.tensors) == {"norm.mean", "norm.scale", "head.weight", "head.bias"}
    assert result.artifact.tensors["head.weight"].shape == (3, 256)

    default, again = (run_finetune(_spec(), ds, cache=cache, progress=False) for _ in range(2))  # refit, folds
    assert default.hparams["C"] == hp["C"]
    assert np.array_equal(again.val_proba, default.val_proba)
    assert np.array_equal(again.train_proba, default.train_proba)
    for key, tensor in default.artifact.tensors.items():
        assert np.array_equal(again.artifact.tensors[key].numpy(), tensor.numpy())

    one = run_finetune(_spec(c_grid=[hp["C"]], refit=False), ds, cache=cache, progress=False)  # a given grid
    assert one.hparams["c_grid"] == [hp["C"]] and one.hparams["C"] == hp["C"]
    np.testing.assert_allclose(one.val_proba, result.val_proba, atol=1e-4)


def test_the_shipped_probe_is_refit_on_train_and_val_at_the_chosen_c(probe_task) -> None:
    """VTAB-1k's protocol: C chosen on val with the train-only probe, then the probe the run ships (artifact, test
    probabilities) is scikit-learn's at that C on train+val; the run's held-out probabilities of train and val are
    scikit-learn's at that C cross-fitted over 5 stratified folds of train+val (`refit_folds`)."""
    from scipy.special import softmax

    from zooens.selection.embed import embed_with_cache

    ds, cache = probe_task
    result = run_finetune(_spec(), ds, cache=cache, progress=False)
    held = run_finetune(_spec(refit=False), ds, cache=cache, progress=False)
    val_only = run_finetune(_spec(refit_folds=0), ds, cache=cache, progress=False)
    X = {s: embed_with_cache(MODEL, ds, s, cache=cache, resolution=SIZE, progress=False).embeddings for s in ds.splits}
    X = {s: np.asarray(v, dtype=np.float64) for s, v in X.items()}
    y = {s: ds.split(s).labels for s in ds.splits}
    C = result.hparams["C"]
    assert held.hparams["C"] == C == val_only.hparams["C"] and held.hparams["refit"] is False
    assert "n_refit" not in held.hparams and held.train_proba is None
    both = np.concatenate([X["train"], X["val"]])
    y_both = np.concatenate([y["train"], y["val"]])

    def standardised(rows, *apply):
        mean, scale = rows.mean(0), np.maximum(rows.std(0), 1e-6)
        return [(a - mean) / scale for a in (rows, *apply)]

    z_both, z_val = standardised(both, X["val"])
    ref = _sklearn(z_both, y_both, C)

    def shipped(run, x):  # the artifact's probe (no test split here: scored on val's embeddings)
        t = {k: v.double().numpy() for k, v in run.artifact.tensors.items()}
        return softmax((x - t["norm.mean"]) / t["norm.scale"] @ t["head.weight"].T + t["head.bias"], axis=1)

    np.testing.assert_allclose(shipped(result, X["val"]), ref.predict_proba(z_val), atol=5e-3)
    np.testing.assert_allclose(shipped(held, X["val"]), held.val_proba, atol=1e-4)  # no refit: the held-out probe
    assert result.hparams["refit"] is True and result.hparams["n_refit"] == len(both) == 210
    assert result.hparams["refit_folds"] == REFIT_FOLDS == 5
    # the held-out probabilities: fold by fold, scikit-learn on the other folds (standardised with their rows)
    fold = stratified_folds(y_both, 5, seed=0)
    expected = np.empty((len(y_both), 3))
    for f in range(5):
        out = fold == f
        z_in, z_out = standardised(both[~out], both[out])
        expected[out] = _sklearn(z_in, y_both[~out], C).predict_proba(z_out)
    got = np.concatenate([result.train_proba, result.val_proba])
    np.testing.assert_allclose(got, expected, atol=5e-3)
    assert not np.allclose(got[len(y["train"]) :], held.val_proba, atol=1e-2)  # not the train-only probe's
    assert result.val_ce == pytest.approx(log_loss(y["val"], expected[len(y["train"]) :], labels=range(3)), abs=5e-3)
    # refit_folds 0: the shipped probe refit, the val probabilities the train-only probe's
    np.testing.assert_array_equal(val_only.val_proba, held.val_proba)
    assert val_only.train_proba is None and val_only.hparams["refit_folds"] == 0
    np.testing.assert_allclose(shipped(val_only, X["val"]), shipped(result, X["val"]), atol=1e-6)
    np.testing.assert_allclose(result.artifact.tensors["norm.mean"].numpy(), both.mean(0), rtol=1e-4, atol=1e-5)
    for bad, match in (
        ({"refit": "yes"}, "refit"),
        ({"solver": "sgd", "refit": True}, "refit"),
        ({"refit_folds": 1.5}, "refit_folds"),
        ({"refit_folds": MAX_REFIT_FOLDS + 1}, "refit_folds"),
        ({"refit_folds": True}, "refit_folds"),
        ({"refit": False, "refit_folds": 5}, "refit is false"),
    ):
        with pytest.raises(ConfigError, match=match):
            get_strategy("linear").check_options(bad)


@pytest.mark.parametrize(("n", "folds"), [(210, 5), (37, 4), (12, 5)])
def test_folds_are_stratified_balanced_and_seeded(n: int, folds: int) -> None:
    y = np.random.default_rng(n).integers(0, 3, n)
    fold = stratified_folds(y, folds, seed=0)
    sizes = np.bincount(fold, minlength=folds)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == n
    for c in range(3):
        per_class = np.bincount(fold[y == c], minlength=folds)
        assert per_class.max() - per_class.min() <= 1
    assert np.array_equal(stratified_folds(y, folds, seed=0), fold)
    assert not np.array_equal(stratified_folds(y, folds, seed=1), fold)


@pytest.mark.parametrize("n", [300, 40])  # n >= d, and n < d (the row space)
def test_a_refit_starts_at_the_same_logits_and_ends_at_its_own_optimum(n: int) -> None:
    X, y = _blobs(n, 64, seed=n)
    X2, y2 = _blobs(n // 2, 64, seed=n + 1)
    probe = LogisticProbe(C=0.3).fit(X, y, n_classes=4)
    both, labels = np.concatenate([X, X2]), np.concatenate([y, y2])
    mean, scale = both.mean(0), np.maximum(both.std(0), 1e-6)
    Z = torch.from_numpy((both - mean) / scale).double()
    theta = _carried_over(probe, mean.astype(np.float32), scale.astype(np.float32), None)
    w, b = theta[: 4 * 64].view(4, 64), theta[4 * 64 :]
    np.testing.assert_allclose((Z @ w.T + b).numpy(), probe.decision_function(both), rtol=1e-4, atol=1e-4)
    if n < 64:  # projected onto the row space: the same logits there too
        Q, R = torch.linalg.qr(Z.T)
        small = _carried_over(probe, mean.astype(np.float32), scale.astype(np.float32), Q)
        np.testing.assert_allclose(
            (R.T @ small[: 4 * 60].view(4, 60).T + small[4 * 60 :]).numpy(), probe.decision_function(both), atol=1e-3
        )
    (warm,) = _regularisation_path(both, labels, 4, [0.3], 200, 1.0, 1e-6, start=probe)
    cold = LogisticProbe(C=0.3).fit(both, labels, n_classes=4)
    np.testing.assert_allclose(warm.predict_proba(both), cold.predict_proba(both), atol=1e-4)
    assert warm.n_iter_ < cold.n_iter_


def test_sgd_solver_stays_a_named_option(probe_task) -> None:
    ds, cache = probe_task
    options = {"solver": "sgd", "momentum": 0.9, "weight_decay": 1e-4}
    spec = RunSpec(
        model_name=MODEL, strategy="linear", lr=0.1, steps=50, resolution=SIZE, batch_size=16, options=options
    )
    result = run_finetune(spec, ds, cache=cache, progress=False)
    assert result.hparams["solver"] == "sgd" and "C" not in result.hparams
    assert result.val_proba.shape == (90, 3)


@pytest.mark.parametrize(
    "options",
    [
        {"solver": "adam"},
        {"solver": 1},
        {"momentum": 0.9},  # an SGD option with the default solver
        {"solver": "lbfgs", "weight_decay": 0.01},
        {"solver": "sgd", "c_grid": [1.0]},  # an L-BFGS option with SGD
        {"solver": "sgd", "momentum": 1.0},
        {"solver": "sgd", "weight_decay": -1.0},
        {"solver": "sgd", "weight_decay": True},
        {"c_grid": []},
        {"c_grid": 1.0},
        {"c_grid": "1.0"},
        {"c_grid": [0.0]},
        {"c_grid": [-1.0]},
        {"c_grid": [1e-9]},
        {"c_grid": [1e9]},
        {"c_grid": [float("nan")]},
        {"c_grid": [float("inf")]},
        {"c_grid": [True]},
        {"c_grid": ["1"]},
        {"c_grid": [1.0] * (MAX_C_GRID + 1)},
        {"C": 1.0},
    ],
)
def test_bad_options_are_refused(options) -> None:
    with pytest.raises(ConfigError):
        get_strategy("linear").check_options(options)
    with pytest.raises(ConfigError):
        RunSpec(model_name="m", strategy="linear", lr=1.0, steps=10, options=options).validate()


def test_good_options_pass_and_grids_are_canonical() -> None:
    strategy = get_strategy("linear")
    for options in (
        {},
        {"solver": "lbfgs"},
        {"c_grid": [10, 0.1, 1e-8, 1e8]},
        {"solver": "sgd", "momentum": 0.5, "weight_decay": 0},
    ):
        strategy.check_options(options)
    assert check_c_grid([10, 0.1, 1, 0.1]) == (0.1, 1.0, 10.0)
    with pytest.raises(ConfigError, match="solver 'sgd' only"):
        strategy.check_options({"momentum": 0.9})
    with pytest.raises(ConfigError, match=r"\[1e-08, 1e\+08\]"):
        strategy.check_options({"c_grid": [1e9]})
    with pytest.raises(ConfigError):
        LogisticProbe(C=0.0).fit(np.zeros((3, 2)), np.array([0, 1, 0]))
    with pytest.raises(ConfigError):
        LogisticProbe(max_iter=0).fit(np.zeros((3, 2)), np.array([0, 1, 0]))


def test_the_path_stops_past_the_optimum_with_the_whole_grids_choice() -> None:
    X, y = _blobs(200, 64, 0)
    Xv, yv = _blobs(100, 64, 1)
    whole = fit_logistic_path(X, y, Xv, yv, patience=None, select="val_ce")
    short = fit_logistic_path(X, y, Xv, yv, select="val_ce")  # PATH_PATIENCE
    assert len(whole.probes) == len(DEFAULT_C_GRID)
    assert whole.best_index + 3 < len(DEFAULT_C_GRID) - 1  # the optimum leaves C values to skip
    assert len(short.probes) == whole.best_index + 4 and short.c_grid == whole.c_grid
    assert short.C == whole.C and short.val_ce == whole.val_ce[: len(short.probes)]
    np.testing.assert_array_equal(short.best.predict_proba(Xv), whole.best.predict_proba(Xv))


def test_accuracy_selection_takes_the_best_val_accuracy_then_the_lower_ce() -> None:
    X, y = _blobs(200, 64, 0)
    Xv, yv = _blobs(100, 64, 1)
    path = fit_logistic_path(X, y, Xv, yv, patience=None, select="accuracy")  # CLIP's protocol
    acc = [float((p.predict(Xv) == yv).mean()) for p in path.probes]
    assert path.val_acc == pytest.approx(acc)
    top = max(acc)
    tied = [i for i, a in enumerate(acc) if a == top]
    assert path.best_index == min(tied, key=lambda i: (path.val_ce[i], i))
    with pytest.raises(ConfigError, match="c_selection"):
        fit_logistic_path(X, y, Xv, yv, select="auc")
