"""One-file ensembles: a round trip that needs no zoo, and every refusal of a file that is not what it says."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from zooens.ensemble import (
    Artifact,
    BaseModel,
    BundleError,
    BundleLimits,
    EnsemblePredictor,
    read_bundle,
    write_bundle,
)

CLASSES = ["cat", "dog", "owl"]
DATA_CONFIG = {
    "input_size": [3, 32, 32],
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "interpolation": "bilinear",
    "crop_pct": 1.0,
    "crop_mode": "center",
}


def _linear_member(model: str, dim: int, seed: int) -> Artifact:
    g = torch.Generator().manual_seed(seed)
    tensors = {
        "norm.mean": torch.randn(dim, generator=g),
        "norm.scale": torch.rand(dim, generator=g) + 0.5,
        "head.weight": torch.randn(len(CLASSES), dim, generator=g),
        "head.bias": torch.randn(len(CLASSES)),
    }
    config = {
        "model": model,
        "strategy": "linear",
        "resolution": 32,
        "classes": CLASSES,
        "hparams": {"seed": seed},
        "data_config": DATA_CONFIG,
    }
    return Artifact(config=config, tensors=tensors)


def _base(name: str, arch: str) -> BaseModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = timm.create_model(arch, pretrained=False, num_classes=0)
    return BaseModel(name=name, arch=arch, weights_sha256="0" * 64, state=model.state_dict())


@pytest.fixture
def bundle_file(tmp_path) -> Path:
    """Two linear members on two models the zoo has never heard of: only the file can build them."""
    members = [(_linear_member("nowhere-resnet", 8 * 8, 0), 0.7), (_linear_member("nowhere-effnet", 32, 1), 0.3)]
    dims = {"nowhere-resnet": "test_resnet", "nowhere-effnet": "test_efficientnet"}
    bases = {name: _base(name, arch) for name, arch in dims.items()}
    for artifact, _ in members:  # the head's width follows the backbone's
        width = bases[artifact.config["model"]].build().num_features
        artifact.tensors = _linear_member(artifact.config["model"], width, 3).tensors
    path = tmp_path / "model.zooens"
    write_bundle(path, members, bases, metadata={"note": "test"})
    return path


def _images(n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 40, 36, 3), dtype=np.uint8)


def test_round_trip_without_the_zoo(bundle_file):
    bundle = read_bundle(bundle_file)
    assert bundle.classes == CLASSES and len(bundle.members) == 2
    assert {"zooens", "torch", "timm", "safetensors"} <= set(bundle.versions)
    assert bundle.metadata == {"note": "test"}
    loaded = EnsemblePredictor.load(bundle_file)
    direct = EnsemblePredictor(bundle.members, backbones={n: b.build() for n, b in bundle.base_models.items()})
    images = _images()
    p = loaded.predict_proba(images)
    assert p.shape == (4, 3) and np.allclose(p.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(p, direct.predict_proba(list(images)), atol=1e-6)
    assert loaded.predict(images) == [CLASSES[i] for i in p.argmax(axis=1)]
    np.testing.assert_allclose(loaded.weights, [0.7, 0.3])


def _rewrite(src: Path, dst: Path, change) -> None:
    """Copy the zip, passing each (name, bytes) through `change` (None drops the entry)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            out = change(info.filename, zin.read(info))
            if out is not None:
                zout.writestr(info.filename, out)


def _flip_tensor_byte(name: str, data: bytes) -> bytes:
    if name == "members/1/model.safetensors":
        return data[:-1] + bytes([data[-1] ^ 1])
    return data


def _edit_manifest(edit):
    def change(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        edit(manifest)
        return json.dumps(manifest).encode()

    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (_flip_tensor_byte, "members/1/model.safetensors does not match its sha256"),
        (lambda name, data: None if name == "base/0.safetensors" else data, "part base/0.safetensors is missing"),
        (_edit_manifest(lambda m: m.update(format_version=99)), "format version 99"),
        (_edit_manifest(lambda m: m.update(format="something-else")), "not a zooens ensemble file"),
        (_edit_manifest(lambda m: m["members"][0].update(config="../../etc/passwd")), "invalid part"),
        (_edit_manifest(lambda m: m["parts"].pop("members/0/config.json")), "does not list"),
        (lambda name, data: b"[1, 2" if name == "manifest.json" else data, "not valid JSON"),
    ],
)
def test_an_altered_file_is_refused(bundle_file, tmp_path, change, message):
    bad = tmp_path / "bad.zooens"
    _rewrite(bundle_file, bad, change)
    with pytest.raises(BundleError, match=message.replace("(", r"\(")):
        EnsemblePredictor.load(bad)


def test_limits_are_checked_before_reading(bundle_file, tmp_path):
    with pytest.raises(BundleError, match="more than the 1000 allowed"):
        read_bundle(bundle_file, limits=BundleLimits(max_part_bytes=1000))
    with pytest.raises(BundleError, match="in all"):
        read_bundle(bundle_file, limits=BundleLimits(max_total_bytes=1000))
    with pytest.raises(BundleError, match="entries"):
        read_bundle(bundle_file, limits=BundleLimits(max_members=1))
    with pytest.raises(BundleError, match="not a zooens ensemble file"):
        read_bundle(io.BytesIO(b"not a zip at all"))
    many = tmp_path / "many.zooens"
    _rewrite(bundle_file, many, _edit_manifest(lambda m: m.update(members=m["members"] * 3)))
    with pytest.raises(BundleError, match="lists 6 members"):
        read_bundle(many, limits=BundleLimits(max_members=5))


def test_a_base_of_the_wrong_architecture_is_refused(bundle_file):
    bundle = read_bundle(bundle_file)
    base = bundle.base_models["nowhere-resnet"]
    base.arch = "test_efficientnet"
    with pytest.raises(BundleError, match="do not fit architecture"):
        base.build()
