"""`zooens.pipeline.fit`: the whole job in memory, checked before any work, on tiny real models."""

from __future__ import annotations

import numpy as np
import pytest

from tests.service._tiny import register_tiny_zoo
from zooens.errors import ConfigError, DatasetError, UnknownModelError
from zooens.pipeline import FittedEnsemble, JobParams, fit
from zooens.selection.datasets import ImageDataset, load_dataset

PARAMS = dict(
    top_k=2, strategies=["linear"], learning_rates=[0.1], steps=[5], resolution=32, n_train=100, n_val=40, taps="none"
)


def _digits(n: int = 150) -> ImageDataset:
    ds = load_dataset("digits")
    train, test = ds.split("train"), ds.split("test")
    return ImageDataset("d", ds.classes, {"train": train.subset(np.arange(n)), "test": test.subset(np.arange(30))})


def test_what_can_be_known_first_is_checked_before_any_work(zooens_home):
    register_tiny_zoo(zooens_home / "weights", ["tiny-resnet"])
    ds = _digits()
    with pytest.raises(ConfigError, match="k=200"):
        fit(ds, JobParams(**{**PARAMS, "k": 200}), zoo="user", progress=False)
    with pytest.raises(ConfigError, match="n_train=500"):
        fit(ds, JobParams(**{**PARAMS, "n_train": 500}), zoo="user", progress=False)
    with pytest.raises(UnknownModelError):
        fit(ds, JobParams(**PARAMS), zoo="no-such-model*", progress=False)
    no_train = ImageDataset("d", ds.classes, {"test": ds.split("test")})
    with pytest.raises(DatasetError, match="no 'train' split"):
        fit(no_train, JobParams(**PARAMS), zoo="user", progress=False)
    assert not list(zooens_home.rglob("*.npy"))  # nothing was decoded or embedded


def test_fit_in_memory_ranks_fine_tunes_and_ensembles(zooens_home):
    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet", "tiny-resnet"])
    fitted = fit(_digits(), JobParams(**PARAMS, audit_ranking=0), zoo="user", progress=False)
    assert isinstance(fitted, FittedEnsemble) and fitted.job_id is None
    knn = [r.knn_accuracy for r in fitted.ranking_]
    assert [r.rank for r in fitted.ranking_] == [1, 2] and knn == sorted(knn, reverse=True)
    assert {r.unit_key for r in fitted.runs_} == {
        f"finetune:{m}:linear:lr=0.1:steps=5" for m in ("tiny-effnet", "tiny-resnet")
    }
    assert all(r.artifact_path is None and r.update_bytes > 0 and r.gflops > 0 for r in fitted.runs_)
    assert sum(m.weight for m in fitted.ensemble_.members) == pytest.approx(1.0)
    assert fitted.ensemble_.val_ce <= min(r.val_ce for r in fitted.runs_) + 1e-9
    board = fitted.leaderboard()
    assert board.iloc[0]["model"] == "ensemble" and list(board.iloc[1:]["val_ce"]) == sorted(board.iloc[1:]["val_ce"])
    proba = fitted.predict_proba(_digits().split("test").images[:4])
    assert proba.shape == (4, len(fitted.classes_)) and np.allclose(proba.sum(1), 1.0, atol=1e-5)
    assert fitted.ranking_audit_ is not None and fitted.ranking_audit_["audited_models"] == 2
    assert "job_id" not in repr(fitted) and "members=" in repr(fitted)


def test_the_packaged_zoo_ranks_two_upstreams_offline(zooens_home):
    """`packaged`: the EfficientNet-Lites and HED's VGG16, real weights from their packages, no network."""
    fitted = fit(_digits(120), JobParams(**{**PARAMS, "n_train": 80}, audit_ranking=0), zoo="packaged", progress=False)
    ranked = {r.model_name for r in fitted.ranking_}
    assert ranked == {
        "tf_efficientnet_lite0.in1k",
        "tf_efficientnet_lite1.in1k",
        "tf_efficientnet_lite2.in1k",
        "hed_vgg16.bsds500",
    }
    assert all(0.0 <= r.knn_accuracy <= 1.0 for r in fitted.ranking_)
    assert len(fitted.runs_) == 2 and len(fitted.predict(_digits().split("test").images[:3])) == 3
