"""`kron`: Kronecker adaptation of ViT attention (KAdaptation, He et al. 2022).

The updates of the query and value projections of every block are
    dW_q = sum_i A_i (x) B_i^q,   dW_v = sum_i A_i (x) B_i^v,
with A_i (a x a) shared by all blocks and B_i = u_i v_i^T of rank r per block and projection.
v_i starts at zero, so the model starts unchanged. Our reading of "the update of the value
projection uses the value weights": the value update has its own low-rank factors (not the
query's) and is added to the value weights W_v only; keys are not adapted. Works on timm
ViTs whose attention has a fused `qkv` linear.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from zooens.ensemble.adapters.base import AdapterConfig, AdapterMethod, register_adapter, replace_module
from zooens.errors import ConfigError


@dataclass
class KronConfig(AdapterConfig):
    n_kron: int = field(default=4, metadata={"help": "Number of Kronecker terms (shared A_i)."})
    a_size: int = field(default=4, metadata={"help": "Size a of the shared A_i; must divide the embedding width."})
    rank: int = field(default=1, metadata={"help": "Rank of each B_i = u_i v_i^T."})

    def validate(self) -> None:
        if min(self.n_kron, self.a_size, self.rank) < 1:
            raise ConfigError("n_kron, a_size and rank must all be at least 1.")


class KronQKV(nn.Module):
    def __init__(self, qkv: nn.Linear, shared_a: nn.Parameter, config: KronConfig) -> None:
        super().__init__()
        self.qkv = qkv
        self.shared_a = [shared_a]  # a list: shared, so not registered again under every block
        d = qkv.in_features
        if qkv.out_features != 3 * d or d % config.a_size:
            raise ConfigError(f"kron needs a fused qkv of width 3*{d} with {config.a_size} dividing {d}.")
        b = d // config.a_size
        n, r = config.n_kron, config.rank
        self.kron_uq = nn.Parameter(torch.randn(n, b, r) / b**0.5)
        self.kron_vq = nn.Parameter(torch.zeros(n, r, b))
        self.kron_uv = nn.Parameter(torch.randn(n, b, r) / b**0.5)
        self.kron_vv = nn.Parameter(torch.zeros(n, r, b))

    @staticmethod
    def _delta(a: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        bmat = u @ v  # (n, b, b)
        return sum(torch.kron(a[i], bmat[i]) for i in range(a.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.qkv(x)
        a = self.shared_a[0]
        d = self.qkv.in_features
        dq = F.linear(x, self._delta(a, self.kron_uq, self.kron_vq))
        dv = F.linear(x, self._delta(a, self.kron_uv, self.kron_vv))
        zeros = torch.zeros_like(dq)
        return out + torch.cat([dq, zeros, dv], dim=-1)


class _SharedA(nn.Module):
    def __init__(self, config: KronConfig) -> None:
        super().__init__()
        self.kron_a = nn.Parameter(torch.randn(config.n_kron, config.a_size, config.a_size) / config.a_size)


@register_adapter("kron")
class Kron(AdapterMethod):
    config_cls = KronConfig

    def inject(self, model: nn.Module, config: KronConfig) -> list[nn.Parameter]:
        names = [n for n, m in model.named_modules() if n.endswith("attn.qkv") and isinstance(m, nn.Linear)]
        if not names:
            raise ConfigError("kron adapts Vision Transformers: this model has no attention `qkv` layer.")
        shared = _SharedA(config)
        model.add_module("kron_shared", shared)
        params = [shared.kron_a]
        for name in names:
            wrapped = KronQKV(model.get_submodule(name), shared.kron_a, config)
            replace_module(model, name, wrapped)
            params += [wrapped.kron_uq, wrapped.kron_vq, wrapped.kron_uv, wrapped.kron_vv]
        return params
