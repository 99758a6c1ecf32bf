"""`lora`: low-rank updates W + (alpha / r) B A of chosen weight matrices (Hu et al. 2021, "LoRA: Low-Rank
Adaptation of Large Language Models"); A is Kaiming-uniform, B starts at 0, so the model is unchanged at init.

Which matrices (`targets`):

- `qv` (Hu et al.'s choice, section 7.1: adapting W_q and W_v gives the best results for a fixed budget of
  trainable parameters): the query and value projections of every attention layer. timm fuses them with the
  key projection into one `qkv` linear (output rows [q; k; v]); its update is the low-rank `B_q A_q` on the
  query rows and `B_v A_v` on the value rows, zero on the key rows: the fused layer is masked, never split,
  so checkpoints keep their layout. Separate `q_proj`/`v_proj` (or `query`/`value`) linears are adapted as
  they are.
- `all-linear`: every linear layer (fused qkv, attention output, MLP) and, with `include_conv1x1`, every
  1x1 convolution: more parameters, and the only choice for a CNN, which has no attention.
- `auto` (the default): `qv` where the model has attention layers, else `all-linear` (a CNN: documented
  deviation, as the paper adapts Transformers only).

`alpha` is a constant (8), as in Hu et al., who set alpha once (to the first r they tried) and do not tune it
when r changes, so the scale alpha / r shrinks as the rank grows; at the default r = 4 it is 2. `target` keeps
only layers whose name contains that text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zooens.ensemble.adapters.base import AdapterConfig, AdapterMethod, register_adapter, replace_module
from zooens.errors import ConfigError

TARGETS = ("auto", "qv", "all-linear")
MAX_RANK = 1024
"""Largest rank `rank` may ask for. Each update is capped at its layer's width (r = min(rank, in, out)), so a
larger rank could only be recorded, never used; the widest zoo models have 1,024 to 1,664 features."""

_Q_NAMES = ("q_proj", "query", "q")
_V_NAMES = ("v_proj", "value", "v")


@dataclass
class LoraConfig(AdapterConfig):
    rank: int = field(default=4, metadata={"help": "Rank r of each update."})
    alpha: float = field(default=8.0, metadata={"help": "Scale: the update is multiplied by alpha / r."})
    targets: str = field(
        default="auto",
        metadata={"help": "'qv' (W_q and W_v, Hu et al.), 'all-linear', or 'auto' (qv with attention, else all)."},
    )
    include_conv1x1: bool = field(
        default=True, metadata={"help": "With all-linear: also adapt 1x1 convolutions (CNNs have few linears)."}
    )
    target: str = field(default="", metadata={"help": "Only layers whose name contains this text (empty: all)."})

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> LoraConfig:
        """A save without `targets` predates them: it adapted every linear layer (and 1x1 convolution)."""
        return cls(**{"targets": "all-linear", **saved})

    def validate(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or not 1 <= self.rank <= MAX_RANK:
            raise ConfigError(
                f"LoRA rank must be an integer from 1 to {MAX_RANK}, got {self.rank!r:.40}; each update is capped at "
                "its layer's width anyway, and Hu et al. find ranks 1 to 8 enough (the default is 4)."
            )
        if not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ConfigError(f"LoRA alpha must be a finite positive number, got {self.alpha!r}.")
        if self.targets not in TARGETS:
            raise ConfigError(f"LoRA targets must be one of {', '.join(TARGETS)}, got {self.targets!r}.")


def _lora_pair(rank: int, in_f: int, out_f: int) -> tuple[nn.Parameter, nn.Parameter]:
    a = nn.Parameter(torch.empty(rank, in_f))
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))
    return a, nn.Parameter(torch.zeros(out_f, rank))


class LoraLinear(nn.Module):
    """A linear layer (or 1x1 convolution) plus a low-rank update of its whole weight."""

    def __init__(self, base: nn.Module, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        out_f, in_f = base.weight.shape[:2]
        r = min(rank, in_f, out_f)
        self.lora_A, self.lora_B = _lora_pair(r, in_f, out_f)
        self.scale = alpha / r

    def delta(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if isinstance(self.base, nn.Conv2d):
            return out + F.conv2d(x, self.delta()[:, :, None, None], stride=self.base.stride)
        return out + F.linear(x, self.delta())


class LoraQKV(nn.Module):
    """A fused `qkv` linear (output rows [q; k; v], each `dim` wide) whose query and value rows get low-rank
    updates (B_q A_q, B_v A_v); the key rows are left as they are (a zero block in the update)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        out_f, in_f = base.weight.shape
        if out_f % 3:
            raise ConfigError(f"A fused qkv layer has 3 x dim outputs; this one has {out_f}.")
        self.base = base
        self.dim = out_f // 3
        r = min(rank, in_f, self.dim)
        self.lora_A_q, self.lora_B_q = _lora_pair(r, in_f, self.dim)
        self.lora_A_v, self.lora_B_v = _lora_pair(r, in_f, self.dim)
        self.scale = alpha / r

    def delta(self) -> torch.Tensor:
        q = self.lora_B_q @ self.lora_A_q
        v = self.lora_B_v @ self.lora_A_v
        return torch.cat([q, torch.zeros_like(q), v]) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(x, self.delta())


