"""`kron`: KAdaptation (He et al. 2022, "Parameter-efficient Model Adaptation for Vision Transformers").

The paper (Section "Kronecker Adaptation", arXiv 2203.16329) writes the update of a weight
W in R^{k x d} as a sum of n Kronecker products, with low-rank B_i:

    dW = sum_{i=1..n} A_i (x) B_i,      A_i in R^{n x n},  B_i in R^{(k/n) x (d/n)},
    B_i = u_i v_i^T,                   u_i in R^{(k/n) x r},  v_i in R^{(d/n) x r},

with the A_i "slow weights" shared across layers (common knowledge) and the B_i "fast
weights" owned by each layer, of rank r. It adapts the query and value projections of every
attention block (as LoRA does); keys, MLPs and embeddings stay frozen.

What we build, and where it departs from the paper or from the authors' code (eric-ai-lab/PEViT,
`vision_benchmark/evaluation/model.py`):

- n and r default to the authors' released configuration: n = 32 Kronecker products
  (`phm_dim = 32`) and rank r = 1 (`phm_rank = 1`). n must divide the width of the model.
- The A_i are full n x n matrices, as the paper defines them (the released code factorises
  each A_i into rank one, which the paper does not describe). There is one set of A_i for the
  query projections and one for the value projections, each shared by all blocks, as in the
  released code (`phm_rule1` for q, `phm_rule2` for v).
- Scaling: the update is multiplied by alpha / r, LoRA's convention that the released code also
  borrows (it uses alpha / r * 5 with alpha = 128 and r = 4, i.e. 160, on factors that start
  at zero). With our initialisation (every A_i, u_i, v_i of spectral norm about one) the size of
  a step grows as alpha^2; alpha = 0.5 was measured on timm's test_vit and vit_base_patch16_224
  (random weights, one SGD step at lr 0.01 on a cross-entropy loss) to change the query weights
  by 0.08-0.17% of their norm, against 0.05-0.07% for a full fine-tuning step at the same rate:
  the adapter sweep's rates (0.01, 0.05) move it, without the blow-up that alpha = 8 gives
  (22-44% per step).
- Initialisation: the paper does not give one. The released code initialises both factors of
  every B_i to zero, so dW and every gradient of A, u and v are zero forever: its Kronecker
  part never trains (only an extra bias does). LoRA's choice (one factor zero) starts at
  dW = 0 but leaves the other factors without gradient at step one. We use an antithetic
  initialisation instead: the n terms come in pairs (i, i + n/2) with A_{i+n/2} = A_i,
  u_{i+n/2} = u_i and v_{i+n/2} = -v_i, so the Kronecker sum is exactly zero (the model starts
  unchanged) while every A_i, u_i and v_i is non-zero and receives a non-zero gradient at the
  first step. n must therefore be even. To first order a step from this point moves dW in the
  same direction as a step on a single unpaired term, with twice the size.
- The released code also adds a trainable bias per block and a dropout of 0.5 on the update;
  the paper describes neither, and we leave both out.

Works on timm ViTs whose attention has a fused `qkv` linear (q, k, v stacked on the output axis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from zooens.ensemble.adapters.base import AdapterConfig, AdapterMethod, register_adapter, replace_module
from zooens.errors import ConfigError

__all__ = ["KronConfig", "KronQKV", "Kron", "kron_sum"]


MAX_RANK = 1024
"""Largest rank of each B_i: B_i is (width / n) x (width / n), so a larger rank could only be recorded, never used."""


@dataclass
class KronConfig(AdapterConfig):
    n_kron: int = field(
        default=32,
        metadata={
            "help": "n, the number of Kronecker products; each shared A_i is n x n and n must divide the model width "
            "(the paper's n; the authors' code uses 32). Even, for the antithetic initialisation."
        },
    )
    rank: int = field(
        default=1, metadata={"help": "r, the rank of each B_i = u_i v_i^T (the paper's r; the authors' code uses 1)."}
    )
    alpha: float = field(
        default=0.5,
        metadata={
            "help": "Scale: the update is multiplied by alpha / r (LoRA's convention; the authors' code uses 160 "
            "with all-zero factors). 0.5 makes an SGD step move the adapted weights about as far as a "
            "full fine-tuning step at the same learning rate."
        },
    )

    def validate(self) -> None:
        if self.n_kron < 2 or self.n_kron % 2:
            raise ConfigError(
                f"kron n_kron must be an even number of at least 2 (terms start in cancelling pairs), "
                f"got {self.n_kron}; e.g. 32, which must also divide the model width."
            )
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or not 1 <= self.rank <= MAX_RANK:
            raise ConfigError(
                f"kron rank must be an integer from 1 to {MAX_RANK}, got {self.rank!r:.40}; the paper uses 1."
            )
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ConfigError(f"kron alpha must be a positive number, got {self.alpha}; e.g. 0.5 (the default).")


def kron_sum(a: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """sum_i A_i (x) (u_i v_i^T) as one (n*p, n*q) matrix.

    a : (n, n, n) stacked A_i; u : (n, p, r); v : (n, q, r). The Kronecker product's entry
    [(alpha, c), (beta, t)] (row alpha*p + c, column beta*q + t) is A[alpha, beta] * B[c, t],
    the layout of `torch.kron`.
    """
    b = u @ v.transpose(1, 2)  # (n, p, q): B_i
    n, p, q = b.shape
    shape = (a.shape[1] * p, a.shape[2] * q)
    if n % 2:
        return torch.einsum("iab,ict->acbt", a, b).reshape(shape)
    # the two halves summed separately: at the antithetic initialisation the second half is the exact
    # negative of the first (same operations on negated inputs), so the update is exactly zero
    half = n // 2
    first = torch.einsum("iab,ict->acbt", a[:half], b[:half])
    second = torch.einsum("iab,ict->acbt", a[half:], b[half:])
    return (first + second).reshape(shape)


def _antithetic(first: torch.Tensor, negate: bool) -> torch.Tensor:
    """Stack `first` (n/2, ...) with its copy (negated when `negate`) into (n, ...)."""
    return torch.cat([first, -first if negate else first.clone()], dim=0)


class KronQKV(nn.Module):
    """A fused qkv linear plus KAdaptation updates of its query and value parts.

    The shared A_i of the query and of the value live on the model (`kron_shared`); this
    wrapper holds the per-block factors u (k/n x r) and v (d/n x r) of each B_i.
    """

    def __init__(self, qkv: nn.Linear, shared: _SharedA, config: KronConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.qkv = qkv
        self.shared = [shared]  # a list: registered once on the model, not again under every block
        d = qkv.in_features
        n, r = config.n_kron, config.rank
        if qkv.out_features != 3 * d:
            raise ConfigError(
                f"kron needs a fused qkv linear of width 3*{d}, got {qkv.out_features}; "
                "use lora for attention layers with separate projections."
            )
        if d % n:
            raise ConfigError(
                f"kron n_kron={n} must divide the model width {d}; choose a divisor such as "
                f"{max(k for k in range(2, n + 1, 2) if d % k == 0) if d % 2 == 0 else 'none'}."
            )
        self.scale = config.alpha / r
        p = q = d // n
        half = n // 2

        def factor(rows: int, negate: bool) -> nn.Parameter:
            # u_i, v_i ~ N(0, 1/rows): each B_i = u_i v_i^T starts with a spectral norm of order one
            first = torch.randn(half, rows, r, generator=generator) / math.sqrt(rows)
            return nn.Parameter(_antithetic(first, negate))

        self.kron_uq, self.kron_vq = factor(p, False), factor(q, True)
        self.kron_uv, self.kron_vv = factor(p, False), factor(q, True)

    def delta_q(self) -> torch.Tensor:
        """The query update (alpha / r) sum_i A^q_i (x) u^q_i v^q_i^T, shape (d, d) as `nn.Linear` weights."""
        return kron_sum(self.shared[0].kron_a_q, self.kron_uq, self.kron_vq) * self.scale

    def delta_v(self) -> torch.Tensor:
        """The value update (alpha / r) sum_i A^v_i (x) u^v_i v^v_i^T, shape (d, d)."""
        return kron_sum(self.shared[0].kron_a_v, self.kron_uv, self.kron_vv) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.qkv(x)
        dq = F.linear(x, self.delta_q())
        dv = F.linear(x, self.delta_v())
        return out + torch.cat([dq, torch.zeros_like(dq), dv], dim=-1)


class _SharedA(nn.Module):
    """The slow weights: A_i (n x n) of the query and of the value updates, shared by all blocks."""

    def __init__(self, config: KronConfig, generator: torch.Generator) -> None:
        super().__init__()
        n = config.n_kron

        def slow() -> nn.Parameter:
            # entries N(0, 1/n): each A_i starts with a spectral norm of order one
            return nn.Parameter(_antithetic(torch.randn(n // 2, n, n, generator=generator) / math.sqrt(n), False))

        self.kron_a_q = slow()
        self.kron_a_v = slow()


@register_adapter("kron")
class Kron(AdapterMethod):
    config_cls = KronConfig

    def inject(self, model: nn.Module, config: KronConfig) -> list[nn.Parameter]:
        names = [n for n, m in model.named_modules() if n.endswith("attn.qkv") and isinstance(m, nn.Linear)]
        if not names:
            raise ConfigError(
                "kron adapts Vision Transformers: this model has no attention `qkv` layer; "
                "use patch or lora for other architectures."
            )
        # a fixed generator: the initial factors are the same on every run and every worker
        generator = torch.Generator().manual_seed(0)
        shared = _SharedA(config, generator)
        model.add_module("kron_shared", shared)
        params = [shared.kron_a_q, shared.kron_a_v]
        for name in names:
            wrapped = KronQKV(model.get_submodule(name), shared, config, generator)
            replace_module(model, name, wrapped)
            params += [wrapped.kron_uq, wrapped.kron_vq, wrapped.kron_uv, wrapped.kron_vv]
        device = next(iter(model.parameters())).device
        for p in params:
            p.data = p.data.to(device)
        return params
