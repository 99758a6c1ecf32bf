"""User models: register local checkpoints, load them back, refuse wrong or changed files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from zooens import zoo
from zooens.errors import ConfigError, ConflictError, MissingWeightsError, UnknownModelError, WeightsMismatchError
from zooens.settings import get_settings
from zooens.zoo import add_user_model, create_model, get_weight_set, remove_user_model, resolve_zoo, weights_sha256
from zooens.zoo.testing import register_random_model


def random_resnet(seed: int = 0, num_classes: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("test_resnet", num_classes=num_classes).eval()


def save(model: torch.nn.Module, path: Path) -> Path:
    state = model.state_dict()
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_round_trip(zooens_home: Path, tmp_path: Path, suffix: str) -> None:
    reference = random_resnet(3)
    path = save(reference, tmp_path / f"mine{suffix}")
    ws = add_user_model("my_resnet.ft", "test_resnet", path)
    assert (ws.name, ws.arch, ws.tag, ws.origin) == ("my_resnet.ft", "test_resnet", "ft", "user")
    assert ws.source.kind == "file" and ws.source.path == str(path.resolve())
    assert ws.source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == weights_sha256("my_resnet.ft")
    assert ws.embed_dim == 96 and ws.num_params == sum(p.numel() for p in reference.parameters())
    assert ws.input.input_size == (3, 160, 160) and ws.weights_present

    stored = json.loads(get_settings().user_zoo_file.read_text())["models"]["my_resnet.ft"]
    assert stored["arch"] == "test_resnet" and stored["sha256"] == ws.source.sha256
    assert get_weight_set("my_resnet.ft") == ws
    assert zoo.zoo_sets()["user"] == ["my_resnet.ft"] and [w.name for w in resolve_zoo("user")] == ["my_resnet.ft"]

    x = torch.randn(2, 3, 160, 160)
    with torch.inference_mode():
        assert torch.allclose(create_model("my_resnet.ft")(x), reference(x), atol=1e-6)
        random = create_model("my_resnet.ft", pretrained=False)(x)
    assert not torch.allclose(random, reference(x), atol=1e-3)

    remove_user_model("my_resnet.ft")
    with pytest.raises(UnknownModelError):
        get_weight_set("my_resnet.ft")
    with pytest.raises(UnknownModelError, match="my_resnet.ft"):
        remove_user_model("my_resnet.ft")


def test_checkpoint_with_a_head_registers_and_keeps_it(zooens_home: Path, tmp_path: Path) -> None:
    reference = random_resnet(4, num_classes=10)
    ws = add_user_model("resnet10", "test_resnet", save(reference, tmp_path / "head.pth"))
    assert ws.num_classes == 10
    x = torch.randn(1, 3, 160, 160)
    with torch.inference_mode():
        assert torch.allclose(create_model(ws, num_classes=10)(x), reference(x), atol=1e-6)
        assert create_model(ws, num_classes=3)(x).shape == (1, 3)  # other width: head at random init


def test_wrong_architecture_is_refused_with_the_keys(zooens_home: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    other = save(timm.create_model("test_efficientnet", num_classes=0), tmp_path / "effnet.safetensors")
    with pytest.raises(WeightsMismatchError, match="missing keys .*unexpected keys .*wrong shapes .*--arch"):
        add_user_model("wrong", "test_resnet", other)
    assert not get_settings().user_zoo_file.exists()
    state = random_resnet().state_dict()
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"][:, :-1]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "shape.safetensors"))
    with pytest.raises(WeightsMismatchError, match="layer1.0.conv1.weight"):
        add_user_model("wrong", "test_resnet", tmp_path / "shape.safetensors")
    state = random_resnet().state_dict()
    state["extra.weight"] = torch.zeros(2)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(WeightsMismatchError, match="unexpected keys extra.weight"):
        add_user_model("wrong", "test_resnet", tmp_path / "extra.safetensors")


def test_bad_arguments(zooens_home: Path, tmp_path: Path) -> None:
    path = save(random_resnet(), tmp_path / "ok.safetensors")
    with pytest.raises(UnknownModelError, match="Unknown timm architecture 'test_resnett'.*test_resnet"):
        add_user_model("x", "test_resnett", path)
    with pytest.raises(ConfigError, match="does not exist"):
        add_user_model("x", "test_resnet", tmp_path / "nope.pth")
    (tmp_path / "w.txt").write_text("hi")
    with pytest.raises(ConfigError, match=".safetensors, .pth or .pt"):
        add_user_model("x", "test_resnet", tmp_path / "w.txt")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsMismatchError, match="Cannot read weights"):
        add_user_model("x", "test_resnet", tmp_path / "junk.pth")
    for bad in ("", "a,b", "conv*", "has space"):
        with pytest.raises(ConfigError, match="Invalid model name"):
            add_user_model(bad, "test_resnet", path)
    with pytest.raises(ConfigError, match="zoo set"):
        add_user_model("embedded", "test_resnet", path)
    with pytest.raises(ConflictError, match="embedded model"):
        add_user_model("tf_efficientnet_lite0.in1k", "test_resnet", path)


def test_duplicate_name_conflicts_unless_overwrite(zooens_home: Path, tmp_path: Path) -> None:
    first = add_user_model("dup", "test_resnet", save(random_resnet(0), tmp_path / "a.safetensors"))
    with pytest.raises(ConflictError, match="exists already.*overwrite"):
        add_user_model("dup", "test_resnet", save(random_resnet(1), tmp_path / "b.safetensors"))
    assert get_weight_set("dup").source.sha256 == first.source.sha256
    second = add_user_model("dup", "test_resnet", tmp_path / "b.safetensors", overwrite=True)
    assert second.source.sha256 != first.source.sha256
    assert get_weight_set("dup").source.path == str((tmp_path / "b.safetensors").resolve())


def test_user_model_may_shadow_a_catalogue_name(zooens_home: Path, tmp_path: Path) -> None:
    path = save(random_resnet(5, num_classes=1000), tmp_path / "r.safetensors")
    ws = add_user_model("test_resnet.r160_in1k", "test_resnet", path)
    assert get_weight_set("test_resnet.r160_in1k") == ws and ws.origin == "user"


def test_changed_or_deleted_file_is_refused_at_load(zooens_home: Path, tmp_path: Path) -> None:
    path = save(random_resnet(0), tmp_path / "m.safetensors")
    add_user_model("changing", "test_resnet", path)
    create_model("changing")  # loads and caches
    save(random_resnet(1), path)
    with pytest.raises(WeightsMismatchError, match="sha256.*--overwrite"):
        create_model("changing")
    path.unlink()
    with pytest.raises(MissingWeightsError, match="no longer exists.*--overwrite"):
        create_model("changing")


def test_corrupt_user_zoo_file(zooens_home: Path) -> None:
    get_settings().user_zoo_file.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable.*delete"):
        zoo.zoo_sets()


@pytest.mark.parametrize(
    "arch,dim", [("test_efficientnet", 256), ("test_resnet", 96), ("test_vit", 64), ("test_convnext", 64)]
)
def test_register_random_model_is_seeded_and_usable(zooens_home: Path, tmp_path: Path, arch: str, dim: int) -> None:
    before = torch.random.get_rng_state()
    ws = register_random_model(f"tiny-{arch}", arch, tmp_path / "w")
    assert torch.equal(torch.random.get_rng_state(), before)
    assert ws.origin == "user" and ws.embed_dim == dim and Path(ws.source.path).suffix == ".safetensors"
    again = register_random_model(f"tiny-{arch}", arch, tmp_path / "w2")
    assert again.source.sha256 == ws.source.sha256
    with torch.inference_mode():
        assert create_model(ws.name)(torch.zeros(1, 3, 160, 160)).shape == (1, dim)