def _is_conv1x1(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1 and m.padding in ((0, 0), "valid")


def _qv_targets(model: nn.Module, config: LoraConfig) -> list[tuple[str, str]]:
    """(name, "qkv" | "linear") of the query/value projections of every attention layer."""
    out: list[tuple[str, str]] = []
    for name, m in model.named_modules():
        if config.target and config.target not in name or not isinstance(m, nn.Linear):
            continue
        leaf = name.rsplit(".", 1)[-1]
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        in_attention = "attn" in parent or "attention" in parent
        if leaf == "qkv" and in_attention:
            out.append((name, "qkv"))
        elif in_attention and (leaf in _Q_NAMES or leaf in _V_NAMES):
            out.append((name, "linear"))
    return out


def _all_targets(model: nn.Module, config: LoraConfig) -> list[tuple[str, str]]:
    return [
        (name, "linear")
        for name, m in model.named_modules()
        if not (config.target and config.target not in name)
        and (isinstance(m, nn.Linear) or (config.include_conv1x1 and _is_conv1x1(m)))
    ]


def lora_targets(model: nn.Module, config: LoraConfig) -> list[tuple[str, str]]:
    """The layers `config.targets` adapts, as (module name, kind): kind "qkv" is a fused projection whose
    query and value rows are adapted, "linear" a layer adapted whole."""
    if config.targets == "all-linear":
        return _all_targets(model, config)
    qv = _qv_targets(model, config)
    if config.targets == "qv" or qv:
        return qv
    return _all_targets(model, config)  # auto on a model without attention


@register_adapter("lora")
class Lora(AdapterMethod):
    config_cls = LoraConfig

    def inject(self, model: nn.Module, config: LoraConfig) -> list[nn.Parameter]:
        targets = lora_targets(model, config)
        if not targets:
            what = "attention query/value projection" if config.targets == "qv" else "linear layer or 1x1 convolution"
            raise ConfigError(
                f"LoRA found no {what} to adapt; check `target`"
                + (", or use targets 'all-linear' for a model without attention." if config.targets == "qv" else ".")
            )
        params: list[nn.Parameter] = []
        for name, kind in targets:
            base = model.get_submodule(name)
            wrapped: nn.Module
            if kind == "qkv":
                wrapped = LoraQKV(base, config.rank, float(config.alpha))
                params += [wrapped.lora_A_q, wrapped.lora_B_q, wrapped.lora_A_v, wrapped.lora_B_v]
            else:
                wrapped = LoraLinear(base, config.rank, float(config.alpha))
                params += [wrapped.lora_A, wrapped.lora_B]
            replace_module(model, name, wrapped)
        return params
