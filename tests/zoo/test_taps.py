"""Layer taps (`model@layer`): the pooled output of one stage, resolved and built like any model.

The reference for a tap's embedding is independent of how taps are built (timm's
`forward_intermediates` on a pruned network): a forward hook on the named module of the whole
base model, built separately with the same weights, averaged over space (over the patch tokens
for a ViT).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from tests.zoo.test_catalogue import put_in_hub_cache
from zooens import zoo
from zooens.errors import ConfigError, UnknownModelError
from zooens.zoo import (
    LayerTap,
    create_model,
    data_config,
    describe,
    get_weight_set,
    list_weight_sets,
    provided_models,
    resolve_zoo,
    taps_for,
    weights_sha256,
    with_taps,
)
from zooens.zoo.testing import register_random_model

LITE = "tf_efficientnet_lite0.in1k"


def hooked_pooled(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The output of `model.<layer>` on `x`, averaged over space (tokens after the prefix for a ViT)."""
    seen: dict[str, torch.Tensor] = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda _m, _i, out: seen.setdefault("out", out))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        handle.remove()
    out = seen["out"]
    if out.ndim == 3:  # (B, tokens, C)
        return out[:, getattr(model, "num_prefix_tokens", 0) :].mean(dim=1)
    return out.mean(dim=(2, 3))


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "arch, layer, size",
    [
        ("test_efficientnet", "blocks.3", 64),
        ("test_resnet", "layer2", 64),
        ("test_vit", "blocks.2", 160),  # a ViT at its own size
    ],
)
def test_user_model_tap_is_the_pooled_stage(
    zooens_home: Path, tmp_path: Path, arch: str, layer: str, size: int
) -> None:
    register_random_model("mine.rand", arch, tmp_path / "w", seed=3)
    tap_name = f"mine.rand@{layer}"
    x = images(2, size)
    tap = create_model(tap_name, num_classes=0)
    with torch.inference_mode():
        got = tap(x)
    reference = hooked_pooled(create_model("mine.rand", num_classes=0), layer, x)
    assert isinstance(tap, LayerTap) and tap.num_features == got.shape[1] == reference.shape[1]
    assert torch.allclose(got, reference, atol=1e-5)
    assert describe(tap_name).embed_dim == tap.num_features
    assert describe(tap_name).num_params == sum(p.numel() for p in tap.parameters())


def test_embedded_tap_is_the_pooled_stage() -> None:
    x = images(2, 48)
    tap = create_model(f"{LITE}@blocks.4")
    with torch.inference_mode():
        got = tap(x)
    reference = hooked_pooled(create_model(LITE), "blocks.4", x)
    assert got.shape == (2, 112) and torch.allclose(got, reference, atol=1e-5)
    # pruned after the stage: the blocks past it and the 1280-wide head are gone
    assert sum(p.numel() for p in tap.parameters()) < sum(p.numel() for p in create_model(LITE).parameters()) / 2


def test_catalogue_tap_is_the_pooled_stage(hub_cache: Path) -> None:
    name = "test_convnext.r160_in1k"
    assert not get_weight_set(f"{name}@stages.1").weights_present
    torch.manual_seed(2)
    put_in_hub_cache(hub_cache, f"timm/{name}", "model.safetensors", timm.create_model("test_convnext").state_dict())
    tap = get_weight_set(f"{name}@stages.1")
    assert tap.weights_present and tap.origin == "catalogue" and weights_sha256(tap) == weights_sha256(name)
    x = images(2, 64)
    with torch.inference_mode():
        got = create_model(tap)(x)
    assert got.shape == (2, 32) and torch.allclose(got, hooked_pooled(create_model(name), "stages.1", x), atol=1e-5)


def test_tap_shares_its_models_weights_and_preprocessing() -> None:
    tap = get_weight_set(f"{LITE}@blocks.2")
    base = get_weight_set(LITE)
    assert (tap.name, tap.tap_of, tap.layer) == (f"{LITE}@blocks.2", LITE, "blocks.2")
    assert tap.is_tap and not base.is_tap
    assert (tap.arch, tap.origin, tap.source, tap.input) == (base.arch, base.origin, base.source, base.input)
    assert weights_sha256(tap.name) == weights_sha256(LITE) == base.source.sha256
    assert data_config(tap.name, resolution=32) == data_config(LITE, resolution=32)
    assert data_config(tap, preprocessing="resize") == data_config(base, preprocessing="resize")
    assert tap.embed_dim == 40 and tap.num_params is None and tap.to_dict()["tap_of"] == LITE
    assert describe(tap).num_params == sum(p.numel() for p in create_model(tap, pretrained=False).parameters())
    assert weights_sha256(tap, pretrained=False) == "random"
    # a bare architecture resolves to its embedded tag, tap included
    assert get_weight_set("tf_efficientnet_lite0@blocks.2") == tap


