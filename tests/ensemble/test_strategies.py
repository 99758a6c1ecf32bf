"""`linear` and `full` end to end through zoo and selection, and the ensemble predictor.

Tiny timm models with random weights are registered as user models; the dataset is an
ImageFolder of colour-coded toy images with train/val/test splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("zooens.zoo.testing", reason="zoo/ is not written yet")
pytest.importorskip("zooens.selection.datasets", reason="selection/ is not written yet")
pytest.importorskip("zooens.selection.cache", reason="selection/ is not written yet")

from PIL import Image  # noqa: E402

from tests.ensemble._toy import toy_arrays  # noqa: E402
from zooens.ensemble import Artifact, EnsemblePredictor, GreedyEnsembleSelector, RunSpec, run_finetune  # noqa: E402

MODEL = "tiny-effnet-ens"
CLASSES = ["blue", "green", "red"]  # toy label 0 red, 1 green, 2 blue; folders sort alphabetically
RESOLUTION = 64


@pytest.fixture
def setup(zooens_home: Path, tmp_path: Path):
    from zooens.selection.cache import EmbeddingCache
    from zooens.selection.datasets import load_dataset
    from zooens.zoo.testing import register_random_model

    register_random_model(MODEL, "test_efficientnet", tmp_path / "weights")
    root = tmp_path / "data"
    for split, n, seed in (("train", 36, 0), ("val", 18, 1), ("test", 18, 2)):
        x, y = toy_arrays(n, seed)
        for i, (img, label) in enumerate(zip(x, y, strict=False)):
            folder = root / split / ["red", "green", "blue"][label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i}.png")
    ds = load_dataset(str(root))
    assert list(ds.classes) == CLASSES
    return ds, EmbeddingCache(tmp_path / "cache")


def images(ds, split: str) -> list[Image.Image]:
    s = ds.split(split)
    return [s.image(i) for i in range(len(s))]


def test_linear_run_is_accurate_reproducible_and_reloads(setup, tmp_path: Path) -> None:
    ds, cache = setup
    spec = RunSpec(model_name=MODEL, strategy="linear", lr=0.1, steps=150, seed=0, resolution=RESOLUTION, batch_size=16)
    result = run_finetune(spec, ds, cache=cache, progress=False)
    y_val = ds.split("val").labels
    assert result.val_proba.shape == (18, 3) and result.val_proba.dtype == np.float32
    assert result.test_proba is not None and result.test_proba.shape == (18, 3)
    assert result.val_acc == pytest.approx(np.mean(result.val_proba.argmax(1) == y_val))
    assert result.val_acc >= 0.9 and result.test_acc >= 0.9
    assert result.val_ce == pytest.approx(-np.mean(np.log(result.val_proba[np.arange(18), y_val])), rel=1e-5)
    assert result.updated_params == 3 * 256 + 3
    assert result.artifact.nbytes == (3 * 256 + 3 + 2 * 256) * 4
    assert result.artifact.config["model"] == MODEL and result.artifact.config["classes"] == CLASSES

    again = run_finetune(spec, ds, cache=cache, progress=False)  # embeddings now cached
    assert np.array_equal(again.val_proba, result.val_proba)

    result.artifact.save(tmp_path / "linear")
    predictor = EnsemblePredictor([(tmp_path / "linear", 1.0)])
    np.testing.assert_allclose(predictor.predict_proba(images(ds, "val")), result.val_proba, atol=1e-4)


def test_full_run_changes_every_weight_and_reloads(setup, tmp_path: Path) -> None:
    from zooens.zoo import create_model

    ds, cache = setup
    spec = RunSpec(model_name=MODEL, strategy="full", lr=0.01, steps=4, seed=0, resolution=RESOLUTION, batch_size=8)
    result = run_finetune(spec, ds, cache=cache, progress=False)
    start = create_model(MODEL, num_classes=0).state_dict()
    params = dict(create_model(MODEL, num_classes=0).named_parameters())
    tensors = result.artifact.tensors
    assert set(tensors) == {f"backbone.{k}" for k in start} | {"head.weight", "head.bias"}
    assert all(not torch.equal(tensors[f"backbone.{k}"], start[k]) for k in params)
    assert result.updated_params == sum(p.numel() for p in params.values()) + 3 * 256 + 3
    assert result.val_proba.shape == (18, 3)

    result.artifact.save(tmp_path / "full")
    predictor = EnsemblePredictor([(tmp_path / "full", 1.0)])
    np.testing.assert_allclose(predictor.predict_proba(images(ds, "val")), result.val_proba, atol=1e-4)


def test_predictor_weights_members_like_the_greedy_ensemble(setup, tmp_path: Path) -> None:
    ds, cache = setup
    runs = []
    for i, (lr, steps) in enumerate(((0.01, 20), (0.1, 100))):
        spec = RunSpec(
            model_name=MODEL, strategy="linear", lr=lr, steps=steps, seed=i, resolution=RESOLUTION, batch_size=16
        )
        runs.append(run_finetune(spec, ds, cache=cache, progress=False))
        runs[-1].artifact.save(tmp_path / f"run{i}")
    P = np.stack([r.val_proba for r in runs])
    selector = GreedyEnsembleSelector(max_size=5).fit(P, ds.split("val").labels)
    weights = [0.3, 0.7]
    predictor = EnsemblePredictor([(tmp_path / f"run{i}", w) for i, w in enumerate(weights)])
    assert len(predictor._backbones) == 1  # one backbone shared by both members
    got = predictor.predict_proba(images(ds, "test"))  # the artifacts are the refit probes: test, not val
    np.testing.assert_allclose(got, 0.3 * runs[0].test_proba + 0.7 * runs[1].test_proba, atol=1e-4)
    assert selector.val_loss_ <= min(r.val_ce for r in runs) + 1e-9
    loaded = Artifact.load(tmp_path / "run0")
    assert loaded.config["strategy"] == "linear"
