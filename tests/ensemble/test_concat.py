"""Strategy `concat`: one linear probe on the top-K's concatenated embeddings, checked against scikit-learn on
the same features; its member rebuilt by the predictor and from an ensemble file; its cost shared with the
`linear` runs of its models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from zooens.ensemble import GreedyEnsembleSelector, RunSpec, get_strategy, run_finetune
from zooens.ensemble.cost import ForwardCost, cost_vector, ensemble_cost
from zooens.ensemble.predictor import EnsemblePredictor
from zooens.ensemble.strategies.concat import ConcatProbeModule
from zooens.errors import ConfigError

MODELS = ("tiny-concat-a", "tiny-concat-b")
SIZE = 32
C = 0.3


@pytest.fixture
def task(zooens_home: Path, tmp_path: Path):
    from zooens.selection.cache import EmbeddingCache
    from zooens.selection.datasets import ImageDataset
    from zooens.selection.datasets import Split as DataSplit
    from zooens.zoo.testing import register_random_model

    register_random_model(MODELS[0], "test_efficientnet", tmp_path / "weights")
    register_random_model(MODELS[1], "test_vit", tmp_path / "weights")

    def arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Three classes told apart by a colour in one corner and a brightness in another: noisy."""
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 3, n)
        x = rng.normal(110, 50, (n, SIZE, SIZE, 3))
        x[:, :8, :8, :] += (np.eye(3)[y] * 40)[:, None, None, :]
        x[:, -8:, -8:, :] += (y * 20.0)[:, None, None, None]
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    splits = {
        name: DataSplit(name, *arrays(n, seed))
        for name, n, seed in (("train", 120, 0), ("val", 60, 1), ("test", 60, 2))
    }
    ds = ImageDataset("concat", ["a", "b", "c"], splits)
    return ds, EmbeddingCache(tmp_path / "cache")


def _spec(strategy: str = "concat", model: str = MODELS[0], **options) -> RunSpec:
    sweep = get_strategy(strategy).default_sweep
    if strategy == "concat":
        options.setdefault("models", list(MODELS))
    return RunSpec(
        model_name=model,
        strategy=strategy,
        lr=sweep.learning_rates[0],
        steps=sweep.steps[0],
        resolution=SIZE,
        batch_size=sweep.batch_size,
        options=options,
    )


def test_member_matches_sklearn_on_the_concatenated_embeddings(task) -> None:
    from zooens.selection.embed import embed_with_cache

    ds, cache = task
    # refit_folds 0: the val probabilities are the train-only probe's (the cross-fitted ones: test_linear_protocol)
    result = run_finetune(_spec(c_grid=[C], refit_folds=0), ds, cache=cache, progress=False)
    X = {
        s: np.concatenate(
            [
                np.asarray(embed_with_cache(m, ds, s, cache=cache, resolution=SIZE, progress=False).embeddings)
                for m in MODELS
            ],
            axis=1,
        ).astype(np.float64)
        for s in ds.splits
    }
    y = {s: ds.split(s).labels for s in ds.splits}
    mean, scale = X["train"].mean(0), np.maximum(X["train"].std(0), 1e-6)
    Z = {s: (v - mean) / scale for s, v in X.items()}
    ref = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(Z["train"], y["train"])
    assert abs(result.val_acc - ref.score(Z["val"], y["val"])) <= 0.005
    np.testing.assert_allclose(result.val_proba, ref.predict_proba(Z["val"]), atol=5e-3)
    # the shipped probe (refit): the same C on train+val, standardised with their statistics
    both = np.concatenate([X["train"], X["val"]])
    mean, scale = both.mean(0), np.maximum(both.std(0), 1e-6)
    refit = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(
        (both - mean) / scale, np.concatenate([y["train"], y["val"]])
    )
    np.testing.assert_allclose(result.test_proba, refit.predict_proba((X["test"] - mean) / scale), atol=5e-3)
    assert result.hparams["refit"] is True and result.hparams["n_refit"] == len(both)
    cfg = result.artifact.config
    assert cfg["models"] == list(MODELS) and cfg["model"] == MODELS[0]
    assert sum(cfg["dims"]) == X["train"].shape[1] and result.hparams["C"] == C
    assert result.artifact.models == list(MODELS)


