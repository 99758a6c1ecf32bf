"""Sweep config, strategy registry, artifacts and the linear head (without zoo/selection)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from sklearn.linear_model import LogisticRegression

from tests.ensemble._toy import toy_split
from tests.ensemble.test_training import DATA_CFG
from zooens.ensemble import (
    STRATEGIES,
    Artifact,
    RunSpec,
    Strategy,
    SweepConfig,
    get_strategy,
    load_artifact_model,
    mean_cross_entropy,
    register_strategy,
)
from zooens.ensemble.strategies.linear import LinearProbe
from zooens.ensemble.training import bit_schedule, default_warmup_steps, eval_transform, iterate_batches, predict_proba
from zooens.errors import ConfigError, DatasetError, NotFoundError


def blobs(n: int, seed: int, dim: int = 32, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(0, 1, (n_classes, dim)) * 2.0
    y = rng.integers(0, n_classes, n)
    X = centres[y] + rng.normal(0, 1.0, (n, dim)) + 5.0  # offset: standardisation must handle it
    return X.astype(np.float32), y


def test_sweep_grid_and_validation() -> None:
    grid = SweepConfig(learning_rates=(0.01, 0.1), steps=(300, 1000), batch_size=32, seed=4).grid()
    assert [(g["lr"], g["steps"]) for g in grid] == [(0.01, 300), (0.01, 1000), (0.1, 300), (0.1, 1000)]
    assert all(g["batch_size"] == 32 and g["seed"] == 4 for g in grid)
    for bad in (
        {"learning_rates": ()},
        {"learning_rates": (0.1, -1)},
        {"steps": (0,)},
        {"batch_size": 0},
        {"seed": -1},
    ):
        with pytest.raises(ConfigError):
            SweepConfig(**bad)


def test_registry_has_builtins_rejects_duplicates_and_names_choices() -> None:
    assert {"linear", "full"} <= set(STRATEGIES)
    assert STRATEGIES["linear"].needs_images is False and STRATEGIES["full"].needs_images is True
    with pytest.raises(ConfigError, match="already registered"):
        register_strategy("linear")(type("Other", (Strategy,), {}))
    assert type(STRATEGIES["linear"]).__name__ == "LinearStrategy"
    with pytest.raises(ConfigError, match="film, full, kron, linear, lora, patch"):
        get_strategy("nope")
    with pytest.raises(ConfigError):
        RunSpec(model_name="m", strategy="nope", lr=0.1, steps=1).validate()
    with pytest.raises(ConfigError):
        RunSpec(model_name="m", strategy="linear", lr=0.0, steps=1).validate()
    name = "_test_strategy"
    try:
        register_strategy(name)(type("Tmp", (Strategy,), {}))
        assert STRATEGIES[name].name == name
    finally:
        STRATEGIES._entries.pop(name, None)  # the registry has no public removal


def test_artifact_round_trip(tmp_path) -> None:
    tensors = {"head.weight": torch.randn(3, 5), "head.bias": torch.arange(3, dtype=torch.float64)}
    config = {
        "model": "m",
        "strategy": "linear",
        "classes": ["a", "b", "c"],
        "hparams": {"lr": 0.1},
        "data_config": {"input_size": (3, 8, 8)},
    }
    art = Artifact(config=config, tensors=tensors)
    assert art.nbytes == 15 * 4 + 3 * 8
    art.save(tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["config.json", "model.safetensors"]
    back = Artifact.load(tmp_path / "a")
    assert back.config == json.loads(json.dumps(config))
    assert set(back.tensors) == set(tensors)
    assert all(torch.equal(back.tensors[k], tensors[k]) for k in tensors)
    with pytest.raises(NotFoundError, match="Artifact.save"):
        Artifact.load(tmp_path / "missing")


def test_mean_cross_entropy_matches_sklearn() -> None:
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(4), 50)
    y = rng.integers(0, 4, 50)
    assert mean_cross_entropy(P, y) == pytest.approx(log_loss(y, P, labels=range(4)), rel=1e-9)


@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 0.0), (0.9, 1e-3), (0.0, 1e-2)])
def test_linear_probe_steps_equal_autograd_and_torch_sgd(momentum, weight_decay) -> None:
    """The closed-form step against the textbook loop: nn.Linear + F.cross_entropy + backward +
    torch.optim.SGD (weight decay on the weight only), same batches and BiT schedule."""
    X, y = blobs(120, 3)
    probe = LinearProbe(
        lr=0.3, steps=60, batch_size=32, momentum=momentum, weight_decay=weight_decay, random_state=5
    ).fit(X, y)
    Z = torch.from_numpy((X.astype(np.float32) - probe.mean_) / probe.scale_)
    targets = torch.from_numpy(y.astype(np.int64))
    head = torch.nn.Linear(X.shape[1], 3)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.SGD(
        [{"params": [head.weight], "weight_decay": weight_decay}, {"params": [head.bias], "weight_decay": 0.0}],
        lr=0.3,
        momentum=momentum,
    )
    batches = iterate_batches(len(Z), 32, torch.Generator().manual_seed(5))
    losses = []
    for step in range(60):
        idx = next(batches)
        for group in opt.param_groups:
            group["lr"] = bit_schedule(step, 60, 0.3, default_warmup_steps(60))
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(Z[idx]), targets[idx])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    np.testing.assert_allclose(probe.coef_, head.weight.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probe.intercept_, head.bias.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(probe.loss_curve_, losses, rtol=1e-4, atol=1e-6)
    assert abs(probe.coef_).max() > 0.1  # it learned something


def test_linear_probe_separates_blobs_like_logistic_regression() -> None:
    X, y = blobs(300, 0)
    Xt, yt = blobs(300, 1)
    probe = LinearProbe(lr=0.1, steps=300, batch_size=64, random_state=0).fit(X, y)
    acc = float(np.mean(probe.predict(Xt) == yt))
    ref = LogisticRegression(max_iter=5000).fit(X, y).score(Xt, yt)
    assert acc >= 0.95 and acc >= ref - 0.03
    assert np.mean(probe.loss_curve_[-20:]) < 0.5 * probe.loss_curve_[0]
    proba = probe.predict_proba(Xt)
    assert proba.dtype == np.float32 and proba.shape == (300, 3)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-6)
    with torch.no_grad():
        module_proba = torch.softmax(probe.to_module()(torch.from_numpy(Xt)).double(), 1).numpy()
    np.testing.assert_allclose(module_proba, proba, atol=1e-6)


def test_linear_probe_is_reproducible_bitwise() -> None:
    X, y = blobs(200, 0)
    a = LinearProbe(lr=0.1, steps=50, batch_size=32, random_state=7).fit(X, y)
    b = LinearProbe(lr=0.1, steps=50, batch_size=32, random_state=7).fit(X, y)
    c = LinearProbe(lr=0.1, steps=50, batch_size=32, random_state=8).fit(X, y)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.coef_, c.coef_)


def test_linear_probe_validates() -> None:
    X, y = blobs(20, 0)
    with pytest.raises(ConfigError):
        LinearProbe(lr=-1.0).fit(X, y)
    with pytest.raises(DatasetError):
        LinearProbe().fit(X, y[:-1])
    with pytest.raises(DatasetError):
        LinearProbe().fit(X, y, n_classes=2)
    with pytest.raises(ConfigError):
        LinearProbe().predict_proba(X)


def test_linear_head_on_tiny_timm_embeddings_and_artifact_reload(tmp_path) -> None:
    """A real (random) tiny backbone: the head separates the toy classes, and the saved
    artifact rebuilt by the `linear` strategy gives the same probabilities from images."""
    torch.manual_seed(0)
    backbone = timm.create_model("test_efficientnet", pretrained=False, num_classes=0).eval()
    train, val = toy_split(60, seed=0), toy_split(30, seed=1)
    transform = eval_transform(DATA_CFG)

    def embed(split) -> np.ndarray:
        with torch.no_grad():
            return backbone(torch.stack([transform(split.image(i)) for i in range(len(split))])).numpy()

    probe = LinearProbe(lr=0.1, steps=200, batch_size=32, random_state=0).fit(embed(train), train.labels)
    val_proba = probe.predict_proba(embed(val))
    assert np.mean(val_proba.argmax(1) == val.labels) >= 0.9

    config = {
        "model": "tiny",
        "strategy": "linear",
        "classes": ["r", "g", "b"],
        "resolution": None,
        "hparams": {},
        "data_config": dict(DATA_CFG),
    }
    Artifact(config=config, tensors=probe.tensors()).save(tmp_path / "run")
    module, data_cfg = load_artifact_model(tmp_path / "run", backbone=backbone)
    assert data_cfg == DATA_CFG
    got = predict_proba(module, val, data_cfg, batch_size=7)
    np.testing.assert_allclose(got, val_proba, atol=1e-5)
    again, _ = load_artifact_model(tmp_path / "run", backbone=backbone)
    assert np.array_equal(predict_proba(again, val, data_cfg), predict_proba(module, val, data_cfg))
