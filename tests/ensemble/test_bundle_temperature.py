"""A `.zooens` file keeps the ensemble's temperature, and the loaded predictor applies it; a file without
one (written before calibration) predicts with T = 1."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.ensemble.test_bundle import _base, _images, _linear_member
from zooens.ensemble import BundleError, EnsemblePredictor, read_bundle, write_bundle
from zooens.ensemble.calibration import apply_temperature
from zooens.errors import ConfigError


def _write(path: Path, temperature: float | None) -> Path:
    members = [(_linear_member("nowhere-resnet", 8 * 8, 0), 0.6), (_linear_member("nowhere-effnet", 32, 1), 0.4)]
    dims = {"nowhere-resnet": "test_resnet", "nowhere-effnet": "test_efficientnet"}
    bases = {name: _base(name, arch) for name, arch in dims.items()}
    for artifact, _ in members:
        width = bases[artifact.config["model"]].build().num_features
        artifact.tensors = _linear_member(artifact.config["model"], width, 3).tensors
    write_bundle(path, members, bases, temperature=temperature)
    return path


def _without_temperature(src: Path, dst: Path) -> None:
    """The same file as an earlier zooens wrote it: no temperature in the manifest."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "manifest.json":
                manifest = json.loads(data)
                del manifest["temperature"]
                data = json.dumps(manifest).encode()
            zout.writestr(info, data)


def test_the_round_trip_keeps_the_temperature_and_applies_it(tmp_path):
    path = _write(tmp_path / "hot.zooens", 2.5)
    bundle = read_bundle(path)
    assert bundle.temperature == 2.5
    loaded = EnsemblePredictor.load(path)
    assert loaded.temperature == 2.5
    images = _images()
    raw = loaded.predict_proba(images, calibrated=False)
    calibrated = loaded.predict_proba(images)
    np.testing.assert_allclose(calibrated, apply_temperature(raw, 2.5), atol=1e-6)
    assert np.array_equal(calibrated.argmax(1), raw.argmax(1))
    assert calibrated.max(1).mean() < raw.max(1).mean()  # T > 1 softens
    np.testing.assert_allclose(calibrated.sum(1), 1, atol=1e-5)
    assert loaded.predict(images) == [bundle.classes[i] for i in raw.argmax(1)]


def test_a_file_without_a_temperature_loads_with_t_1(tmp_path):
    src = _write(tmp_path / "plain.zooens", None)
    assert read_bundle(src).temperature == 1.0
    old = tmp_path / "old.zooens"
    _without_temperature(_write(tmp_path / "hot.zooens", 3.0), old)
    bundle = read_bundle(old)
    assert bundle.temperature == 1.0
    predictor = EnsemblePredictor.load(old)
    images = _images()
    np.testing.assert_allclose(predictor.predict_proba(images), predictor.predict_proba(images, calibrated=False))


def test_a_bad_temperature_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="temperature"):
        _write(tmp_path / "bad.zooens", -1.0)
    path = _write(tmp_path / "ok.zooens", 1.5)
    altered = tmp_path / "altered.zooens"
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(altered, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "manifest.json":
                data = json.dumps({**json.loads(data), "temperature": "hot"}).encode()
            zout.writestr(info, data)
    with pytest.raises(BundleError, match="temperature"):
        read_bundle(altered)
    with pytest.raises(ConfigError, match="temperature"):
        EnsemblePredictor(read_bundle(path).members, temperature=0.0)