def test_head_and_random_and_provided_builds(zooens_home: Path, tmp_path: Path) -> None:
    register_random_model("mine.rand", "test_efficientnet", tmp_path / "w", seed=1)
    name = "mine.rand@blocks.2"
    x = images(3, 32)
    embedder = create_model(name)
    head = create_model(name, num_classes=5)
    with torch.inference_mode():
        features = embedder(x)
        logits = head(x)
        assert torch.allclose(head.forward_features(x), features)
        assert torch.allclose(logits, head.head(features))
    assert logits.shape == (3, 5) and isinstance(head.head, nn.Linear)
    with torch.inference_mode():
        assert not torch.allclose(create_model(name, pretrained=False)(x), features, atol=1e-3)
    # a `.zooens` file rebuilds a tap from its model's architecture and the tap's own state
    state = {k: v.clone() for k, v in embedder.state_dict().items()}
    with provided_models({name: ("test_efficientnet", state)}):
        rebuilt = create_model(name)
    with torch.inference_mode():
        assert isinstance(rebuilt, LayerTap) and torch.equal(rebuilt(x), features)


@pytest.mark.parametrize(
    "name, match",
    [
        (f"{LITE}@blocks.3", r"no tap layer 'blocks.3'.*blocks.0, blocks.1, blocks.2, blocks.4, blocks.6"),
        (f"{LITE}@blocks.4@blocks.1", "tap of a tap"),
        (f"{LITE}@", "not a layer tap name"),
        ("@blocks.4", "not a layer tap name"),
        (f"{LITE}@blocks/4", "not a layer tap name"),
        ("no_such_model.x@blocks.4", "Unknown model 'no_such_model.x'"),
    ],
)
def test_bad_tap_names_are_refused(name: str, match: str) -> None:
    with pytest.raises(UnknownModelError, match=match):
        get_weight_set(name)
    with pytest.raises(UnknownModelError):
        create_model(name)


def test_taps_for() -> None:
    assert taps_for(LITE) == [f"{LITE}@blocks.2", f"{LITE}@blocks.4", f"{LITE}@blocks.6"]
    assert taps_for("tf_efficientnet_lite2.in1k", last=1) == ["tf_efficientnet_lite2.in1k@blocks.6"]
    # a ResNet's last stage is its embedding: left out
    assert taps_for("resnet18.a1_in1k") == [
        "resnet18.a1_in1k@layer1",
        "resnet18.a1_in1k@layer2",
        "resnet18.a1_in1k@layer3",
    ]
    assert taps_for("resnet18.a1_in1k", last=10)[0] == "resnet18.a1_in1k@act1"
    # one stride throughout: evenly spaced blocks, never the last
    vit = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert taps_for(vit) == [f"{vit}@blocks.2", f"{vit}@blocks.5", f"{vit}@blocks.8"]
    with pytest.raises(ConfigError, match="tap already"):
        taps_for(f"{LITE}@blocks.4")
    with pytest.raises(ConfigError, match="positive integer"):
        taps_for(LITE, last=0)


def test_taps_listed_only_when_asked() -> None:
    assert all("@" not in ws.name for ws in list_weight_sets("tf_efficientnet_lite*"))
    lite0 = [ws.name for ws in list_weight_sets(f"{LITE}@blocks.*")]
    assert lite0 == [f"{LITE}@blocks.{i}" for i in (0, 1, 2, 4, 6)]
    assert [ws.name for ws in list_weight_sets(LITE, taps=True)] == [LITE, *lite0]
    assert [ws.name for ws in resolve_zoo(f"{LITE}@blocks.4,{LITE}")] == [f"{LITE}@blocks.4", LITE]
    assert [ws.name for ws in resolve_zoo(f"{LITE}@blocks.[01]")] == lite0[:2]
    auto = [ws.name for ws in resolve_zoo("embedded", taps=3)]
    assert auto[:4] == [LITE, *taps_for(LITE)] and len(auto) == 12
    given = get_weight_set(f"{LITE}@blocks.4")
    assert [ws.name for ws in with_taps([given, get_weight_set(LITE)], last=2)] == [
        given.name,
        LITE,
        f"{LITE}@blocks.6",
    ]
    assert zoo.DEFAULT_TAPS == 3
