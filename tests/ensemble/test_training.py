"""The shared training loop on a real tiny timm network (random weights) and toy images."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from tests.ensemble._toy import toy_split
from zooens.cancel import cancel_scope
from zooens.ensemble.strategies.linear import LinearProbeModule
from zooens.ensemble.training import (
    TrainImages,
    bit_schedule,
    eval_transform,
    fit_classifier,
    iterate_batches,
    predict_proba,
)
from zooens.errors import Cancelled, ConfigError

DATA_CFG = {
    "input_size": (3, 64, 64),
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 1.0,
    "crop_mode": "center",
}


def tiny_classifier(seed: int = 0, n_classes: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    backbone = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    return nn.Sequential(backbone, nn.Linear(backbone.num_features, n_classes))


def standardised_classifier(split, seed: int = 0, n_classes: int = 3) -> LinearProbeModule:
    """A random tiny backbone (its features are ~1e-3 in scale) + standardisation + head."""
    torch.manual_seed(seed)
    backbone = timm.create_model("test_efficientnet", pretrained=False, num_classes=0).eval()
    transform = eval_transform(DATA_CFG)
    with torch.no_grad():
        feats = backbone(torch.stack([transform(split.image(i)) for i in range(len(split))]))
    model = LinearProbeModule(backbone, backbone.num_features, n_classes)
    model.norm.mean.copy_(feats.mean(0))
    model.norm.scale.copy_(feats.std(0))
    return model


def eval_loss(model: nn.Module, split) -> float:
    proba = predict_proba(model, split, DATA_CFG, batch_size=64)
    return float(-np.mean(np.log(proba[np.arange(len(split)), split.labels])))


def test_bit_schedule_values() -> None:
    got = [bit_schedule(s, 100, 0.1, 10) for s in (0, 4, 9, 10, 29, 30, 59, 60, 89, 90, 99, 150)]
    want = [0.01, 0.05, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 1e-4, 1e-4, 1e-4]
    assert got == pytest.approx(want, rel=1e-12)
    # no warm-up: the peak from the first step; decay points on fractions of a short run
    assert [bit_schedule(s, 10, 1.0, 0) for s in range(10)] == pytest.approx(
        [1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001]
    )


@pytest.mark.parametrize(
    "args", [(0, 0, 0.1, 0), (0, 10, 0.0, 0), (0, 10, -1.0, 0), (0, 10, 0.1, 11), (-1, 10, 0.1, 0)]
)
def test_bit_schedule_rejects_bad_values(args) -> None:
    with pytest.raises(ConfigError):
        bit_schedule(*args)


def test_iterate_batches_covers_each_epoch_and_is_seeded() -> None:
    a = iterate_batches(10, 4, torch.Generator().manual_seed(3))
    epoch = [next(a) for _ in range(2)]  # 10 // 4 = 2 full batches per epoch
    assert all(len(b) == 4 for b in epoch)
    assert len(set(torch.cat(epoch).tolist())) == 8
    b = iterate_batches(10, 4, torch.Generator().manual_seed(3))
    assert torch.equal(torch.cat(epoch), torch.cat([next(b) for _ in range(2)]))
    whole = iterate_batches(5, 99, torch.Generator().manual_seed(0))
    assert sorted(next(whole).tolist()) == [0, 1, 2, 3, 4]


def test_predict_proba_matches_a_manual_forward() -> None:
    split = toy_split(7, seed=1)
    model = tiny_classifier().eval()
    got = predict_proba(model, split, DATA_CFG, batch_size=3)
    transform = eval_transform(DATA_CFG)
    with torch.no_grad():
        x = torch.stack([transform(split.image(i)) for i in range(len(split))])
        want = torch.softmax(model(x).double(), 1).numpy()
    assert got.dtype == np.float32 and got.shape == (7, 3)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1, atol=1e-6)


def test_fit_classifier_head_only_lowers_loss_and_touches_nothing_else() -> None:
    train = toy_split(40, seed=0)
    model = standardised_classifier(train)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss0 = eval_loss(model, train)
    losses: list[float] = []
    fit_classifier(
        model,
        model.head.parameters(),
        train,
        DATA_CFG,
        lr=0.05,
        steps=15,
        batch_size=16,
        seed=0,
        progress=False,
        freeze_norm_stats=True,
        on_step=lambda step, loss: losses.append(loss),
    )
    assert len(losses) == 15
    assert eval_loss(model, train) < loss0 - 0.05
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}
    assert not model.training


def test_fit_classifier_all_params_change_and_is_reproducible() -> None:
    train = toy_split(24, seed=0)
    runs = []
    for seed in (0, 0, 1):
        model = tiny_classifier()
        before = {k: v.clone() for k, v in model.named_parameters()}
        fit_classifier(
            model, model.parameters(), train, DATA_CFG, lr=0.01, steps=4, batch_size=8, seed=seed, progress=False
        )
        assert all(not torch.equal(before[k], v) for k, v in model.named_parameters())
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert any(not torch.equal(runs[0][k], runs[2][k]) for k in runs[0] if runs[0][k].is_floating_point())


def test_fit_classifier_uses_the_given_loss() -> None:
    train = toy_split(8, seed=0)
    model = tiny_classifier()
    calls = []

    def loss_fn(m: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(images.shape))
        return m(images).pow(2).mean()  # drives the logits to zero

    fit_classifier(
        model,
        model[1].parameters(),
        train,
        DATA_CFG,
        lr=0.1,
        steps=3,
        batch_size=4,
        seed=0,
        loss_fn=loss_fn,
        progress=False,
    )
    assert calls == [(4, 3, 64, 64)] * 3


@pytest.mark.parametrize("kwargs", [{"lr": 0.0}, {"steps": 0}, {"batch_size": 0}, {"momentum": 1.0}])
def test_fit_classifier_rejects_bad_hyper_parameters(kwargs) -> None:
    model = tiny_classifier()
    args = {"lr": 0.1, "steps": 2, "batch_size": 2, "seed": 0} | kwargs
    with pytest.raises(ConfigError):
        fit_classifier(model, model.parameters(), toy_split(4, seed=0), DATA_CFG, progress=False, **args)


def test_fit_classifier_stops_at_the_step_its_scope_is_cancelled() -> None:
    """A cancel (set from any thread) is seen at the next step, not at the end of the run."""
    model = tiny_classifier()
    seen: list[int] = []
    with cancel_scope() as scope:

        def on_step(step: int, loss: float) -> None:
            seen.append(step)
            if step == 2:
                scope.cancel("a cancel was requested")

        with pytest.raises(Cancelled, match="a cancel was requested"):
            fit_classifier(
                model,
                model[1].parameters(),
                toy_split(8, seed=0),
                DATA_CFG,
                lr=0.1,
                steps=100_000,
                batch_size=4,
                seed=0,
                progress=False,
                on_step=on_step,
            )
    assert seen == [0, 1, 2]


def test_fit_classifier_stops_at_its_time_limit() -> None:
    model = tiny_classifier()
    with cancel_scope(time_limit=0.0):
        with pytest.raises(Cancelled, match="time limit"):
            fit_classifier(
                model,
                model[1].parameters(),
                toy_split(8, seed=0),
                DATA_CFG,
                lr=0.1,
                steps=100_000,
                batch_size=4,
                seed=0,
                progress=False,
            )


@pytest.mark.parametrize(
    "cfg",
    [
        DATA_CFG,
        {
            **DATA_CFG,
            "input_size": (3, 48, 40),
            "crop_pct": 0.875,
            "interpolation": "bilinear",
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
        },
    ],
)
def test_train_images_equal_the_eval_transform_bit_for_bit_and_decode_each_image_once(cfg) -> None:
    split = toy_split(12, seed=3, size=28)
    calls: list[int] = []
    image = split.image
    split.image = lambda i: (calls.append(i), image(i))[1]  # count decodes
    images = TrainImages(split, cfg)
    transform = eval_transform(cfg)
    for idx in (torch.tensor([3, 1, 3, 7]), torch.tensor([7, 0, 11, 1, 3]), torch.arange(12)):
        got = images.batch(idx)
        expected = torch.stack([transform(image(int(i))) for i in idx])
        assert got.dtype == torch.float32 and got.shape == expected.shape
        assert torch.equal(got, expected)
    assert sorted(calls) == list(range(12))  # each image decoded once, however often it was drawn
