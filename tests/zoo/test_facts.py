"""Catalogue facts: GFLOPs and parameters on the meta device, the shipped tables, upstream categories, filters."""

from __future__ import annotations

import csv
import importlib.resources
import logging
import random

import pytest
import timm
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from zooens import zoo
from zooens.errors import ConfigError
from zooens.zoo import _facts, resolve_zoo
from zooens.zoo._facts import (
    UPSTREAM_CATEGORIES,
    catalogue_inputs,
    count_meta,
    filter_by_facts,
    imagenet_top1,
    model_facts,
    upstream_category,
)


def real_flops(name: str, size: int) -> int:
    """FlopCounterMode on a random-weight CPU model. Attention runs on its math backend: FlopCounterMode
    has no formula for PyTorch's fused CPU attention kernel (it counts 0 there), while it counts the
    CUDA flash and memory-efficient kernels and the meta device's math path alike."""
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=0).eval()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, size, size))
    return counter.get_total_flops()


def formula_flops(model: nn.Module, size: int) -> int:
    """2 x multiply-adds of every convolution and linear layer, from their output shapes."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs_per_output = module.in_channels // module.groups * kh * kw
            total += 2 * output.numel() * macs_per_output
        elif isinstance(module, nn.Linear):
            total += 2 * output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name, size", [("resnet10t.c3_in1k", 176), ("vit_tiny_patch16_224.augreg_in21k", 224)])
def test_meta_gflops_equal_flopcounter_on_a_real_model(name: str, size: int) -> None:
    counts = count_meta(name, (3, size, size))
    assert counts.gflops is not None and counts.gflops > 0
    assert counts.gflops * 1e9 == pytest.approx(real_flops(name, size), rel=1e-9)


def test_vit_attention_is_counted() -> None:
    """ViT-Ti/16 at 224: 12 blocks of qkv, proj and a 4x MLP on 197 tokens of 192 dims, plus the two
    attention products (197 x 197 x 192 each) and the patch embedding."""
    tokens, dim, blocks = 197, 192, 12
    per_block = 2 * tokens * dim * (3 * dim + dim + 2 * 4 * dim) + 2 * 2 * tokens * tokens * dim
    patch_embed = 2 * 196 * dim * 3 * 16 * 16
    counts = count_meta("vit_tiny_patch16_224.augreg_in21k", (3, 224, 224))
    assert counts.gflops * 1e9 == pytest.approx(blocks * per_block + patch_embed, rel=1e-9)


def test_resnet18_gflops_match_the_conv_linear_formula_and_timms_gmacs() -> None:
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    reference = formula_flops(model, 224)
    counts = count_meta("resnet18.a1_in1k", (3, 224, 224))
    assert counts.gflops * 1e9 == pytest.approx(reference, rel=1e-9)
    assert counts.gflops == pytest.approx(3.63, abs=0.005)  # 2 FLOPs per multiply-add: 2 x timm's 1.82 GMACs
    assert counts.gflops / 2 == pytest.approx(1.82, rel=0.01)
    assert model_facts("resnet18.a1_in1k").gflops == pytest.approx(counts.gflops, abs=5e-7)  # the table's


def test_num_params_are_the_embedders_as_a_cpu_model_counts() -> None:
    for name in ("resnet10t.c3_in1k", "convnext_atto.d2_in1k", "vit_tiny_patch16_224.augreg_in21k"):
        model = timm.create_model(name, pretrained=False, num_classes=0)
        cfg = timm.models.get_pretrained_cfg(name)
        assert count_meta(name, cfg.input_size).num_params == sum(p.numel() for p in model.parameters()), name
    assert model_facts("convnext_tiny.fb_in22k").num_params == zoo.describe("convnext_tiny.fb_in22k").num_params


def test_facts_of_an_embedded_set_and_a_layer_tap() -> None:
    facts = model_facts("tf_efficientnet_lite0.in1k")
    assert (facts.arch, facts.upstream, facts.resolution) == ("tf_efficientnet_lite0", "in1k", (224, 224))
    assert facts.num_params == zoo.describe("tf_efficientnet_lite0.in1k").num_params
    assert facts.gflops is not None and 0.5 < facts.gflops < 1.0
    tap = model_facts("tf_efficientnet_lite0.in1k@blocks.4")
    assert tap.upstream == "in1k" and 0 < tap.num_params < facts.num_params
    assert tap.gflops is not None and 0 < tap.gflops < facts.gflops  # its pruned network, counted on meta
    assert set(facts.to_dict()) == {f.name for f in facts.__dataclass_fields__.values()}


def test_a_forward_that_fails_on_meta_gives_no_gflops(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    class NeedsValues(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return y * float(y.max().item())  # data-dependent: no value on the meta device

    monkeypatch.setattr(_facts, "_build_on_meta", lambda name, size: NeedsValues().to("meta"))
    with caplog.at_level(logging.DEBUG, logger="zooens.zoo._facts"):
        counts = count_meta("not_in_the_cache_arch", (3, 32, 32))
    assert counts.gflops is None and counts.num_params == 4 * 3 * 9 + 4
    assert "not counted on the meta device" in caplog.text


def _shipped_rows() -> tuple[list[str], list[dict[str, str]]]:
    text = importlib.resources.files("zooens.zoo").joinpath("data/catalogue_facts.csv").read_text()
    lines = text.splitlines()
    comments = [ln for ln in lines if ln.startswith("#")]
    return comments, list(csv.DictReader(ln for ln in lines if not ln.startswith("#")))


def test_the_shipped_table_covers_the_catalogue_and_names_its_timm() -> None:
    comments, rows = _shipped_rows()
    assert comments[0].startswith(f"# timm {timm.__version__},")
    assert _facts.shipped_facts_version() == timm.__version__
    keys = {(r["arch"], (int(r["in_chans"]), int(r["height"]), int(r["width"]))) for r in rows}
    assert {(arch, size) for _, arch, size in catalogue_inputs()} <= keys
    assert sum(bool(r["num_params"]) for r in rows) >= 0.99 * len(rows)
    assert sum(bool(r["gflops"]) for r in rows) >= 0.95 * len(rows)


def test_the_shipped_table_agrees_with_recomputation() -> None:
    _, rows = _shipped_rows()
    by_key = {(r["arch"], (int(r["in_chans"]), int(r["height"]), int(r["width"]))): r for r in rows}
    small = [item for item in catalogue_inputs() if by_key[(item[1], item[2])]["num_params"]]
    small = [item for item in small if int(by_key[(item[1], item[2])]["num_params"]) < 30e6]
    sample = random.Random(0).sample(small, 6) + [i for i in catalogue_inputs() if i[1] == "resnet18"][:1]
    for name, arch, size in sample:
        row = by_key[(arch, size)]
        counts = count_meta(name, size)
        assert counts.num_params == int(row["num_params"]), name
        if row["gflops"]:
            assert counts.gflops == pytest.approx(float(row["gflops"]), abs=5e-7), name  # 6 decimals
        else:
            assert counts.gflops is None, name


def test_imagenet_top1_comes_from_the_data_file() -> None:
    text = importlib.resources.files("zooens.zoo").joinpath("data/imagenet_top1.csv").read_text()
    first = text.splitlines()[0]
    assert first.startswith("#") and "huggingface/pytorch-image-models" in first and "results-imagenet.csv" in first
    rows = list(csv.DictReader(ln for ln in text.splitlines() if not ln.startswith("#")))
    row = next(r for r in rows if r["model"] == "vit_base_patch16_224.augreg2_in21k_ft_in1k" and r["img_size"] == "224")
    assert model_facts("vit_base_patch16_224.augreg2_in21k_ft_in1k").imagenet_top1 == float(row["top1"])
    at_224 = next(r for r in rows if r["model"] == "resnet50.a1_in1k" and r["img_size"] == "224")
    assert model_facts("resnet50.a1_in1k").imagenet_top1 == float(at_224["top1"])  # its input size, not 288
    default = timm.models.get_pretrained_cfg("resnet50").tag
    assert imagenet_top1("resnet50") == imagenet_top1(f"resnet50.{default}") is not None  # bare: the default tag
    assert model_facts("convnext_tiny.fb_in22k").imagenet_top1 is None  # no ImageNet-1k head
    assert 70 < model_facts("tf_efficientnet_lite0.in1k").imagenet_top1 < 80


@pytest.mark.parametrize(
    "name, category",
    [
        ("convnext_tiny.fb_in22k_ft_in1k", "in21k"),
        ("vit_base_patch16_224.augreg_in21k", "in21k"),
        ("convnext_base.clip_laion2b_augreg_ft_in12k_in1k", "image-text"),
        ("vit_base_patch16_clip_224.openai", "image-text"),
        ("vit_base_patch16_siglip_224.webli", "image-text"),
        ("vit_small_patch16_224.dino", "self-supervised"),
        ("vit_base_patch16_224.mae", "self-supervised"),
        ("vit_small_patch14_dinov2.lvd142m", "self-supervised"),
        ("convnextv2_tiny.fcmae_ft_in22k_in1k", "self-supervised"),
        ("resnet50.fb_ssl_yfcc100m_ft_in1k", "semi-weak"),
        ("resnet50.fb_swsl_ig1b_ft_in1k", "semi-weak"),
        ("tf_efficientnet_b0.ns_jft_in1k", "semi-weak"),
        ("deit_small_distilled_patch16_224.fb_in1k", "distilled"),
        ("levit_256.fb_dist_in1k", "distilled"),
        ("resnet50.a1_in1k", "in1k"),
        ("tf_efficientnet_lite0.in1k", "in1k"),
    ],
)
def test_upstream_category_of_known_tags(name: str, category: str) -> None:
    cfg = timm.models.get_pretrained_cfg(name)
    assert upstream_category(cfg.tag, cfg.architecture, cfg.num_classes) == category
    assert model_facts(name).upstream == category


def test_upstream_category_rule_order_and_fallbacks() -> None:
    assert upstream_category("clip_laion2b_ft_in12k_in1k") == "image-text"  # the pre-training decides
    assert upstream_category("dist_in22k_ft_in1k") == "distilled"
    assert upstream_category("fb_in22k_ft_in1k") == "in21k"
    assert upstream_category("my_finetune", num_classes=1000) == "in1k"
    assert upstream_category("sa1b") == "other"
    assert set(UPSTREAM_CATEGORIES) >= {"in1k", "in21k", "semi-weak", "self-supervised", "image-text", "distilled"}
    counts = {upstream_category(n.split(".", 1)[1], n.split(".")[0]) for n in timm.list_pretrained()}
    assert counts == set(UPSTREAM_CATEGORIES)


def test_filter_by_facts() -> None:
    small = resolve_zoo("diverse-small")
    ssl = filter_by_facts(small, upstream="self-supervised")
    assert [ws.name for ws in ssl] == [ws.name for ws in small if model_facts(ws).upstream == "self-supervised"]
    assert len(ssl) == 3
    tiny = filter_by_facts(small, max_params=5e6)
    assert {ws.name for ws in tiny} == {"efficientnet_b0.ra_in1k", "tf_efficientnet_b0.ns_jft_in1k"}
    assert all(model_facts(ws).num_params >= 23e6 for ws in filter_by_facts(small, min_params=23e6))
    both = filter_by_facts(small, upstream=["image-text", "distilled"], min_params=10e6, max_params=20e6)
    assert {ws.name for ws in both} == {"fastvit_mci0.apple_mclip2_dfndr2b", "levit_256.fb_dist_in1k"}
    cheap = filter_by_facts(["resnet50.a1_in1k", "resnet18.a1_in1k"], max_gflops=5.0, min_top1=70)
    assert [ws.name for ws in cheap] == ["resnet18.a1_in1k"]
    assert filter_by_facts(small) == small
    with pytest.raises(ConfigError, match="image-text"):
        filter_by_facts(small, upstream="clip")
    with pytest.raises(ConfigError, match="above"):
        filter_by_facts(small, min_params=2e6, max_params=1e6)


def test_imagenet_top1_of_a_model_evaluated_at_two_sizes() -> None:
    assert imagenet_top1("resnet50.a1_in1k") == model_facts("resnet50.a1_in1k").imagenet_top1
    assert imagenet_top1("resnet50.a1_in1k", 288) > imagenet_top1("resnet50.a1_in1k", 224)
    assert imagenet_top1("resnet50.a1_in1k", 999) == imagenet_top1("resnet50.a1_in1k", 288)  # none there: the best
    assert imagenet_top1("no_such_model.x") is None


def test_model_facts_read_the_table_without_building(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_build(name: str, size: object) -> nn.Module:
        raise AssertionError(f"{name} was built: the shipped table has it")

    monkeypatch.setattr(_facts, "_build_on_meta", no_build)
    facts = model_facts("eva02_large_patch14_448.mim_m38m_ft_in22k_in1k")
    assert facts.num_params == 304_055_232 and facts.gflops == pytest.approx(723.492274, abs=1e-6)
    assert facts.resolution == (448, 448) and facts.upstream == "self-supervised" and facts.imagenet_top1 > 89
