"""Layer taps: `model@layer` names a feature extractor that runs `model` up to one of its stages.

A tap's embedding is the global average over the spatial positions of that stage's output: the
feature map for convolutional networks, the patch tokens for vision transformers (class and
other prefix tokens left out). We pool the patch tokens rather than take the class token because
an intermediate class token is not what any loss trained (only the last block's is read by the
head), while the mean of the patch tokens is the same statistic for every family, so a tap of a
ViT and of a CNN are built and compared alike. No final norm is applied (timm's `norm=False`):
the tap is the block's own output.

The stages a model offers are timm's `feature_info` entries, named by their `module` field
('blocks.4', 'layer3'), computed by timm's `forward_intermediates` on the network pruned after
that stage (`prune_intermediate_layers`): a tap runs, stores and fine-tunes only the blocks it
needs. It loads the same weights file, with the same checksum, as its model.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any

import timm
import torch
from torch import nn

from zooens.errors import ConfigError, UnknownModelError
from zooens.zoo._names import TAP_SEPARATOR
from zooens.zoo._types import WeightSet

__all__ = [
    "DEFAULT_TAPS",
    "LayerTap",
    "TapFamily",
    "TapLayer",
    "base_weight_set",
    "build_tap",
    "pool_stage",
    "tap_layers",
    "tap_num_params",
    "tap_stages",
    "tap_weight_set",
]

logger = logging.getLogger(__name__)

DEFAULT_TAPS = 3
"""How many stages `--taps auto` adds per model (`taps_for`'s `last`)."""


@dataclasses.dataclass(frozen=True)
class TapLayer:
    """One stage a model can be tapped at (an entry of timm's `feature_info`)."""

    module: str  # the module whose output is tapped, e.g. 'blocks.4'
    index: int  # its position in feature_info, which is `forward_intermediates`' index
    num_chs: int  # channels (token width), the tap's embed_dim
    reduction: int  # stride of its output relative to the input


@functools.lru_cache(maxsize=256)
def _arch_facts(arch: str) -> tuple[tuple[TapLayer, ...], int]:
    """The tap layers of `arch` and its `num_features`, from a meta-device build (no memory, no init)."""
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False, num_classes=0)
    num_features = int(getattr(model, "num_features", 0) or 0)
    info = getattr(model, "feature_info", None)
    info = getattr(info, "info", info)  # timm's FeatureInfo wraps the list of dicts
    if not callable(getattr(model, "forward_intermediates", None)) or not info:
        return (), num_features
    layers = tuple(
        TapLayer(
            module=str(entry["module"]), index=index, num_chs=int(entry["num_chs"]), reduction=int(entry["reduction"])
        )
        for index, entry in enumerate(info)
    )
    return layers, num_features


@functools.lru_cache(maxsize=256)
def tap_num_params(arch: str, layer: str) -> int:
    """Parameters of `arch` pruned after `layer` (the tap's embedder), counted on the meta device."""
    with torch.device("meta"):
        model = build_tap(timm.create_model(arch, pretrained=False, num_classes=0), arch, layer)
    return int(sum(p.numel() for p in model.parameters()))


def tap_layers(arch: str) -> list[TapLayer]:
    """The stages of the timm architecture `arch` a tap may name, shallowest first (empty when timm
    gives it no `forward_intermediates`)."""
    return list(_arch_facts(arch)[0])


def _find_layer(ws: WeightSet, layer: str) -> TapLayer:
    layers = tap_layers(ws.arch)
    if not layers:
        raise UnknownModelError(
            f"{ws.name!r} ({ws.arch}) cannot be tapped: timm gives this architecture no intermediate "
            "features (`forward_intermediates`). Use the model itself, or another architecture."
        )
    for candidate in layers:
        if candidate.module == layer:
            return candidate
    example = f"{ws.name}{TAP_SEPARATOR}{layers[-2 if len(layers) > 1 else 0].module}"
    raise UnknownModelError(
        f"{ws.name!r} has no tap layer {layer!r}. Its tap layers are: "
        f"{', '.join(t.module for t in layers)} (e.g. {example!r})."
    )


def tap_weight_set(base: WeightSet, layer: str) -> WeightSet:
    """The weight set of the tap `base.name@layer`: `base`'s weights, source, checksum and
    preprocessing, with the stage's width as `embed_dim`; `num_params` is left to `zoo.describe`."""
    if base.is_tap:
        raise UnknownModelError(
            f"{base.name}{TAP_SEPARATOR}{layer} is a tap of a tap; tap the model {base.tap_of!r} instead."
        )
    found = _find_layer(base, layer)
    return dataclasses.replace(
        base,
        name=f"{base.name}{TAP_SEPARATOR}{found.module}",
        embed_dim=found.num_chs,
        num_params=None,
        tap_of=base.name,
        layer=found.module,
    )


def base_weight_set(ws: WeightSet) -> WeightSet:
    """The weight set a tap is taken from, rebuilt from the tap's own facts (no registry look-up)."""
    if not ws.is_tap:
        return ws
    return dataclasses.replace(ws, name=str(ws.tap_of), embed_dim=None, num_params=None, tap_of=None, layer=None)


