"""`patch`: a model patch (Mudrakarta et al. 2018, "K for the Price of 1", arXiv 1810.10703).

The paper adapts a network to a new task by learning a small "model patch" on top of the frozen
network; its patches are
- the scale-and-bias patch: the scales gamma and biases beta of the normalisation layers
  (y = gamma * x_hat + beta; batch normalisation in the paper's CNNs);
- the depthwise patch: the depthwise convolutions (MobileNet's spatial filters), added to the
  scale-and-bias patch as an option;
and the last layer, which the strategy trains as its head.

`patch` trains exactly these: the affine parameters of every normalisation layer (BatchNorm,
LayerNorm, GroupNorm and timm's variants such as BatchNormAct2d and LayerNorm2d; for ViTs,
which have no batch norm, the LayerNorm scales and biases are the analogue), plus with
`depthwise=True` the weights (and biases, where a layer has them) of depthwise convolutions.

Training every bias of every convolution and linear layer is BitFit (Ben Zaken et al. 2021), a
different method: it is the opt-in option `biases=True`, off by default (it was on before, and
on ViT-B/16 it made 84k of 122k trained parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from zooens.ensemble.adapters.base import AdapterConfig, AdapterMethod, register_adapter
from zooens.errors import ConfigError

__all__ = ["PatchConfig", "Patch", "NORMS", "is_norm", "is_depthwise"]

NORMS = (_BatchNorm, _InstanceNorm, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
# timm's norm layers that do not subclass torch's (RmsNorm, RmsNorm2d, SimpleNorm, ...)
_NORM_NAME_ENDINGS = ("Norm", "Norm2d", "NormAct", "NormAct2d")


@dataclass
class PatchConfig(AdapterConfig):
    depthwise: bool = field(
        default=False,
        metadata={
            "help": "Also train depthwise convolutions (the paper's depthwise patch, for MobileNet-like networks)."
        },
    )
    biases: bool = field(
        default=False,
        metadata={
            "help": "Also train every bias of convolution and linear layers: BitFit (Ben Zaken et al. 2021), "
            "not the paper's model patch."
        },
    )


def is_norm(m: nn.Module) -> bool:
    """A normalisation layer whose direct parameters are its scale and bias."""
    return isinstance(m, NORMS) or type(m).__name__.endswith(_NORM_NAME_ENDINGS)


def is_depthwise(m: nn.Module) -> bool:
    """A convolution with one group per input channel (each filter sees a single channel)."""
    return isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.groups > 1 and m.groups == m.in_channels


@register_adapter("patch")
class Patch(AdapterMethod):
    config_cls = PatchConfig

    def inject(self, model: nn.Module, config: PatchConfig) -> list[nn.Parameter]:
        params: dict[int, nn.Parameter] = {}
        for m in model.modules():
            if is_norm(m) or (config.depthwise and is_depthwise(m)):
                for p in m.parameters(recurse=False):
                    params[id(p)] = p
            if config.biases and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and m.bias is not None:
                params[id(m.bias)] = m.bias
        if not params:
            raise ConfigError(
                "patch found no normalisation layer with a scale or bias in this model; "
                "use patch with depthwise=True or biases=True, or the lora strategy."
            )
        return list(params.values())
