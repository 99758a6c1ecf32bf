"""LoRA as Hu et al. define it: W_q and W_v of every attention layer by default, the fused qkv masked to its query
and value rows (each checked against the update written out from the paper's equation h = W0 x + (alpha/r) B A x),
the all-linear variant as a named option, CNNs falling back to it, and artifacts saved before targets existed
loading as what they were."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from zooens.ensemble.adapters import inject, make_config
from zooens.ensemble.adapters.lora import LoraConfig, LoraLinear, LoraQKV
from zooens.errors import ConfigError


def _vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", num_classes=0, img_size=64).eval()


def test_the_default_adapts_query_and_value_rows_only_as_the_paper_writes_it():
    model = _vit()
    config = make_config("lora", {"rank": 2})
    assert config.targets == "auto" and config.alpha == 8.0
    params = inject(model, "lora", config)
    wrapped = {n: m for n, m in model.named_modules() if isinstance(m, (LoraQKV, LoraLinear))}
    assert wrapped and all(isinstance(m, LoraQKV) and n.endswith("attn.qkv") for n, m in wrapped.items())
    layer = next(iter(wrapped.values()))
    dim, d_in = layer.dim, layer.base.weight.shape[1]
    assert sum(p.numel() for p in params) == len(wrapped) * 2 * (2 * d_in + 2 * dim)

    gen = torch.Generator().manual_seed(1)
    for p in (layer.lora_B_q, layer.lora_B_v):  # B starts at zero: give it values to see the update
        p.data = torch.randn(p.shape, generator=gen)
    x = torch.randn(5, d_in, generator=gen)
    w0, b0 = layer.base.weight.detach(), layer.base.bias.detach()
    scale = config.alpha / 2  # alpha / r
    dq = scale * layer.lora_B_q.detach() @ layer.lora_A_q.detach()
    dv = scale * layer.lora_B_v.detach() @ layer.lora_A_v.detach()
    expected = x @ (w0 + torch.cat([dq, torch.zeros(dim, d_in), dv])).T + b0
    with torch.no_grad():
        out = layer(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, dim : 2 * dim], (x @ w0.T + b0)[:, dim : 2 * dim])  # W_k untouched


def test_all_linear_is_a_named_option_and_a_cnn_falls_back_to_it():
    everything = _vit()
    inject(everything, "lora", make_config("lora", {"rank": 2, "targets": "all-linear"}))
    kinds = {type(m) for m in everything.modules()}
    assert LoraLinear in kinds and LoraQKV not in kinds
    assert isinstance(everything.get_submodule("blocks.0.mlp.fc1"), LoraLinear)

    torch.manual_seed(0)
    cnn = timm.create_model("test_efficientnet", num_classes=0).eval()
    inject(cnn, "lora", make_config("lora", {"rank": 2}))  # auto: no attention, so every linear and 1x1 conv
    assert any(isinstance(m, LoraLinear) for m in cnn.modules())
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="all-linear"):
        inject(timm.create_model("test_efficientnet", num_classes=0), "lora", make_config("lora", {"targets": "qv"}))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"targets": "q"}, "targets"),
        ({"alpha": float("nan")}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"rank": 0}, "rank"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        make_config("lora", options)


def test_a_save_from_before_targets_loads_as_every_linear_at_its_scale():
    old = {"rank": 4, "alpha": 8.0, "include_conv1x1": True, "target": ""}
    config = LoraConfig.from_saved(old)
    assert config.targets == "all-linear" and config.alpha / config.rank == 2
    assert LoraConfig.from_saved(make_config("lora", {}).to_dict()).targets == "auto"