class LayerTap(nn.Module):
    """A timm network pruned after one stage, returning that stage's output averaged over space.

    Input (B, 3, H, W); output (B, `num_features`), or (B, num_classes) logits when built with a
    head. `model` is the pruned timm network, `layer` the tapped module's name.
    """

    def __init__(self, model: nn.Module, layer: TapLayer, num_classes: int = 0) -> None:
        super().__init__()
        self.model = model
        self.layer = layer.module
        self.index = layer.index
        self.num_features = layer.num_chs
        self.num_classes = num_classes
        self.head = nn.Linear(layer.num_chs, num_classes) if num_classes > 0 else nn.Identity()
        # timm's convention: `classifier` names the head, so loaders may leave it out or reshape it
        self.pretrained_cfg: dict[str, Any] = {**(getattr(model, "pretrained_cfg", None) or {}), "classifier": "head"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled stage output, (B, num_features)."""
        (out,) = self.model.forward_intermediates(x, indices=[self.index], intermediates_only=True)
        return pool_stage(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def pool_stage(out: torch.Tensor) -> torch.Tensor:
    """A stage's output averaged over space: a (B, C, H, W) feature map over H and W, (B, N, D) tokens over N."""
    return out.mean(dim=(2, 3)) if out.ndim == 4 else out.mean(dim=1)


class TapFamily(nn.Module):
    """One forward pass of a timm network (unpruned, `num_classes=0`, weights loaded) giving several of its
    embeddings at once: its own pooled features first when `with_model`, then each of `layers`' tap
    embeddings (what `LayerTap` gives), in the order given, as a tuple of (B, D) tensors.

    A model and its taps (`--taps auto`) then cost one pass per model, not one per tap: the stages a tap
    runs are the first stages of its model's pass. Without `with_model` the pass stops after the deepest
    tap. `selection.embed` checks a family against each member's own embedding before it uses one."""

    def __init__(self, model: nn.Module, layers: list[TapLayer], *, with_model: bool) -> None:
        super().__init__()
        if not layers and not with_model:
            raise ConfigError("A tap family needs the model or at least one tap.")
        self.model = model
        self.with_model = with_model
        self.indices = sorted({t.index for t in layers})
        self.order = [self.indices.index(t.index) for t in layers]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.with_model:
            if self.indices:
                final, stages = self.model.forward_intermediates(x, indices=self.indices)
            else:
                final, stages = self.model.forward_features(x), []
            heads = [self.model.forward_head(final)]
        else:
            stages = self.model.forward_intermediates(x, indices=self.indices, intermediates_only=True, stop_early=True)
            heads = []
        pooled = [pool_stage(out) for out in stages]
        return (*heads, *(pooled[i] for i in self.order))


def build_tap(model: nn.Module, arch: str, layer: str, num_classes: int = 0) -> LayerTap:
    """Prune the timm network `model` (of architecture `arch`, weights loaded) after `layer` and
    wrap it; the head, when `num_classes` > 0, is initialised without moving the caller's RNG."""
    found = next((t for t in tap_layers(arch) if t.module == layer), None)
    if found is None:
        raise UnknownModelError(
            f"{arch} has no tap layer {layer!r}; its tap layers are: {', '.join(t.module for t in tap_layers(arch))}."
        )
    model.prune_intermediate_layers(indices=[found.index], prune_norm=True, prune_head=True)
    with torch.random.fork_rng(devices=[]):
        tap = LayerTap(model, found, num_classes=num_classes)
    return tap.eval()


def tap_stages(ws: WeightSet, last: int = DEFAULT_TAPS) -> list[TapLayer]:
    """The stages `--taps auto` taps in `ws`: its last `last` stages before its final features,
    deepest last (`zoo.taps_for` gives their names).

    The stages are the deepest `feature_info` entry at each stride; the deepest stage is left out
    when its width is the model's `num_features`, as its pooled output is then the model's own
    embedding up to a norm (ResNets, ConvNeXts, MobileNetV3; EfficientNets keep it, their final
    features come after a 1x1 convolution that widens 320 channels to 1280). A model with one
    stride throughout (a plain ViT) gets `last` evenly spaced blocks instead, never the last one
    (with `last=3` on 12 blocks: blocks 2, 5 and 8). Empty when the architecture cannot be tapped.
    """
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise ConfigError(f"taps: the number of stages per model must be a positive integer, got {last!r}.")
    if ws.is_tap:
        raise ConfigError(f"{ws.name!r} is a tap already; taps are taken of models ({ws.tap_of!r}).")
    layers, num_features = _arch_facts(ws.arch)
    if not layers:
        logger.info("%s (%s) has no intermediate features in timm: no taps", ws.name, ws.arch)
        return []
    ends = [t for i, t in enumerate(layers) if i + 1 == len(layers) or layers[i + 1].reduction != t.reduction]
    if len(ends) >= 2:
        if ends[-1].num_chs == num_features:
            ends = ends[:-1]
        return ends[-last:]
    n = len(layers)
    picks = sorted({round(n * k / (last + 1)) - 1 for k in range(1, last + 1)})
    return [layers[i] for i in picks if 0 <= i < n - 1]
