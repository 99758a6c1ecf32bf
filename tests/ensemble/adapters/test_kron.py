"""`kron` against He et al. 2022 (KAdaptation), the Kronecker sum of its method section:

    dW = (alpha / r) sum_{i=1..n} A_i (x) B_i,   B_i = u_i v_i^T,

with A_i (n x n) shared by all blocks (one set for the queries, one for the values), B_i of
rank r per block, applied to the query and value parts of each fused qkv projection. The
reference update is computed here with `torch.kron`, term by term, from the raw factors.
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from zooens.ensemble.adapters import inject, make_config
from zooens.errors import ConfigError

RES = 32
N, R, ALPHA = 8, 2, 0.5  # test_vit is 64 wide: A_i 8 x 8, B_i 8 x 8 of rank 2; alpha the default


def _vit(arch: str = "test_vit") -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(arch, num_classes=0, pretrained=False, img_size=RES).eval()


def _inject(model: nn.Module, **options) -> list[nn.Parameter]:
    return inject(model, "kron", make_config("kron", {"n_kron": N, "rank": R, "alpha": ALPHA} | options))


def _reference_delta(a: torch.Tensor, u: torch.Tensor, v: torch.Tensor, alpha: float, r: int) -> torch.Tensor:
    """(alpha / r) sum_i A_i (x) (u_i v_i^T), written from the paper's equations with torch.kron."""
    total = torch.zeros(a.shape[1] * u.shape[1], a.shape[2] * v.shape[1], dtype=torch.float64)
    for i in range(a.shape[0]):
        b_i = u[i].double() @ v[i].double().T
        total += torch.kron(a[i].double(), b_i)
    return total * (alpha / r)


