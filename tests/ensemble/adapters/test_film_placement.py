"""FiT's FiLM placement: one layer per block before its activation, the identity at initialisation,
FiT's parameter count on ResNet-50, and a clear refusal for families FiT does not define."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from zooens.ensemble.adapters import inject, make_config
from zooens.ensemble.adapters.film import FiLMAct, FiLMNorm, film_sites
from zooens.errors import ConfigError


def _model(arch: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(arch, num_classes=0, pretrained=False, **kwargs).eval()


def _films(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (FiLMNorm, FiLMAct))]


@pytest.mark.parametrize(
    "arch, kwargs, size",
    [
        ("test_efficientnet", {}, 64),
        ("test_resnet", {}, 64),
        ("test_vit", {"img_size": 64}, 64),
        ("resnet18", {}, 64),
        ("mobilenetv3_small_050", {}, 64),
        ("resnetv2_18", {}, 64),
    ],
)
def test_film_is_the_identity_at_initialisation(arch, kwargs, size):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    base = _model(arch, **kwargs)
    with torch.no_grad():
        before = base(x)
    params = inject(base, "film", make_config("film", {}))
    assert params and all(p.requires_grad for p in params)
    assert not any(p.requires_grad for n, p in base.named_parameters() if "film" not in n)
    with torch.no_grad():
        torch.testing.assert_close(base(x), before, rtol=0, atol=0)


def test_resnet50_has_fits_17_layers_and_11648_parameters():
    """FiT's BiT-M-R50x1: 16 bottlenecks (3776 mid channels in all) plus the final 2048-wide map."""
    model = _model("resnet50")
    sites = film_sites(model)
    assert len(sites) == 17
    assert [s.path for s in sites[:3]] == ["layer1.0.bn2", "layer1.1.bn2", "layer1.2.bn2"]
    assert sites[-1].path == "layer4.2.act3" and sites[-1].kind == "act" and sites[-1].channels == 2048
    params = inject(model, "film", make_config("film", {}))
    assert sum(p.numel() for p in params) == 11_648


def test_bit_resnet50_is_fits_own_backbone():
    """timm's BiT (GroupNormAct): FiLM after each bottleneck's norm3 and the final norm, as FiT; identity at init."""
    model = _model("resnetv2_50x1_bit")
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(x)
    sites = film_sites(model)
    assert len(sites) == 17 and sites[0].path == "stages.0.blocks.0.norm3" and sites[-1].path == "norm"
    params = inject(model, "film", make_config("film", {}))
    assert sum(p.numel() for p in params) == 11_648
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def test_efficientnet_b0_places_film_as_fits_efficientnet():
    """Stem, the norm after each block's depthwise conv, and the head: as the authors' FilmEfficientNet."""
    model = _model("efficientnet_b0")
    sites = film_sites(model)
    n_blocks = sum(len(stage) for stage in model.blocks)
    assert len(sites) == n_blocks + 2 == 18
    assert sites[0].path == "bn1" and sites[-1].path == "bn2"
    assert sites[1].path == "blocks.0.0.bn1"  # DepthwiseSeparableConv: after conv_dw
    assert all(s.path.endswith(".bn2") for s in sites[2:-1])  # InvertedResidual: after conv_dw
    expected = (
        model.bn1.num_features
        + model.bn2.num_features
        + sum(b.conv_dw.out_channels for stage in model.blocks for b in stage)
    )
    assert sum(s.channels for s in sites) == expected
    assert sum(p.numel() for p in inject(model, "film", make_config("film", {}))) == 2 * expected == 20_544


def test_film_sits_before_the_fused_activation():
    """A large negative beta before SiLU/ReLU gives (about) zero; after the activation it would stay negative."""
    for arch in ("test_efficientnet", "test_resnet", "resnetv2_18"):
        model = _model(arch)
        inject(model, "film", make_config("film", {}))
        wrapped = _films(model)[0]
        with torch.no_grad():
            wrapped.film.beta.fill_(-50.0)
        captured = []
        wrapped.register_forward_hook(lambda _m, _i, out, sink=captured: sink.append(out))
        with torch.no_grad():
            model(torch.randn(1, 3, 64, 64))
        assert captured[0].min() > -1e-3, arch


def test_one_film_per_block():
    model = _model("test_vit", img_size=64)
    sites = film_sites(model)
    assert [s.path for s in sites] == [f"blocks.{i}.norm2" for i in range(len(model.blocks))] + ["norm"]
    assert all(s.channel_dim == -1 for s in sites)


def test_unknown_family_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="ConvNeXt.*use another strategy"):
        inject(_model("convnext_atto"), "film", make_config("film", {}))


@pytest.mark.parametrize(
    "arch, layer, kwargs",
    [
        ("test_efficientnet", "blocks.3", {}),
        ("test_resnet", "layer2", {}),
        ("test_vit", "blocks.3", {"img_size": 64}),
        ("resnetv2_18", "stages.2", {}),
    ],
)
def test_a_layer_tap_gets_its_models_placement_on_the_blocks_it_keeps(arch, layer, kwargs):
    """A tap (`model@layer`) runs the network pruned after `layer`: its norm sites are the whole model's
    norm sites that pruning kept (the final norm goes with pruning), a ResNet's final FiLM sits before the
    last kept block's final ReLU, and the FiLM'd tap is still the tap at initialisation."""
    from zooens.zoo._taps import build_tap

    whole = _model(arch, **kwargs)
    whole_sites = film_sites(whole)
    tap = build_tap(_model(arch, **kwargs), arch, layer)
    sites = film_sites(tap)
    assert sites and all(s.path.startswith("model.") for s in sites)
    kept = dict(tap.model.named_modules())
    expected = [
        s.path
        for s in whole_sites
        if s.kind == "norm" and s.path in kept and type(kept[s.path]) is type(whole.get_submodule(s.path))
    ]
    assert [s.path.removeprefix("model.") for s in sites if s.kind == "norm"] == expected
    assert 0 < len(expected) < len(whole_sites)
    acts = [s.path for s in sites if s.kind == "act"]
    if arch == "test_resnet":  # the last block of the tapped stage, as the whole model's last block of layer4
        last = len(tap.model.get_submodule(layer)) - 1
        assert acts == [f"model.{layer}.{last}.{whole_sites[-1].path.rsplit('.', 1)[1]}"]
    else:
        assert acts == []
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = tap(x)
    params = inject(tap, "film", make_config("film", {}))
    assert sum(p.numel() for p in params) == 2 * sum(s.channels for s in sites)
    with torch.no_grad():
        torch.testing.assert_close(tap(x), before, rtol=0, atol=0)
