"""Forward-pass cost (FlopCounterMode) against hand formulas and timm's figure; shared passes counted once."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from torch import nn

from zooens.ensemble.cost import (
    EnsembleCost,
    ForwardCost,
    backbone_key,
    cost_vector,
    count_flops,
    count_params,
    ensemble_cost,
    forward_cost,
)
from zooens.errors import ConfigError


def test_conv_flops_equal_the_hand_formula() -> None:
    # 2 * output positions * output channels * (input channels / groups) * kernel area
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    assert count_flops(conv, 16) == 2 * (16 * 16) * 8 * 3 * 3 * 3
    strided = nn.Conv2d(3, 4, kernel_size=5, stride=2, bias=False)  # 8 x 4 outputs
    assert count_flops(strided, (20, 12)) == 2 * (8 * 4) * 4 * 3 * 5 * 5
    depthwise = nn.Conv2d(3, 3, kernel_size=3, padding=1, groups=3, bias=False)
    assert count_flops(depthwise, 10) == 2 * (10 * 10) * 3 * 1 * 3 * 3


def test_linear_flops_and_params_equal_the_hand_formula() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10), nn.ReLU(), nn.Linear(10, 4))
    assert count_flops(model, 8) == 2 * (192 * 10 + 10 * 4)  # activations are not counted
    assert count_params(model) == 192 * 10 + 10 + 10 * 4 + 4
    shared = nn.Linear(4, 4)
    assert count_params(nn.Sequential(shared, shared)) == 4 * 4 + 4  # a shared tensor once


def test_timm_resnet18_at_224_is_twice_its_macs() -> None:
    # timm and torchvision report 1.82 GMACs for resnet18 at 224; FlopCounterMode counts 2 per MAC.
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    cost = forward_cost(model, 224, device="cpu", measure_latency=False)
    assert cost.gflops == pytest.approx(2 * 1.82, rel=0.01)
    assert cost.params == sum(p.numel() for p in model.parameters()) == pytest.approx(11.69e6, rel=0.001)
    assert cost.latency_ms is None and cost.device is None and cost.resolution == (224, 224)
    assert model.training  # the caller's mode is restored


def test_forward_cost_measures_latency_and_is_deterministic() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    a = forward_cost(model, 16, device="cpu", repeats=3, warmup=1)
    b = forward_cost(model, 16, device="cpu", repeats=3, warmup=1)
    assert a.gflops == b.gflops == 2 * 14 * 14 * 4 * 3 * 9 / 1e9
    assert a.device == "cpu" and a.latency_ms is not None and math.isfinite(a.latency_ms) and a.latency_ms > 0
    assert ForwardCost.from_dict(a.to_dict()) == a


@pytest.mark.parametrize(
    "kwargs",
    [
        {"resolution": 0},
        {"resolution": (8,)},
        {"resolution": 8.5},
        {"resolution": 8, "repeats": 0},
        {"resolution": 8, "warmup": -1},
    ],
)
def test_bad_arguments(kwargs) -> None:
    with pytest.raises(ConfigError):
        forward_cost(nn.Flatten(), device="cpu", **kwargs)


def test_backbone_keys_share_frozen_passes_only() -> None:
    lin_a = backbone_key("m.a", "linear", resolution=224, preprocessing="model", run_key="finetune:m.a:linear:lr=0.1")
    lin_b = backbone_key("m.a", "linear", resolution=224, preprocessing="model", run_key="finetune:m.a:linear:lr=0.01")
    assert lin_a == lin_b
    assert lin_a != backbone_key("m.a", "linear", resolution=128, preprocessing="model", run_key="x")
    assert lin_a != backbone_key("m.a", "linear", resolution=224, preprocessing="resize", run_key="x")
    assert lin_a != backbone_key("m.b", "linear", resolution=224, preprocessing="model", run_key="x")
    full = [
        backbone_key("m.a", s, resolution=224, preprocessing="model", run_key=f"run-{s}-{i}")
        for s in ("full", "lora", "patch", "film", "kron")
        for i in range(2)
    ]
    assert len(set(full)) == len(full) and lin_a not in full
    with pytest.raises(ConfigError):
        backbone_key("m.a", "nonsense", resolution=224, preprocessing="model", run_key="x")


def fc(gflops: float, params: int, latency: float | None = 1.0) -> ForwardCost:
    return ForwardCost(gflops=gflops, params=params, latency_ms=latency, device="cpu", resolution=(224, 224))


def test_ensemble_cost_counts_each_pass_once() -> None:
    costs = {
        "lin1": ("A|shared", fc(1.5, 10, 2.0)),
        "lin2": ("A|shared", fc(1.5, 10, 2.0)),
        "full": ("A|run=full", fc(1.5, 10, 3.0)),
        "other": ("B|shared", fc(0.25, 4, 0.5)),
    }
    got = ensemble_cost(["lin1", "lin2", "full", "lin1"], costs)
    assert got == EnsembleCost(gflops=3.0, params=20, latency_ms=5.0, backbone_keys=("A|run=full", "A|shared"))
    assert ensemble_cost(["lin2"], costs).gflops == 1.5
    assert ensemble_cost([], costs).gflops == 0.0
    no_latency = {**costs, "other": ("B|shared", fc(0.25, 4, None))}
    assert ensemble_cost(["lin1", "other"], no_latency).latency_ms is None
    assert ensemble_cost(["lin1", "other"], no_latency).to_dict()["backbone_keys"] == ["A|shared", "B|shared"]
    with pytest.raises(ConfigError, match="two different costs"):
        ensemble_cost(["lin1", "x"], {**costs, "x": ("A|shared", fc(2.0, 10))})
    with pytest.raises(ConfigError, match="No cost"):
        ensemble_cost(["missing"], costs)


def test_cost_vector() -> None:
    cands = [("A", fc(1.0, 1, 2.0)), ("B", fc(3.0, 1, None))]
    assert cost_vector(cands, "gflops") == [("A", 1.0), ("B", 3.0)]
    with pytest.raises(ConfigError, match="no measured latency_ms"):
        cost_vector(cands, "latency_ms")
    with pytest.raises(ConfigError, match="Unknown cost metric"):
        cost_vector(cands, "watts")  # type: ignore[arg-type]


def test_a_vits_attention_counts_on_a_cpu_as_its_explicit_matmuls() -> None:
    """The fused CPU attention kernel has no FLOP formula: the count must still include attention, equal to the same
    ViT with timm's explicit (unfused) attention, whose two matmuls FlopCounterMode counts. Gradient flags stay."""
    torch.manual_seed(0)
    fused = timm.create_model("test_vit", num_classes=0)
    explicit = timm.create_model("test_vit", num_classes=0)
    for module in explicit.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    assert any(getattr(m, "fused_attn", False) for m in fused.modules())
    assert count_flops(fused, 160) == pytest.approx(count_flops(explicit, 160), rel=1e-9)
    assert all(p.requires_grad for p in fused.parameters()) and fused.training


