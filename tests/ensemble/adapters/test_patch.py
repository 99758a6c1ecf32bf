"""`patch` against Mudrakarta et al. 2018: exactly the normalisation scales and biases train (the
scale-and-bias patch), the depthwise patch is an option, and BitFit's biases are a separate opt-in.

The expected parameter names are written out per architecture from the paper's definition, not
derived from the code under test.
"""

from __future__ import annotations

import re

import pytest
import timm
import torch
from torch import nn

from zooens.ensemble.adapters import inject, make_config
from zooens.errors import ConfigError

RES = 32

# the scale-and-bias patch: every normalisation layer's gamma and beta, nothing else
NORM_PARAMS = {
    # timm's test_vit: LayerNorms before attention and MLP in each block, and the final norm
    "test_vit": r"^(blocks\.\d+\.norm[12]|norm)\.(weight|bias)$",
    # test_resnet: deep stem (conv1.1, conv1.4 are its batch norms), stem bn1, block bn1..bn3, downsample norms
    "test_resnet": r"^(conv1\.[14]|bn1|layer\d\.\d+\.bn\d|layer\d\.\d+\.downsample\.2)\.(weight|bias)$",
    # test_efficientnet: the stem's bn1, each block's bn1..bn3, the head's bn2
    "test_efficientnet": r"^(bn[12]|blocks\.\d+\.\d+\.bn\d)\.(weight|bias)$",
}


def _model(arch: str) -> nn.Module:
    torch.manual_seed(0)
    kwargs = {"img_size": RES} if "vit" in arch else {}
    return timm.create_model(arch, num_classes=0, pretrained=False, **kwargs).eval()


def _trainable(arch: str, options: dict) -> tuple[nn.Module, set[str]]:
    model = _model(arch)
    params = inject(model, "patch", make_config("patch", options))
    ids = {id(p) for p in params}
    names = {n for n, p in model.named_parameters() if id(p) in ids}
    assert names == {n for n, p in model.named_parameters() if p.requires_grad}
    return model, names


@pytest.mark.parametrize("arch", sorted(NORM_PARAMS))
def test_default_patch_is_exactly_the_norm_scales_and_biases(arch):
    model, names = _trainable(arch, {})
    expected = {n for n, _ in model.named_parameters() if re.match(NORM_PARAMS[arch], n)}
    assert expected and names == expected


def test_depthwise_option_adds_exactly_the_depthwise_convolutions():
    _, base = _trainable("test_efficientnet", {})
    _, with_dw = _trainable("test_efficientnet", {"depthwise": True})
    # test_efficientnet has two inverted-residual blocks with a depthwise 3x3 (no bias: a norm follows)
    assert with_dw - base == {"blocks.3.0.conv_dw.weight", "blocks.4.0.conv_dw.weight"}
    assert base <= with_dw
    # a network with no depthwise convolution gains nothing
    assert _trainable("test_resnet", {"depthwise": True})[1] == _trainable("test_resnet", {})[1]


def test_biases_option_is_bitfit_and_off_by_default():
    model, base = _trainable("test_vit", {})
    assert not any(n.endswith(("qkv.bias", "proj.bias", "fc1.bias", "fc2.bias")) for n in base)
    _, with_biases = _trainable("test_vit", {"biases": True})
    linear_conv_biases = {
        n
        for n, _ in model.named_parameters()
        if re.match(r"^(patch_embed\.proj|blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12]))\.bias$", n)
    }
    assert with_biases - base == linear_conv_biases
    # on the CNN the squeeze-excitation convolutions are the only biased layers besides the norms
    _, eff = _trainable("test_efficientnet", {"biases": True})
    assert eff - _trainable("test_efficientnet", {})[1] == {
        "blocks.3.0.se.conv_reduce.bias",
        "blocks.3.0.se.conv_expand.bias",
        "blocks.4.0.se.conv_reduce.bias",
        "blocks.4.0.se.conv_expand.bias",
    }


def test_old_option_names_are_refused_with_the_new_ones_listed():
    with pytest.raises(ConfigError, match="biases"):
        make_config("patch", {"include_biases": True})


def test_patch_refuses_a_model_without_norm_layers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())
    with pytest.raises(ConfigError, match="no normalisation layer"):
        inject(model, "patch", make_config("patch", {}))


@pytest.mark.parametrize("arch, lr", [("test_resnet", 0.01), ("test_vit", 0.1)])
def test_patch_trains(arch, lr):
    """With a fixed random head and norm statistics frozen, training only the patch lowers the loss.

    The head's scale follows the (random) features' spread, so the step size means the same on both networks.
    """
    model = _model(arch)
    params = inject(model, "patch", make_config("patch", {}))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 3, RES, RES, generator=g)
    y = torch.arange(16) % 4
    with torch.no_grad():
        features = model(x)
    head = nn.Linear(features.shape[1], 4)
    with torch.no_grad():
        head.weight.copy_(torch.randn(4, features.shape[1], generator=g) * 0.1 / features.std())
        head.bias.zero_()
    head.requires_grad_(False)
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    losses = []
    for _ in range(25):
        loss = nn.functional.cross_entropy(head(model(x)), y)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0], losses


def test_patch_parameter_counts_on_standard_networks():
    """Reported in the strategy docs: ViT-B/16 38,400 (LayerNorms), ResNet-50 53,120 (batch norms), no head."""
    counts = {}
    for arch in ("vit_base_patch16_224", "resnet50"):
        model = timm.create_model(arch, num_classes=0, pretrained=False)
        counts[arch] = sum(p.numel() for p in inject(model, "patch", make_config("patch", {})))
    # ViT-B/16: 12 blocks x 2 LayerNorms + the final one, each 2 x 768
    assert counts["vit_base_patch16_224"] == (12 * 2 + 1) * 2 * 768 == 38_400
    # ResNet-50: 2 x the channels of every batch norm
    assert counts["resnet50"] == 53_120