def _randomise(params: list[nn.Parameter], seed: int = 5) -> None:
    """Move every factor off its initial value, so the checks hold for a trained adapter too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * 0.3)


def test_update_is_the_shared_kronecker_sum_of_the_paper():
    base = _vit()
    model = _vit()
    params = _inject(model)
    _randomise(params)
    blocks = list(model.blocks)
    d = blocks[0].attn.qkv.qkv.in_features
    x = torch.randn(2, 5, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a_q, a_v = model.kron_shared.kron_a_q, model.kron_shared.kron_a_v
    assert a_q.shape == a_v.shape == (N, N, N)
    for block, base_block in zip(blocks, base.blocks, strict=False):
        wrapped = block.attn.qkv
        # the slow weights are the same tensors in every block, the fast weights are each block's own
        assert wrapped.shared[0].kron_a_q is a_q and wrapped.shared[0].kron_a_v is a_v
        dq = _reference_delta(a_q.detach(), wrapped.kron_uq.detach(), wrapped.kron_vq.detach(), ALPHA, R)
        dv = _reference_delta(a_v.detach(), wrapped.kron_uv.detach(), wrapped.kron_vv.detach(), ALPHA, R)
        assert dq.shape == dv.shape == (d, d)
        # the layer computes W x + b with W's query rows plus dq and value rows plus dv; keys unchanged
        w = base_block.attn.qkv.weight.detach().double()
        b = base_block.attn.qkv.bias.detach().double()
        expected = x @ (w + torch.cat([dq, torch.zeros_like(dq), dv])).T + b
        with torch.no_grad():
            out = wrapped(x.float())
        torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-5)
    # the fast weights are distinct tensors in every block
    assert len({id(b.attn.qkv.kron_uq) for b in blocks}) == len(blocks)


def test_each_fast_weight_has_the_stated_rank_and_shape():
    model = _vit()
    params = _inject(model)
    _randomise(params)
    p = model.blocks[0].attn.qkv.qkv.in_features // N
    for block in model.blocks:
        wrapped = block.attn.qkv
        for u, v in ((wrapped.kron_uq, wrapped.kron_vq), (wrapped.kron_uv, wrapped.kron_vv)):
            assert u.shape == v.shape == (N, p, R)
            for i in range(N):
                assert torch.linalg.matrix_rank(u[i].detach().double() @ v[i].detach().double().T).item() == R


def test_parameter_count_follows_the_paper():
    """2 n^3 shared (queries and values) + per block 2 projections x n r (k/n + d/n)."""
    model = _vit()
    params = _inject(model)
    d, depth = model.embed_dim, len(model.blocks)
    assert sum(x.numel() for x in params) == 2 * N**3 + depth * 2 * N * R * (d // N + d // N)
    named = dict(model.named_parameters())
    assert sum(1 for n in named if n.startswith("kron_shared.")) == 2  # registered once, not per block


def test_vit_base_parameter_count_with_the_defaults():
    """ViT-B/16 (768 wide, 12 blocks), n = 32, r = 1: 2 x 32^3 + 12 x 2 x 32 x (24 + 24) = 102,400."""
    model = timm.create_model("vit_base_patch16_224", num_classes=0, pretrained=False)
    params = inject(model, "kron", make_config("kron", {}))
    assert sum(x.numel() for x in params) == 2 * 32**3 + 12 * 2 * 32 * (24 + 24) == 102_400


def test_zero_at_init_and_every_factor_has_a_gradient_at_step_one():
    base = _vit()
    model = _vit()
    _inject(model)
    x = torch.randn(4, 3, RES, RES, generator=torch.Generator().manual_seed(1))
    for block in model.blocks:
        wrapped = block.attn.qkv
        for a, u, v in (
            (model.kron_shared.kron_a_q, wrapped.kron_uq, wrapped.kron_vq),
            (model.kron_shared.kron_a_v, wrapped.kron_uv, wrapped.kron_vv),
        ):
            ref = _reference_delta(a.detach(), u.detach(), v.detach(), ALPHA, R)
            assert ref.abs().max().item() < 1e-6  # dW = 0: the model starts unchanged
            assert torch.count_nonzero(wrapped.delta_q()) == torch.count_nonzero(wrapped.delta_v()) == 0
            # ... although no factor is zero (the released code's zero B factors would never train)
            for factor in (a, u, v):
                assert (factor.detach().flatten(1).norm(dim=1) > 0).all()
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x), rtol=0, atol=1e-5)

    features = model(x)
    head = torch.randn(features.shape[1], 3, generator=torch.Generator().manual_seed(4))
    loss = nn.functional.cross_entropy(features @ head, torch.tensor([0, 1, 2, 0]))
    loss.backward()
    for name, p in model.named_parameters():
        if "kron_" not in name:
            assert p.grad is None, name
            continue
        # every A_i, and every u_i and v_i of every block, moves at the first step
        per_term = p.grad.flatten(1).norm(dim=1)
        assert (per_term > 0).all(), f"{name}: some Kronecker terms have no gradient at step one"


def test_kron_trains_a_tiny_vit():
    """Only the Kronecker factors train (fixed random head): the loss falls in a short SGD run at the sweep's lr."""
    model = _vit()
    params = _inject(model)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 3, RES, RES, generator=g)
    y = torch.arange(16) % 4
    with torch.no_grad():
        features = model(x)
        head = torch.randn(features.shape[1], 4, generator=g) / features.shape[1] ** 0.5
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    losses = []
    for _ in range(20):
        loss = nn.functional.cross_entropy(model(x) @ head, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize(
    "options, message",
    [
        ({"n_kron": 3}, "even"),
        ({"n_kron": 0}, "even"),
        ({"rank": 0}, "rank"),
        ({"alpha": -1.0}, "alpha"),
        ({"a_size": 4}, "Unknown kron option"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        make_config("kron", options)


def test_n_kron_must_divide_the_width():
    with pytest.raises(ConfigError, match="must divide the model width 64"):
        inject(_vit(), "kron", make_config("kron", {"n_kron": 6}))
