"""timm's catalogue: offline listing, filtering, suggestions, missing and found weights, zoo specs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from zooens import zoo
from zooens.errors import MissingWeightsError, UnknownModelError
from zooens.zoo import create_model, data_config, get_weight_set, list_weight_sets, resolve_zoo, weights_sha256
from zooens.zoo._catalogue import upstream_data_from_tag


def put_in_hub_cache(cache: Path, repo: str, filename: str, tensors: dict[str, torch.Tensor]) -> Path:
    """Lay a file out as huggingface_hub's cache does (refs/main -> snapshots/<commit>/file)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    path = folder / "snapshots" / commit / filename
    path.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def test_every_pretrained_tag_is_listed_quickly_and_json_able() -> None:
    start = time.perf_counter()
    sets = list_weight_sets()
    seconds = time.perf_counter() - start
    names = {ws.name for ws in sets}
    assert names >= set(timm.list_pretrained())
    assert len(sets) == len(set(timm.list_pretrained()) | set(zoo.zoo_sets()["packaged"]))
    assert seconds < 5.0
    ws = get_weight_set("convnext_tiny.fb_in22k")
    assert (ws.arch, ws.tag, ws.origin) == ("convnext_tiny", "fb_in22k", "catalogue")
    assert ws.source.kind == "hub" and ws.source.hub_id == "timm/convnext_tiny.fb_in22k"
    assert ws.input.mean == (0.485, 0.456, 0.406) and ws.num_classes == 21841
    assert ws.embed_dim is None and ws.num_params is None
    assert ws.upstream_data == "ImageNet-22k" and ws.license == "apache-2.0"
    facts = json.loads(json.dumps(ws.to_dict()))
    assert facts["input"]["input_size"] == [3, 224, 224] and facts["weights_present"] is False


def test_embedded_entries_override_the_catalogue() -> None:
    ws = get_weight_set("tf_efficientnet_lite0.in1k")
    assert ws.origin == "embedded"
    assert [w.origin for w in list_weight_sets("tf_efficientnet_lite0*")] == ["embedded"]


def test_filter_is_a_case_insensitive_glob() -> None:
    sets = list_weight_sets("convnext_t*")
    assert sets and all(ws.name.startswith("convnext_t") for ws in sets)
    assert [ws.name for ws in sets] == sorted(ws.name for ws in sets)
    assert {ws.name for ws in list_weight_sets("CONVNEXT_T*")} == {ws.name for ws in sets}
    assert list_weight_sets("no_such_model*") == []


def test_describe_fills_size_without_weights() -> None:
    ws = zoo.describe("convnext_tiny.fb_in22k")
    reference = timm.create_model("convnext_tiny", num_classes=0)
    assert ws.num_params == sum(p.numel() for p in reference.parameters()) == 27_820_128
    assert ws.embed_dim == 768


def test_bare_architecture_picks_embedded_then_timm_default_tag() -> None:
    assert get_weight_set("tf_efficientnet_lite0").name == "tf_efficientnet_lite0.in1k"
    default = timm.models.get_pretrained_cfg("convnext_tiny")
    assert get_weight_set("convnext_tiny").tag == default.tag


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownModelError) as exc:
        get_weight_set("convnxt_tiny.fb_in22k")
    message = str(exc.value)
    assert "convnext_tiny.fb_in22k" in message and "zooens zoo list" in message
    with pytest.raises(UnknownModelError, match="tf_efficientnet_lite0.in1k"):
        get_weight_set("tf_efficientnet_lite0.in22k")


def test_missing_weights_says_where_it_looked_and_how_to_fix(hub_cache: Path) -> None:
    ws = get_weight_set("mobilenetv3_small_050.lamb_in1k")
    assert not ws.weights_present
    with pytest.raises(MissingWeightsError) as exc:
        create_model(ws)
    message = str(exc.value)
    assert str(hub_cache / "models--timm--mobilenetv3_small_050.lamb_in1k") in message
    assert "mobilenetv3_small_050_lambc-4b7bbe87.pth" in message and "torch hub" in message
    assert "zooens zoo add mobilenetv3_small_050.lamb_in1k --arch mobilenetv3_small_050 --weights FILE" in message
    assert "Hugging Face hub cache" in message
    with pytest.raises(MissingWeightsError):
        weights_sha256(ws)


def test_random_init_needs_no_weights() -> None:
    model = create_model("test_vit.r160_in1k", pretrained=False)
    assert not model.training
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 160, 160)).shape == (1, 64)
    assert create_model("test_vit.r160_in1k", num_classes=7, pretrained=False)(torch.zeros(1, 3, 160, 160)).shape == (
        1,
        7,
    )


