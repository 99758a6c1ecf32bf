"""`film` end to end: episodic training through `run_finetune`, FiT's defaults, the head configured
on every training example, the FiLM and head update reported, and the artifact reloading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.ensemble._toy import toy_arrays
from zooens.ensemble import EnsemblePredictor, RunSpec, run_finetune
from zooens.ensemble._registry import get_strategy

MODEL = "tiny-resnet-fit"


@pytest.fixture
def setup(zooens_home: Path, tmp_path: Path):
    from zooens.selection.cache import EmbeddingCache
    from zooens.selection.datasets import load_dataset
    from zooens.zoo.testing import register_random_model

    register_random_model(MODEL, "test_resnet", tmp_path / "weights")
    root = tmp_path / "data"
    for split, n, seed in (("train", 24, 0), ("val", 9, 1)):
        x, y = toy_arrays(n, seed)
        for i, (img, label) in enumerate(zip(x, y, strict=False)):
            folder = root / split / ["red", "green", "blue"][label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i}.png")
    return load_dataset(str(root)), EmbeddingCache(tmp_path / "cache")


def test_fits_defaults():
    sweep = get_strategy("film").default_sweep
    assert sweep.learning_rates == (0.0035,) and sweep.steps == (400,) and sweep.batch_size == 100


def test_film_run_trains_reports_and_reloads(setup, tmp_path: Path):
    ds, cache = setup
    spec = RunSpec(model_name=MODEL, strategy="film", lr=0.01, steps=3, seed=0, resolution=32, batch_size=8)
    result = run_finetune(spec, ds, cache=cache, progress=False)
    tensors = result.artifact.tensors
    film_keys = [k for k in tensors if k.startswith("backbone.")]
    assert len(film_keys) == 2 * 5  # test_resnet: 4 blocks + the final map, gamma and beta each
    assert "head.cov_weights" in tensors and tensors["head.cov_weights"].shape == (2,)  # lda: task, identity
    assert any(not torch.equal(tensors[k], torch.ones_like(tensors[k])) for k in film_keys if k.endswith("gamma"))
    n_film = sum(tensors[k].numel() for k in film_keys)
    assert result.updated_params == n_film + 2
    # the head's context at test time is every training example
    assert len(tensors["context_labels"]) == len(ds.split("train"))
    result.artifact.save(tmp_path / "film")
    val = ds.split("val")
    predicted = EnsemblePredictor([(tmp_path / "film", 1.0)]).predict_proba([val.image(i) for i in range(len(val))])
    np.testing.assert_allclose(predicted, result.val_proba, atol=1e-4)


def test_film_on_a_layer_tap_trains_and_reloads(setup, tmp_path: Path):
    """A layer tap (`model@layer`, a candidate of every default job) takes FiT like its model: FiLM on the
    blocks it runs, the Naive Bayes head on its pooled stage, and the artifact predicts as the run did."""
    ds, cache = setup
    tap = f"{MODEL}@layer3"
    spec = RunSpec(model_name=tap, strategy="film", lr=0.01, steps=3, seed=0, resolution=32, batch_size=8)
    result = run_finetune(spec, ds, cache=cache, progress=False)
    film_keys = [k for k in result.artifact.tensors if k.startswith("backbone.")]
    assert len(film_keys) == 2 * 4  # test_resnet up to layer3: 3 blocks + the last one's final map
    assert all(k.startswith("backbone.model.layer") for k in film_keys)
    result.artifact.save(tmp_path / "film-tap")
    val = ds.split("val")
    predicted = EnsemblePredictor([(tmp_path / "film-tap", 1.0)]).predict_proba([val.image(i) for i in range(len(val))])
    np.testing.assert_allclose(predicted, result.val_proba, atol=1e-4)
