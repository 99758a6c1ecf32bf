"""`patch`: a model patch (Mudrakarta et al. 2018): only scales and biases train."""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from zooens.ensemble.adapters.base import AdapterConfig, AdapterMethod, register_adapter

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


@dataclass
class PatchConfig(AdapterConfig):
    include_biases: bool = field(default=True, metadata={"help": "Also train every bias of conv and linear layers."})
    include_depthwise: bool = field(default=False, metadata={"help": "Also train depthwise convolutions."})


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


@register_adapter("patch")
class Patch(AdapterMethod):
    config_cls = PatchConfig

    def inject(self, model: nn.Module, config: PatchConfig) -> list[nn.Parameter]:
        params: dict[int, nn.Parameter] = {}
        for m in model.modules():
            if isinstance(m, NORMS) or type(m).__name__.endswith(("Norm", "Norm2d", "NormAct2d")):
                for p in m.parameters(recurse=False):
                    params[id(p)] = p
            if config.include_biases and isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                params[id(m.bias)] = m.bias
            if config.include_depthwise and _is_depthwise(m):
                params[id(m.weight)] = m.weight
        return list(params.values())