def test_weights_in_the_hub_cache_are_found_and_used(hub_cache: Path) -> None:
    ws = get_weight_set("test_resnet.r160_in1k")
    assert not ws.weights_present and "test_resnet.r160_in1k" not in {
        w.name for w in list_weight_sets(available_only=True)
    }
    torch.manual_seed(1)
    reference = timm.create_model("test_resnet", num_classes=1000)
    path = put_in_hub_cache(hub_cache, "timm/test_resnet.r160_in1k", "model.safetensors", reference.state_dict())
    assert ws.weights_present and ws.source.locate() == path
    assert "test_resnet.r160_in1k" in {w.name for w in resolve_zoo("available")}
    embedder = create_model(ws)
    classifier = create_model(ws, num_classes=1000)
    x = torch.randn(2, 3, 160, 160)
    with torch.inference_mode():
        assert torch.allclose(classifier(x), reference.eval()(x), atol=1e-5)
        assert torch.allclose(
            embedder(x), reference.forward_head(reference.forward_features(x), pre_logits=True), atol=1e-5
        )
    import hashlib

    assert weights_sha256(ws) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_weights_in_the_torch_hub_dir_are_found_and_used(hub_cache: Path) -> None:
    ws = get_weight_set("mobilenetv3_small_050.lamb_in1k")
    torch.manual_seed(2)
    reference = timm.create_model("mobilenetv3_small_050", num_classes=1000).eval()
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(reference.state_dict(), folder / "mobilenetv3_small_050_lambc-4b7bbe87.pth")
    assert ws.weights_present
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        assert torch.allclose(create_model(ws, num_classes=1000)(x), reference(x), atol=1e-5)


def test_upstream_data_is_read_from_the_tag() -> None:
    assert upstream_data_from_tag("fb_in22k_ft_in1k", 1000) == "ImageNet-22k -> ImageNet-1k"
    assert upstream_data_from_tag("laion2b_ft_in12k_in1k", 1000) == "LAION-2B -> ImageNet-12k -> ImageNet-1k"
    assert upstream_data_from_tag("a1_in1k", 1000) == "ImageNet-1k"
    assert upstream_data_from_tag("ra2", 1000) == "ImageNet-1k"
    assert upstream_data_from_tag("ra2", 11821) is None
    assert upstream_data_from_tag("fb_ssl_yfcc100m_ft_in1k", 1000) == "YFCC-100M -> ImageNet-1k"
    assert upstream_data_from_tag("ns_jft_in1k", 1000) == "JFT-300M -> ImageNet-1k"
    assert upstream_data_from_tag("dinov3_lvd1689m", 0) == "LVD-1689M"


def test_resolve_zoo_specs(zooens_home: Path) -> None:
    embedded = ["tf_efficientnet_lite0.in1k", "tf_efficientnet_lite1.in1k", "tf_efficientnet_lite2.in1k"]
    assert [ws.name for ws in resolve_zoo("embedded")] == embedded
    assert [ws.name for ws in resolve_zoo("convnext_tiny.fb_in1k, tf_efficientnet_lite0.in1k")] == [
        "convnext_tiny.fb_in1k",
        "tf_efficientnet_lite0.in1k",
    ]
    assert [ws.name for ws in resolve_zoo(["tf_efficientnet_lite2.in1k", "tf_efficientnet_lite2.in1k"])] == [
        "tf_efficientnet_lite2.in1k"
    ]
    globbed = resolve_zoo("convnext_tiny.*")
    assert {ws.name for ws in globbed} == set(timm.list_pretrained("convnext_tiny.*"))
    assert {ws.name for ws in resolve_zoo("available")} >= set(embedded)
    with pytest.raises(UnknownModelError, match="zooens zoo add"):
        resolve_zoo("user")  # empty in a fresh home
    with pytest.raises(UnknownModelError, match="matches no model"):
        resolve_zoo("convnxt*")
    with pytest.raises(UnknownModelError, match="names no model"):
        resolve_zoo(" , ")
    with pytest.raises(UnknownModelError, match="names no model"):
        resolve_zoo([])
    with pytest.raises(UnknownModelError, match="tf_efficientnet_lite1.in1k"):
        resolve_zoo("embedded,tf_efficientnet_lite1.in1kk")


@pytest.mark.parametrize(
    "typo, meant", [("embeded", "embedded"), ("Embedded", "embedded"), ("usr", "user"), ("availble", "available")]
)
def test_a_zoo_set_typo_suggests_the_set(typo: str, meant: str) -> None:
    with pytest.raises(UnknownModelError, match=f"did you mean '{meant}'") as caught:
        resolve_zoo(f"tf_efficientnet_lite0.in1k, {typo}")
    assert len(str(caught.value).splitlines()) == 1 and len(str(caught.value)) < 200
    with pytest.raises(UnknownModelError) as far:  # nothing like a set name: the model suggestions as before
        resolve_zoo("qqqqqqqq")
    assert "did you mean" not in str(far.value) and "Unknown model 'qqqqqqqq'" in str(far.value)


def test_data_config_resolution_override() -> None:
    cfg = data_config("tf_efficientnet_lite2.in1k")
    assert cfg == {
        "input_size": (3, 260, 260),
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "interpolation": "bicubic",
        "crop_pct": 0.89,
        "crop_mode": "center",
    }
    assert data_config("tf_efficientnet_lite2.in1k", resolution=128)["input_size"] == (3, 128, 128)
    assert data_config("tf_efficientnet_lite2.in1k", resolution=(96, 128))["input_size"] == (3, 96, 128)
    reference = timm.data.resolve_model_data_config(timm.create_model("convnext_tiny.fb_in1k", pretrained=False))
    assert data_config("convnext_tiny.fb_in1k") == {k: reference[k] for k in cfg}
