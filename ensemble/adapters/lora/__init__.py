"""`lora`: low-rank updates W + (alpha / r) B A of linear layers (and 1x1 convolutions); B starts at 0."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from zooens.ensemble.adapters.base import AdapterConfig, AdapterMethod, register_adapter, replace_module
from zooens.errors import ConfigError


@dataclass
class LoraConfig(AdapterConfig):
    rank: int = field(default=4, metadata={"help": "Rank r of each update."})
    alpha: float = field(default=8.0, metadata={"help": "Scale: the update is multiplied by alpha / r."})
    include_conv1x1: bool = field(
        default=True, metadata={"help": "Also adapt 1x1 convolutions (CNNs have few linears)."}
    )
    target: str = field(default="", metadata={"help": "Only layers whose name contains this text (empty: all)."})

    def validate(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"LoRA rank must be at least 1, got {self.rank}.")


class LoraLinear(nn.Module):
    def __init__(self, base: nn.Module, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        out_f, in_f = base.weight.shape[:2]
        r = min(rank, in_f, out_f)
        self.lora_A = nn.Parameter(torch.empty(r, in_f))
        self.lora_B = nn.Parameter(torch.zeros(out_f, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = alpha / r

    def delta(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if isinstance(self.base, nn.Conv2d):
            return out + F.conv2d(x, self.delta()[:, :, None, None], stride=self.base.stride)
        return out + F.linear(x, self.delta())


def _targets(model: nn.Module, config: LoraConfig) -> list[str]:
    names = []
    for name, m in model.named_modules():
        if config.target and config.target not in name:
            continue
        if isinstance(m, nn.Linear) or (
            config.include_conv1x1
            and isinstance(m, nn.Conv2d)
            and m.kernel_size == (1, 1)
            and m.groups == 1
            and m.padding in ((0, 0), "valid")
        ):
            names.append(name)
    return names


@register_adapter("lora")
class Lora(AdapterMethod):
    config_cls = LoraConfig

    def inject(self, model: nn.Module, config: LoraConfig) -> list[nn.Parameter]:
        names = _targets(model, config)
        if not names:
            raise ConfigError("LoRA found no linear layer or 1x1 convolution to adapt; check `target`.")
        params = []
        for name in names:
            wrapped = LoraLinear(model.get_submodule(name), config.rank, config.alpha)
            replace_module(model, name, wrapped)
            params += [wrapped.lora_A, wrapped.lora_B]
        return params
