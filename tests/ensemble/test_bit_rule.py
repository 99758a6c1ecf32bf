"""BiT's hyper-rule against the numbers of the paper (Kolesnikov et al. 2020, section 3.3) and of the
authors' `bit_hyperrule.py`, written here from those sources, not from the code under test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.ensemble._toy import toy_split
from zooens.ensemble import get_strategy
from zooens.ensemble.specs import bit_hyperrule
from zooens.ensemble.training import bit_schedule, fit_classifier
from zooens.errors import ConfigError
from zooens.selection.datasets import ImageDataset, Split

DATA_CFG = {
    "input_size": (3, 16, 16),
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "interpolation": "bilinear",
    "crop_pct": 1.0,
}


@pytest.mark.parametrize(
    ("n", "steps", "warmup", "decays", "mixup"),
    [
        (1, 500, 100, (200, 300, 400), 0.0),
        (800, 500, 100, (200, 300, 400), 0.0),
        (19_999, 500, 100, (200, 300, 400), 0.0),
        (20_000, 10_000, 500, (3_000, 6_000, 9_000), 0.1),
        (499_999, 10_000, 500, (3_000, 6_000, 9_000), 0.1),
        (500_000, 20_000, 500, (6_000, 12_000, 18_000), 0.1),
    ],
)
def test_schedule_and_mixup_follow_the_dataset_size(n, steps, warmup, decays, mixup) -> None:
    rule = bit_hyperrule(n, (224, 224), "cuda")
    assert (rule.steps, rule.warmup, rule.decay_steps, rule.mixup) == (steps, warmup, decays, mixup)
    assert rule.batch == 512 and rule.lr == 0.003
    if steps > 500:  # the paper's 30%, 60%, 90%
        assert decays == tuple(round(f * steps) for f in (0.3, 0.6, 0.9))


def test_resolution_rule_on_gpu_and_cpu() -> None:
    assert (bit_hyperrule(800, (95, 96), "cuda").resize, bit_hyperrule(800, (95, 96), "cuda").resolution) == (160, 128)
    big = bit_hyperrule(800, (96, 96), "cuda:0")
    assert (big.resize, big.resolution) == (448, 384)
    assert bit_hyperrule(800, (500, 500), "cpu").resolution == 128  # a CPU takes the small setting
    with pytest.raises(ConfigError, match="training examples"):
        bit_hyperrule(0, None, "cpu")


def test_learning_rate_schedule_equals_bits_staircase() -> None:
    """BiT's get_lr: linear warm-up, then divided by 10 at each support (we move from step 1 on)."""
    rule = bit_hyperrule(800, None, "cpu")
    lrs = [bit_schedule(s, rule.steps, 0.003, rule.warmup, rule.decay_steps) for s in range(rule.steps)]
    assert lrs[0] == pytest.approx(0.003 / 100) and lrs[99] == pytest.approx(0.003)
    assert lrs[150] == pytest.approx(0.003) and lrs[250] == pytest.approx(0.0003)
    assert lrs[350] == pytest.approx(0.00003) and lrs[450] == pytest.approx(0.000003)
    assert rule.scaled(50) == (10, (20, 30, 40))


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _one_step(micro: int | None) -> torch.Tensor:
    torch.manual_seed(0)
    model = _Linear()
    fit_classifier(
        model,
        list(model.parameters()),
        toy_split(24, seed=0, size=16),
        DATA_CFG,
        lr=0.1,
        steps=1,
        batch_size=24,
        seed=0,
        momentum=0.0,
        warmup_steps=0,
        micro_batch_size=micro,
        progress=False,
    )
    return model.fc.weight.detach().clone()


def test_gradient_accumulation_equals_the_whole_batch() -> None:
    """Batch 24 in micro-batches of 5 (uneven chunks) gives the update of batch 24 at once."""
    torch.testing.assert_close(_one_step(5), _one_step(None), atol=1e-6, rtol=1e-5)


def test_mixup_mixes_pairs_with_one_ratio_and_trains() -> None:
    seen: list[torch.Tensor] = []
    losses: list[float] = []
    model = _Linear()
    fit_classifier(
        model,
        list(model.parameters()),
        toy_split(32, seed=0, size=16),
        DATA_CFG,
        lr=0.1,
        steps=5,
        batch_size=16,
        seed=0,
        mixup_alpha=0.1,
        progress=False,
        on_step=lambda s, v: losses.append(v),
        on_batch=seen.append,
    )
    assert len(seen) == 5 and all(np.isfinite(losses))
    with pytest.raises(ConfigError, match="MixUp"):
        fit_classifier(
            model,
            list(model.parameters()),
            toy_split(8, seed=0, size=16),
            DATA_CFG,
            lr=0.1,
            steps=1,
            batch_size=8,
            seed=0,
            mixup_alpha=0.1,
            loss_fn=lambda m, x, y: m(x).sum(),
            progress=False,
        )


def test_a_default_sweeps_steps_are_fractions_of_the_rules_schedule() -> None:
    """The default sweep names steps for BiT's under-20k schedule (500, and 250 on a GPU); on larger data they scale
    with the rule's length (10k steps from 20k examples), and steps the user gave are kept as given."""
    full = get_strategy("full")

    def data(n: int) -> ImageDataset:
        train = Split("train", np.zeros((n, 8, 8), np.uint8), np.arange(n) % 2)
        return ImageDataset(
            "n", ["a", "b"], {"train": train, "val": Split("val", np.zeros((2, 8, 8), np.uint8), [0, 1])}
        )

    small, large = data(100), data(20_000)
    assert [full.job_steps(s, small, "cuda", steps_given=False) for s in (250, 500)] == [250, 500]
    assert [full.job_steps(s, large, "cuda", steps_given=False) for s in (250, 500)] == [5_000, 10_000]
    assert full.job_steps(40, large, "cuda", steps_given=True) == 40