class _Scripted(nn.Module):
    """A forward pass that takes the scripted time (seconds) on a fake clock: a cold first pass, then a slow
    round (other work on the cores), then quiet passes."""

    def __init__(self, durations: list[float]) -> None:
        super().__init__()
        self.durations, self.now, self.calls = list(durations), 0.0, 0

    def clock(self) -> float:
        return self.now

    def forward(self, x):
        self.now += self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1
        return x


def test_latency_warms_up_by_time_and_keeps_the_quietest_rounds_median() -> None:
    from zooens.ensemble.cost import WARMUP_SECONDS, measure_latency_ms

    cold = [0.5]  # one cold pass covers the warm-up time alone
    noisy = [0.100, 0.010, 0.100, 0.100, 0.100]  # a round mostly slowed by other work: its median is 100 ms
    quiet = [0.011, 0.012, 0.010, 0.050, 0.011]  # a burst inside a round: its median ignores it
    model = _Scripted(cold + noisy + quiet + quiet)
    ms = measure_latency_ms(model, 8, device="cpu", repeats=5, warmup=1, rounds=3, clock=model.clock)
    assert ms == pytest.approx(11.0)
    assert model.calls == 1 + 15

    step = 0.015
    fast = _Scripted([step])  # warm-up keeps going until WARMUP_SECONDS have passed
    measure_latency_ms(fast, 8, device="cpu", repeats=2, warmup=3, rounds=1, clock=fast.clock)
    assert fast.calls == math.ceil(WARMUP_SECONDS / step) + 2
    tiny = _Scripted([1e-5])  # ... for at most 50 passes
    measure_latency_ms(tiny, 8, device="cpu", repeats=2, warmup=3, rounds=1, clock=tiny.clock)
    assert tiny.calls == 50 + 2
    with pytest.raises(ConfigError, match="rounds"):
        measure_latency_ms(fast, 8, device="cpu", rounds=0)
