"""Inference cost: one forward pass of a candidate, and an ensemble's cost over shared forward passes.

`forward_cost` counts the FLOPs of a batch-1 forward pass with `torch.utils.flop_counter.FlopCounterMode`
(PyTorch's maintained counter), the parameters, and measures the latency on a device. FLOPs follow
FlopCounterMode's convention: a multiply-add counts as **two** FLOPs, and only the matrix products,
convolutions and attention are counted (normalisation, activations and pooling are not), so a timm
`resnet18` at 224 px is 3.63 GFLOPs, twice the 1.82 GMACs timm and most papers report.

Runs that leave the backbone frozen (strategies with `Strategy.shares_backbone`: `linear`, `concat`) read the
same features as every other such run of the same model, resolution and preprocessing, so an
ensemble pays their forward pass once: `backbone_key` names that pass, and `ensemble_cost` sums the
cost of the distinct passes, not of the members. Runs that change the backbone (`full`, `patch`,
`film`, `kron`, `lora`, `aft`) each get a key of their own. A `concat` probe reads several passes, one
per model, each keyed as that model's `linear` runs (`Passes`). Linear heads are not counted: a
`D x C` head is `2 D C` FLOPs (26 kFLOPs for 1,280 features and 10 classes), below a millionth of
a backbone's pass.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from zooens.ensemble._registry import get_strategy
from zooens.errors import ConfigError
from zooens.zoo import check_preprocessing

log = logging.getLogger(__name__)

__all__ = [
    "COST_METRICS",
    "LATENCY_ROUNDS",
    "WARMUP_SECONDS",
    "EnsembleCost",
    "Passes",
    "ForwardCost",
    "backbone_key",
    "cost_vector",
    "count_flops",
    "count_params",
    "ensemble_cost",
    "forward_cost",
    "measure_latency_ms",
]

COST_METRICS = ("gflops", "latency_ms")
"""What a budget may bound: `--max-gflops` bounds `gflops`, `--max-latency-ms` bounds `latency_ms`."""


@dataclass(frozen=True)
class ForwardCost:
    """The cost of one batch-1 forward pass.

    gflops : 1e9 FLOPs, a multiply-add counted as two (FlopCounterMode's convention).
    params : parameters of the module (each shared tensor once).
    latency_ms : median wall time of one batch-1 forward on `device`, or None when not measured.
    device : where the latency was measured, or None (not measured, or not known: a cost read back from
        a run's record, `zooens.pipeline.records.RunRecord`, which keeps the figures only).
    resolution : (height, width) of the input the pass was counted at, or None when not known.
    """

    gflops: float
    params: int
    latency_ms: float | None
    device: str | None = None
    resolution: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolution"] = None if self.resolution is None else list(self.resolution)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ForwardCost:
        return cls(
            gflops=float(d["gflops"]),
            params=int(d["params"]),
            latency_ms=None if d.get("latency_ms") is None else float(d["latency_ms"]),
            device=d.get("device"),
            resolution=None if d.get("resolution") is None else tuple(int(v) for v in d["resolution"]),
        )  # type: ignore[arg-type]


@dataclass(frozen=True)
class EnsembleCost:
    """The cost of an ensemble: each distinct forward pass (backbone key) counted once.

    gflops, params : sums over the distinct passes. latency_ms : the sum too (the passes run one
    after the other on one device), None when any pass has none. backbone_keys : the distinct
    passes, sorted.
    """

    gflops: float
    params: int
    latency_ms: float | None
    backbone_keys: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["backbone_keys"] = list(self.backbone_keys)
        return d


def _check_resolution(resolution: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(resolution, (int,)) and not isinstance(resolution, bool):
        hw: tuple[int, ...] = (resolution, resolution)
    elif (
        isinstance(resolution, Sequence)
        and len(resolution) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in resolution)
    ):
        hw = tuple(resolution)
    else:
        raise ConfigError(f"resolution must be a pixel count or (height, width), got {resolution!r}; e.g. 224.")
    if min(hw) < 1:
        raise ConfigError(f"resolution must be positive, got {resolution!r}.")
    return hw[0], hw[1]


def _input(hw: tuple[int, int], device: str, seed: int) -> torch.Tensor:
    """A seeded batch-1 image (drawn on the CPU, so every device sees the same numbers)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, *hw, generator=gen).to(device)


def count_params(model: nn.Module) -> int:
    """Parameters of `model`, each tensor once (tied weights are not counted twice)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, resolution: int | Sequence[int], *, seed: int = 0) -> float:
    """FLOPs of one forward pass of a batch-1 image of `resolution` on the model's own device.

    A multiply-add counts as two FLOPs (FlopCounterMode). The model runs in eval mode under
    `torch.inference_mode`, with no parameter requiring a gradient (FlopCounterMode's module tracker
    fails on some models otherwise, CaiT's for one) and scaled dot-product attention on its math
    backend: FlopCounterMode has no formula for the fused CPU kernel and would count a ViT's attention
    as nothing on a CPU, so the same model would cost less on a CPU worker than on a GPU one. The
    training flag and the gradient flags are restored afterwards.
    """
    hw = _check_resolution(resolution)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = _input(hw, str(device), seed)
    was_training = model.training
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    try:
        for p in trainable:
            p.requires_grad_(False)
        with (
            FlopCounterMode(display=False) as counter,
            torch.inference_mode(),
            sdpa_kernel(SDPBackend.MATH),
        ):
            model(x)
    finally:
        for p in trainable:
            p.requires_grad_(True)
        model.train(was_training)
    return float(counter.get_total_flops())


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


LATENCY_ROUNDS = 3
"""Rounds of `repeats` timed passes `measure_latency_ms` runs; it keeps the fastest round's median."""
WARMUP_SECONDS = 0.2
"""Least time `measure_latency_ms` warms up for (beyond `warmup` passes, at most `_MAX_WARMUP` passes)."""
_MAX_WARMUP = 50


def measure_latency_ms(
    model: nn.Module,
    resolution: int | Sequence[int],
    *,
    device: str,
    repeats: int = 10,
    warmup: int = 3,
    seed: int = 0,
    rounds: int = LATENCY_ROUNDS,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Batch-1 forward latency in ms on `device`: the lowest of `rounds` medians of `repeats` timed passes each,
    after a warm-up of at least `warmup` passes and `WARMUP_SECONDS` (at most `_MAX_WARMUP` passes).

    A single median of a few passes moved tenfold between two jobs on one machine (11.6 and 117.9 ms): a cold
    first pass (allocator, oneDNN or cuDNN plans) and other work sharing the cores both only ever add time.
    The warm-up by time absorbs the first; the median absorbs a burst inside a round and the lowest round's
    median a slow round, as `timeit` recommends the minimum of repeats. Inference mode, eval mode, a seeded
    input; CUDA is synchronised around each timed pass. The model is moved to `device` (and stays there).
    `clock` (seconds) is for tests.
    """
    hw = _check_resolution(resolution)
    for name, value, least in (("repeats", repeats, 1), ("warmup", warmup, 0), ("rounds", rounds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{name} must be an integer of at least {least}, got {value!r}; e.g. 3.")
    model.to(device)
    x = _input(hw, device, seed)
    was_training = model.training
    model.eval()
    medians: list[float] = []
    try:
        with torch.inference_mode():
            start, done = clock(), 0
            while done < warmup or (clock() - start < WARMUP_SECONDS and done < _MAX_WARMUP):
                model(x)
                done += 1
            for _ in range(rounds):
                times = []
                for _ in range(repeats):
                    _sync(device)
                    begin = clock()
                    model(x)
                    _sync(device)
                    times.append((clock() - begin) * 1000.0)
                medians.append(statistics.median(times))
    finally:
        model.train(was_training)
    return float(min(medians))


def forward_cost(
    model: nn.Module,
    resolution: int | Sequence[int],
    *,
    device: str,
    measure_latency: bool = True,
    repeats: int = 10,
    warmup: int = 3,
    seed: int = 0,
) -> ForwardCost:
    """GFLOPs, parameters and latency of one batch-1 forward pass of `model` at `resolution`.

    model : images (B, 3, H, W) -> anything (an embedder from `zoo.create_model(name, num_classes=0)`
        or a run's loaded classifier). resolution : pixels (square) or (height, width).
    device : where the model is moved and the latency measured (`cuda`, `cpu`). FLOPs do not depend
        on it. measure_latency=False skips the timing (latency_ms None), e.g. in tests.
    """
    hw = _check_resolution(resolution)
    model.to(device)
    flops = count_flops(model, hw, seed=seed)
    latency = (
        measure_latency_ms(model, hw, device=device, repeats=repeats, warmup=warmup, seed=seed)
        if measure_latency
        else None
    )
    cost = ForwardCost(
        gflops=flops / 1e9,
        params=count_params(model),
        latency_ms=latency,
        device=device if measure_latency else None,
        resolution=hw,
    )
    log.info(
        "Forward cost at %dx%d: %.3f GFLOPs, %d parameters, latency %s ms on %s",
        *hw,
        cost.gflops,
        cost.params,
        "-" if latency is None else f"{latency:.2f}",
        device,
    )
    return cost


def backbone_key(model_name: str, strategy: str, *, resolution: int | None, preprocessing: str, run_key: str) -> str:
    """The name of the forward pass a run's predictions need; runs with equal keys share one pass.

    A strategy with `shares_backbone` (`linear`: a head on the frozen model's features) gets
    `model|res=<px or model>|prep=<preprocessing>`, so every such run of that model, resolution and
    preprocessing shares it; any other strategy (its backbone changed) gets `model|run=<run_key>`,
    one pass per run. `strategy` is the one the run used (`auto` resolved: `linear` or `full`).
    """
    if not model_name or not run_key:
        raise ConfigError("backbone_key needs a model name and a run key (e.g. the run's unit key).")
    if get_strategy(strategy).shares_backbone:
        return (
            f"{model_name}|res={'model' if resolution is None else int(resolution)}|"
            f"prep={check_preprocessing(preprocessing)}"
        )
    return f"{model_name}|run={run_key}"


Passes = tuple[str, ForwardCost] | Sequence[tuple[str, ForwardCost]]
"""A member's forward passes: one (backbone key, cost) pair, or a list of them for a member that reads
several frozen backbones (strategy `concat`)."""


def _pass_list(item: Passes, member: object) -> list[tuple[str, ForwardCost]]:
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        return [item]  # type: ignore[list-item]
    pairs = list(item)
    if not pairs or not all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in pairs):
        raise ConfigError(f"The cost of member {member!r} must be (backbone key, ForwardCost) or a list of them.")
    return pairs


def ensemble_cost(members: Iterable[Hashable], costs: Mapping[Hashable, Passes]) -> EnsembleCost:
    """The cost of the ensemble of `members` (repeats allowed): each distinct backbone key once.

    costs : for each member, its (backbone key, forward cost), or a list of them (`Passes`). Two
    passes with one key must have the same forward cost. Heads are not counted (see the module's docstring).
    """
    passes: dict[str, ForwardCost] = {}
    for member in members:
        if member not in costs:
            raise ConfigError(f"No cost for ensemble member {member!r}; give a (backbone key, ForwardCost) for each.")
        for key, cost in _pass_list(costs[member], member):
            seen = passes.setdefault(key, cost)
            if not (math.isclose(seen.gflops, cost.gflops, rel_tol=1e-9) and seen.params == cost.params):
                raise ConfigError(
                    f"Backbone key {key!r} has two different costs ({seen.gflops} and {cost.gflops} "
                    "GFLOPs); runs sharing a forward pass must share its cost."
                )
    keys = tuple(sorted(passes))
    latencies = [passes[k].latency_ms for k in keys]
    return EnsembleCost(
        gflops=math.fsum(passes[k].gflops for k in keys),
        params=sum(passes[k].params for k in keys),
        latency_ms=None if any(v is None for v in latencies) else math.fsum(latencies),  # type: ignore[misc]
        backbone_keys=keys,
    )


def cost_vector(candidates: Sequence[Passes], metric: Literal["gflops", "latency_ms"]) -> list[Any]:
    """Per candidate, (backbone key, its pass's `metric`), or a list of those for a candidate of several
    passes: the `costs` of `GreedyEnsembleSelector`.

    `--max-gflops` maps to metric `gflops`, `--max-latency-ms` to `latency_ms`.
    """
    if metric not in COST_METRICS:
        raise ConfigError(f"Unknown cost metric {metric!r}; use one of {', '.join(COST_METRICS)}.")
    out: list[Any] = []
    for i, candidate in enumerate(candidates):
        values: list[tuple[str, float]] = []
        for key, cost in _pass_list(candidate, i):
            value = getattr(cost, metric)
            if value is None:
                raise ConfigError(
                    f"The pass {key!r} has no measured {metric}; measure it (forward_cost with "
                    "measure_latency=True) or budget GFLOPs instead."
                )
            values.append((key, float(value)))
        is_single = isinstance(candidate, tuple) and len(candidate) == 2 and isinstance(candidate[0], str)
        out.append(values[0] if is_single else values)
    return out
