"""Where FiT puts its FiLM layers, per timm family, and the layers themselves.

FiT (Shysheya et al. 2022, Sec. 3 and App. A, Fig. A.1; the authors' `bit_resnet.py` and
`efficientnet.py`) puts one FiLM layer, ``FiLM(x) = gamma * x + beta`` per channel (the paper's
Eq. 1), in each residual block, on a normalised feature map just *before* its activation, plus
one on the backbone's last pre-activation map. The authors define it for two backbones:

- BiT-M-R50x1 (pre-activation ResNet-v2): after ``gn3`` of each ``PreActBottleneck`` (the norm of
  the 3x3 convolution's output, before its ReLU and the last 1x1 convolution) and after the final
  ``GroupNorm`` before the final ReLU: 16 + 1 = 17 layers, 2 * (3776 + 2048) = 11,648 parameters.
- EfficientNet-B0: after the stem's ``bn0``, after ``bn1`` of each MBConv block (the norm of the
  depthwise convolution's output, before its swish) and after the head's ``bn1``.

zooens builds models through timm, whose norm layers are often fused with their activation
(``BatchNormAct2d``, ``GroupNormAct``); the FiLM goes between the normalisation and the fused
activation (`FiLMNorm`). The placement per timm family:

- ``EfficientNet`` / ``MobileNetV3`` (timm's efficientnet blocks): the stem's ``bn1``; per block the
  norm after its spatial convolution: ``DepthwiseSeparableConv.bn1`` and ``InvertedResidual.bn2``
  (after the depthwise conv, as FiT), ``EdgeResidual.bn1`` and ``ConvBnAct.bn1`` (their only
  spatial conv; FiT's EfficientNet-B0 has no such blocks); the head's ``bn2`` where it is a norm
  (MobileNetV3 has no head norm: none there).
- ``ResNet`` (timm's post-activation ResNet): ``Bottleneck.bn2`` (the 3x3 conv's norm, before its
  ReLU and the last 1x1 conv: FiT's ``gn3``), ``BasicBlock.bn1`` (the norm before the block's inner
  ReLU and its last conv); and, as BiT's final FiLM, one before the last block's final ReLU (on
  ``bn3(conv3(x)) + shortcut``, the last pre-activation map; `FiLMAct`). On ``resnet50``: 17 layers,
  11,648 parameters, as FiT's BiT-M-R50x1.
- ``ResNetV2`` (BiT's own architecture in timm): ``PreActBottleneck.norm3`` exactly as FiT,
  ``PreActBasic.norm2`` and the non-pre-activation ``Bottleneck.norm2`` (the 3x3 conv's norm), and
  the final ``norm`` before the final activation (the last block's ``act3`` where ``norm`` is
  absent).
- ``VisionTransformer`` (not in FiT; our analogue): per ``Block`` after ``norm2``, the LayerNorm whose
  output feeds the MLP and its GELU (the block's only activation), width D; and after the final
  ``norm`` (``fc_norm`` when ``norm`` is absent), as BiT's final FiLM. FiLM on the MLP's hidden
  pre-activation would cost 4x the parameters; a LayerNorm output is a normalised map like FiT's.

A layer tap (`zoo.LayerTap`, `model@layer`: the network pruned after one stage) gets the placement of
its network's family on the blocks the pruning kept, each as in the whole model; the backbone's last
FiLM goes where the pruned network's output is: its last norm if pruning kept one (it keeps none of
timm's final norms), else, on a ResNet, before the last kept block's final ReLU as above. FiT defines
no placement for a truncated backbone; this is the placement of the whole model restricted to the
blocks that run.

Any other family is refused with a ConfigError: FiT defines no placement for it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from timm.layers import BatchNormAct2d, GroupNormAct
from timm.models import _efficientnet_blocks as eff_blocks
from timm.models import efficientnet, mobilenetv3, resnet, resnetv2, vision_transformer
from torch import nn

from zooens.errors import ConfigError
from zooens.zoo import LayerTap

__all__ = ["FiLM", "FiLMAct", "FiLMNorm", "FilmSite", "film_sites", "inject_film", "SUPPORTED_FAMILIES"]

SUPPORTED_FAMILIES = ("EfficientNet", "MobileNetV3", "ResNet", "ResNetV2", "VisionTransformer")


class FiLM(nn.Module):
    """``gamma * x + beta`` per channel (FiT's Eq. 1); gamma = 1 and beta = 0 at initialisation.

    `channel_dim` is 1 for feature maps (B, C, H, W) and -1 for tokens (B, N, D).
    """

    def __init__(self, channels: int, channel_dim: int) -> None:
        super().__init__()
        self.channel_dim = channel_dim
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.ndim
        shape[self.channel_dim] = -1
        return x * self.gamma.view(shape).to(x.dtype) + self.beta.view(shape).to(x.dtype)


def _torch_norm_class(norm: nn.Module) -> type[nn.Module]:
    """The torch normalisation class a timm fused norm-act layer extends (its normalisation alone)."""
    for cls in type(norm).__mro__[1:]:
        if cls.__module__.startswith("torch.nn") and cls is not nn.Module:
            return cls
    raise ConfigError(f"{type(norm).__name__} extends no torch normalisation layer; FiLM cannot split it.")


class FiLMNorm(nn.Module):
    """A normalisation layer with a FiLM between its normalisation and its (fused) activation.

    For timm's ``BatchNormAct2d`` / ``GroupNormAct`` the normalisation runs as the torch class they
    extend, then the FiLM, then the layer's own ``drop`` and ``act``; a plain norm is followed by the
    FiLM only (its activation, where there is one, comes after it in the block).
    """

    def __init__(self, norm: nn.Module, film: FiLM) -> None:
        super().__init__()
        self.norm = norm
        self.film = film
        self._fused = isinstance(norm, (BatchNormAct2d, GroupNormAct))
        self._normalise = _torch_norm_class(norm).forward if self._fused else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused:
            y = self.film(self._normalise(self.norm, x))
            return self.norm.act(self.norm.drop(y))
        return self.film(self.norm(x))


class FiLMAct(nn.Module):
    """A FiLM before an activation (the final pre-activation map of a post-activation ResNet)."""

    def __init__(self, act: nn.Module, film: FiLM) -> None:
        super().__init__()
        self.act = act
        self.film = film

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.film(x))


@dataclass(frozen=True)
class FilmSite:
    """One FiLM layer: the module it wraps (`path`), how (`kind`: "norm" or "act"), its width."""

    path: str
    kind: str
    channels: int
    channel_dim: int


def _channels(norm: nn.Module) -> int:
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        return int(norm.num_features)
    if isinstance(norm, nn.GroupNorm):
        return int(norm.num_channels)
    if isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) == 1:
        return int(norm.normalized_shape[0])
    raise ConfigError(
        f"FiLM cannot modulate a {type(norm).__name__}: FiT places FiLM on BatchNorm, GroupNorm or LayerNorm outputs."
    )


def _is_norm(module: nn.Module | None) -> bool:
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm))


def _norm_site(model: nn.Module, path: str, channel_dim: int = 1) -> FilmSite:
    return FilmSite(path, "norm", _channels(model.get_submodule(path)), channel_dim)


# block class -> the attribute of its norm that FiT modulates (see the module docstring)
_EFFICIENTNET_BLOCKS: tuple[tuple[type[nn.Module], str], ...] = (
    (eff_blocks.DepthwiseSeparableConv, "bn1"),
    (eff_blocks.InvertedResidual, "bn2"),  # CondConvResidual extends it
    (eff_blocks.EdgeResidual, "bn1"),
    (eff_blocks.ConvBnAct, "bn1"),
)
_RESNETV2_BLOCKS: tuple[tuple[type[nn.Module], str], ...] = (
    (resnetv2.PreActBottleneck, "norm3"),
    (resnetv2.PreActBasic, "norm2"),
    (resnetv2.Bottleneck, "norm2"),
)


def _unknown_block(arch: str, path: str, block: nn.Module) -> ConfigError:
    return ConfigError(
        f"FiT's FiLM placement is not defined for the {type(block).__name__} block at {path!r} of "
        f"{arch}; use another strategy (patch, lora, full) for this model."
    )


def _efficientnet_sites(model: nn.Module) -> list[FilmSite]:
    sites = [_norm_site(model, "bn1")]
    for i, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            attr = next((a for cls, a in _EFFICIENTNET_BLOCKS if isinstance(block, cls)), None)
            if attr is None or not _is_norm(getattr(block, attr, None)):
                raise _unknown_block(type(model).__name__, f"blocks.{i}.{j}", block)
            sites.append(_norm_site(model, f"blocks.{i}.{j}.{attr}"))
    for head_norm in ("bn2", "norm_head"):
        if _is_norm(getattr(model, head_norm, None)):
            sites.append(_norm_site(model, head_norm))
            break
    return sites


def _resnet_sites(model: nn.Module) -> list[FilmSite]:
    sites: list[FilmSite] = []
    last: tuple[str, nn.Module] | None = None
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        blocks = getattr(model, stage)
        if not isinstance(blocks, nn.Sequential):  # pruned away (a layer tap): timm leaves an Identity
            continue
        for j, block in enumerate(blocks):
            path = f"{stage}.{j}"
            if isinstance(block, resnet.Bottleneck):
                sites.append(_norm_site(model, f"{path}.bn2"))
            elif isinstance(block, resnet.BasicBlock):
                sites.append(_norm_site(model, f"{path}.bn1"))
            else:
                raise _unknown_block("ResNet", path, block)
            last = (path, block)
    if last is not None:
        path, block = last
        final_act = "act3" if isinstance(block, resnet.Bottleneck) else "act2"
        out_norm = block.bn3 if isinstance(block, resnet.Bottleneck) else block.bn2
        sites.append(FilmSite(f"{path}.{final_act}", "act", _channels(out_norm), 1))
    return sites


def _resnetv2_sites(model: nn.Module) -> list[FilmSite]:
    sites: list[FilmSite] = []
    last: tuple[str, nn.Module] | None = None
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            path = f"stages.{i}.blocks.{j}"
            attr = next((a for cls, a in _RESNETV2_BLOCKS if isinstance(block, cls)), None)
            if attr is None or not _is_norm(getattr(block, attr, None)):
                raise _unknown_block("ResNetV2", path, block)
            sites.append(_norm_site(model, f"{path}.{attr}"))
            last = (path, block)
    if _is_norm(model.norm):
        sites.append(_norm_site(model, "norm"))
    elif last is not None and isinstance(last[1], resnetv2.Bottleneck):
        sites.append(FilmSite(f"{last[0]}.act3", "act", _channels(last[1].norm3), 1))
    return sites


def _vit_sites(model: nn.Module) -> list[FilmSite]:
    sites: list[FilmSite] = []
    for j, block in enumerate(model.blocks):
        if not isinstance(block, vision_transformer.Block) or not _is_norm(getattr(block, "norm2", None)):
            raise _unknown_block("VisionTransformer", f"blocks.{j}", block)
        sites.append(_norm_site(model, f"blocks.{j}.norm2", -1))
    for final in ("norm", "fc_norm"):
        if _is_norm(getattr(model, final, None)):
            sites.append(_norm_site(model, final, -1))
            break
    return sites


def film_sites(model: nn.Module) -> list[FilmSite]:
    """FiT's FiLM layers for a timm model (or a layer tap of one), in forward order; ConfigError for a
    family FiT does not cover."""
    if isinstance(model, LayerTap):
        return [dataclasses.replace(site, path=f"model.{site.path}") for site in film_sites(model.model)]
    if isinstance(model, (efficientnet.EfficientNet, mobilenetv3.MobileNetV3)):
        return _efficientnet_sites(model)
    if isinstance(model, resnet.ResNet):
        return _resnet_sites(model)
    if isinstance(model, resnetv2.ResNetV2):
        return _resnetv2_sites(model)
    if isinstance(model, vision_transformer.VisionTransformer):
        return _vit_sites(model)
    raise ConfigError(
        f"FiT's FiLM placement is defined for the timm families {', '.join(SUPPORTED_FAMILIES)}, not for "
        f"{type(model).__name__}; use another strategy (patch, lora, full) for this model."
    )


def _replace(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def inject_film(model: nn.Module) -> list[nn.Parameter]:
    """Wrap every site of `film_sites(model)` with a FiLM (the identity at initialisation).

    Returns the FiLM parameters, gamma then beta per layer, in forward order.
    """
    params: list[nn.Parameter] = []
    for site in film_sites(model):
        film = FiLM(site.channels, site.channel_dim)
        inner = model.get_submodule(site.path)
        _replace(model, site.path, FiLMNorm(inner, film) if site.kind == "norm" else FiLMAct(inner, film))
        params += [film.gamma, film.beta]
    return params
