"""Every adapter as a strategy of a real job: runs, reports update sizes, predicts from its artifact."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from zooens.service.cli import app


@pytest.fixture
def tiny_zoo(zooens_home):
    from zooens.zoo.testing import register_random_model

    register_random_model("tiny-effnet", "test_efficientnet", zooens_home / "w")
    register_random_model("tiny-resnet", "test_resnet", zooens_home / "w")
    register_random_model("tiny-vit", "test_vit", zooens_home / "w")
    return zooens_home


def _run(args):
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--dataset",
            "digits",
            "--json",
            "--quiet",
            "--n-train",
            "200",
            "--n-val",
            "100",
            "--max-test",
            "100",
            *args,
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_cnn_job_with_every_strategy(tiny_zoo):
    from zooens.ensemble import Artifact, EnsemblePredictor
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    report = _run(
        [
            "--zoo",
            "tiny-effnet,tiny-resnet",
            "--top-k",
            "2",
            "--resolution",
            "32",
            "--strategies",
            "linear,patch,film,lora,aft",
            "--lr",
            "0.05",
            "--steps",
            "15",
        ]
    )
    runs = report["runs"]
    assert sorted({r["strategy"] for r in runs}) == ["aft", "film", "linear", "lora", "patch"]
    assert len(runs) == 10
    for r in runs:
        assert r["updated_params"] > 0 and r["update_bytes"] > 0 and np.isfinite(r["val_ce"])
    from zooens.pipeline import JobParams, prepare_job_dataset
    from zooens.selection.datasets import load_dataset

    # the test split: a linear run's shipped probe is fitted again on train+val (option refit), so its val
    # probabilities are held out (cross-fitted) and its test probabilities the artifact's
    test = prepare_job_dataset(load_dataset("digits"), JobParams(n_train=200, n_val=100, max_test=100)).split("test")
    images = [test.image(i) for i in range(8)]
    with session_scope() as s:
        rows = registry.list_finetune_runs(s, report["job"]["id"])
        for row in rows:
            art = Artifact.load(row.artifact_path)
            assert art.nbytes == row.update_bytes
            if row.strategy in ("patch", "lora"):
                # only the update is saved: far smaller than the whole model
                assert row.update_bytes < 0.5 * 4 * report["ranking"][0]["params"]
            # the saved update, re-applied to the base model, reproduces the run's test probabilities
            predicted = EnsemblePredictor(members=[(row.artifact_path, 1.0)]).predict_proba(images)
            np.testing.assert_allclose(predicted, np.load(row.probs_path)["test"][:8], atol=1e-4, err_msg=row.strategy)
    ens = report["ensemble"]
    assert ens["val_ce"] <= min(r["val_ce"] for r in runs) + 1e-9


@pytest.mark.slow
def test_kron_on_a_vit_from_the_catalogue_with_random_weights(tiny_zoo):
    args = ["--zoo", "tiny-vit", "--taps", "none", "--top-k", "1", "--strategies", "kron", "--lr", "0.05"]
    report = _run([*args, "--steps", "10"])  # the model itself, not a tap the ranking may put first
    (run,) = report["runs"]
    # KAdaptation's defaults (n = 32, r = 1) on a 64-wide, 6-block ViT: 2 x 32^3 shared A_i, per block and
    # projection 32 x (2 + 2) for u_i and v_i, plus the 10-class head
    assert run["strategy"] == "kron" and run["updated_params"] == 2 * 32**3 + 6 * 2 * 32 * 4 + 64 * 10 + 10