def test_predictor_and_ensemble_file_rebuild_the_member(task, tmp_path: Path) -> None:
    from zooens.pipeline.fitted import write_ensemble_file

    ds, cache = task
    joint = run_finetune(_spec(), ds, cache=cache, progress=False)
    single = run_finetune(_spec("linear", MODELS[1]), ds, cache=cache, progress=False)
    images = [ds.split("test").image(i) for i in range(len(ds.split("test")))]
    members = [(joint.artifact, 0.75), (single.artifact, 0.25)]
    expected = 0.75 * joint.test_proba + 0.25 * single.test_proba

    predictor = EnsemblePredictor(members)
    assert isinstance(predictor.members[0][0], ConcatProbeModule)
    # the linear member's backbone is the concat probe's second one: one network, its features computed once
    assert predictor.members[0][0].backbones[1] is predictor.members[1][0].backbone
    np.testing.assert_allclose(predictor.predict_proba(images), expected, atol=1e-4)

    path = tmp_path / "joint.zooens"
    write_ensemble_file(members, path)
    again = EnsemblePredictor.load(path)
    np.testing.assert_allclose(again.predict_proba(images), expected, atol=1e-4)


def test_options_are_checked() -> None:
    strategy = get_strategy("concat")
    strategy.check_options({"models": list(MODELS), "c_grid": [1.0]})
    for bad in ({"models": ["a"]}, {"models": ["a", "a"]}, {"models": "a,b"}, {"solver": "sgd"}, {"c_grid": [-1]}):
        with pytest.raises(ConfigError):
            strategy.check_options(bad)
    assert strategy.job_options({}, selected_models=["x", "y", "z"]) == {"models": ["x", "y", "z"]}
    assert strategy.joint and strategy.shares_backbone and not strategy.augments_images


def test_a_run_needs_its_model_first(task) -> None:
    ds, cache = task
    with pytest.raises(ConfigError, match="that model first"):
        run_finetune(_spec(models=list(reversed(MODELS))), ds, cache=cache, progress=False)


def _cost(g: float) -> ForwardCost:
    return ForwardCost(gflops=g, params=int(g * 1000), latency_ms=g)


def test_an_ensemble_pays_each_pass_once() -> None:
    a, b, c = ("a|res=32|prep=model", _cost(1.0)), ("b|res=32|prep=model", _cost(2.0)), ("c|run=x", _cost(4.0))
    costs = {0: a, 1: [a, b], 2: c}  # linear(a), concat(a, b), a fine-tuned c
    assert ensemble_cost([0, 1], costs).gflops == 3.0  # a's pass once
    assert ensemble_cost([1, 1, 2], costs).gflops == 7.0
    assert ensemble_cost([0], costs).backbone_keys == (a[0],)
    vec = cost_vector([a, [a, b], c], "gflops")
    assert vec[0] == (a[0], 1.0) and vec[1] == [(a[0], 1.0), (b[0], 2.0)]


def test_greedy_budget_counts_shared_passes_like_brute_force() -> None:
    """Under every budget, the greedy's ensemble costs what `ensemble_cost` says, within the budget; the best
    feasible single candidate by brute force is what a one-member greedy picks."""
    rng = np.random.default_rng(0)
    n, k = 80, 3
    y = rng.integers(0, k, n)
    P = rng.dirichlet(np.ones(k), size=(4, n))
    P[1, np.arange(n), y] += 1.5  # the joint probe is the best candidate
    P /= P.sum(2, keepdims=True)
    a, b = ("a", _cost(1.0)), ("b", _cost(2.0))
    passes = [a, [a, b], b, ("d", _cost(0.5))]
    for budget in (0.5, 1.0, 2.5, 3.0, 3.5):
        sel = GreedyEnsembleSelector(max_size=1, costs=cost_vector(passes, "gflops"), max_cost=budget)
        sel.fit(P, y)
        ce = [-np.mean(np.log(P[i, np.arange(n), y])) for i in range(4)]
        feasible = [i for i in range(4) if ensemble_cost([i], dict(enumerate(passes))).gflops <= budget]
        assert sel.selected_[0] == min(feasible, key=lambda i: ce[i])
    sel = GreedyEnsembleSelector(max_size=6, costs=cost_vector(passes, "gflops"), max_cost=3.0).fit(P, y)
    chosen = sel.selected_[: sel.best_size_]
    assert math.isclose(sel.cost_, ensemble_cost(chosen, dict(enumerate(passes))).gflops)
    assert sel.cost_ <= 3.0
    for point in sel.path_:  # every prefix's cost, shared passes once
        assert math.isclose(point.cost, ensemble_cost(point.members, dict(enumerate(passes))).gflops)
