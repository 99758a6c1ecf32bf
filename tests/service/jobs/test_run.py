"""`zooens run` end to end on tiny real models and the real digits data, stored in SQLite."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.service._tiny import register_tiny_zoo
from zooens.service.cli import app

RUN_ARGS = [
    "run",
    "--dataset",
    "digits",
    "--zoo",
    "user",
    "--resolution",
    "32",
    "--steps",
    "60",
    "--lr",
    "0.05,0.5",
    "--top-k",
    "2",
    "--taps",
    "auto",
    "--json",
    "--quiet",
]


def _run(args: list[str]):
    result = CliRunner().invoke(app, args)
    return result


@pytest.fixture
def tiny_home(zooens_home):
    register_tiny_zoo(zooens_home / "weights")
    return zooens_home


def test_run_end_to_end_and_second_run_embeds_nothing(tiny_home, db_url):
    from zooens.pipeline import JobParams, prepare_splits
    from zooens.selection.datasets import load_dataset
    from zooens.service import registry
    from zooens.service.db.session import session_scope
    from zooens.zoo import DEFAULT_TAPS, resolve_zoo

    first = _run(RUN_ARGS)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["job"]["status"] == "succeeded"
    ranking = report["ranking"]
    # `--taps auto`: each model and its last stages, ranked alike (embedded in one pass per model)
    ranked = resolve_zoo("user", taps=DEFAULT_TAPS)
    assert len(ranked) > 3 and sum(not ws.is_tap for ws in ranked) == 3
    assert [r["rank"] for r in ranking] == list(range(1, len(ranked) + 1))
    assert {r["model_name"] for r in ranking} == {ws.name for ws in ranked}
    knn = [r["knn_accuracy"] for r in ranking]
    assert knn == sorted(knn, reverse=True)
    assert all(0.0 <= a <= 1.0 for a in knn)
    # top-2 models x 2 learning rates x 1 step count (auto: linear here), and the concat probe over both
    strategies = [r["strategy"] for r in report["runs"]]
    assert strategies.count("linear") == 4 and strategies.count("concat") == 2 and len(strategies) == 6
    assert {r["model_name"] for r in report["runs"] if r["strategy"] == "concat"} == {ranking[0]["model_name"]}
    assert {r["model_name"] for r in report["runs"]} == {ranking[0]["model_name"], ranking[1]["model_name"]}
    ens = report["ensemble"]
    # every run is a cross-fitted probe, so the greedy selected on train's held-out rows and val's: there the
    # ensemble is never worse than the best single run (its first step), whose cross-entropy is recomputed here
    with session_scope() as s:
        stored = [np.load(r.probs_path) for r in registry.list_finetune_runs(s, report["job"]["id"])]
    ds = prepare_splits(load_dataset("digits"), JobParams())  # the job's default split and seed
    y_sel = np.concatenate([ds.split("train").labels, ds.split("val").labels])
    rows = [np.concatenate([p["train"], p["val"]]) for p in stored]
    singles = [-np.mean(np.log(np.clip(P[np.arange(len(y_sel)), y_sel], 1e-12, None))) for P in rows]
    assert ens["loss_curve"][0] == pytest.approx(min(singles), abs=1e-5)
    assert ens["loss_curve"][ens["size"] - 1] <= ens["loss_curve"][0] + 1e-9
    assert ens["test_acc"] is not None and ens["test_acc"] > 0.2  # digits, 10 classes
    assert abs(sum(m["weight"] for m in ens["members"]) - 1.0) < 1e-9
    assert all(r["updated_params"] > 0 and r["update_bytes"] > 0 for r in report["runs"])

    second = _run(RUN_ARGS)
    assert second.exit_code == 0, second.output
    report2 = json.loads(second.stdout)
    with session_scope() as s:
        units = registry.done_units(s, report2["job"]["id"])
    embed_results = [v for k, v in units.items() if k.startswith("embed:")]
    assert len(embed_results) == len(ranked) and all(r["cached"] for r in embed_results)
    # Reproducible: same ranking and the same ensemble.
    assert [r["model_name"] for r in report2["ranking"]] == [r["model_name"] for r in ranking]
    assert [r["knn_accuracy"] for r in report2["ranking"]] == knn
    assert report2["ensemble"]["val_ce"] == pytest.approx(ens["val_ce"], abs=1e-6)
    assert [(m["model_name"], m["strategy"], m["hparams"], m["weight"]) for m in report2["ensemble"]["members"]] == [
        (m["model_name"], m["strategy"], m["hparams"], m["weight"]) for m in ens["members"]
    ]


def test_ensemble_predictor_reproduces_stored_probabilities(tiny_home):
    from zooens.ensemble.predictor import EnsemblePredictor
    from zooens.pipeline import JobParams, prepare_splits
    from zooens.selection.datasets import load_dataset
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    result = _run(RUN_ARGS[:-1] + ["--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    with session_scope() as s:
        runs = {r.id: r for r in registry.list_finetune_runs(s, report["job"]["id"])}
        members = [(runs[m["run_id"]].artifact_path, m["weight"]) for m in report["ensemble"]["members"]]
        probs = {rid: np.load(r.probs_path) for rid, r in runs.items()}
    ds = prepare_splits(load_dataset("digits"), JobParams())  # the job's default split, seed and test subsample
    # the test split: the linear members' shipped probes are refit on train+val, so their stored val
    # probabilities are held out (cross-fitted) and their test probabilities the artifacts'
    test = ds.split("test")
    images = [test.image(i) for i in range(16)]
    predicted = EnsemblePredictor(members=members).predict_proba(images)
    expected = sum(
        w * probs[m["run_id"]]["test"][:16] for m, (_, w) in zip(report["ensemble"]["members"], members, strict=False)
    )
    np.testing.assert_allclose(predicted, expected, atol=1e-4)


def test_a_job_stored_in_the_earlier_layout_resumes_to_the_same_ensemble(tiny_home):
    """Units recorded before the pipeline's records (a run's result without its unit key, costs read
    from the records, not from side files) still resume: the ensemble stage reads them as records."""
    from sqlalchemy import delete, select

    from zooens.service.db import models
    from zooens.service.db.session import session_scope

    first = _run(RUN_ARGS)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    job_id = report["job"]["id"]
    with session_scope() as s:
        units = s.scalars(select(models.JobUnit).where(models.JobUnit.job_id == job_id)).all()
        for unit in units:
            if unit.kind == "finetune":
                unit.result = {k: v for k, v in unit.result.items() if k != "unit_key"}  # the earlier layout
            elif unit.kind == "ensemble":
                unit.status, unit.result, unit.finished_at = "pending", None, None
        s.execute(delete(models.Ensemble).where(models.Ensemble.job_id == job_id))
        job = s.get(models.Job, job_id)
        job.status, job.error, job.worker_id = "failed", "stopped before its ensemble", None
    resumed = _run(["jobs", "resume", str(job_id), "--json", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    again = json.loads(resumed.stdout)
    assert again["job"]["status"] == "succeeded" and again["job"]["id"] == job_id
    assert again["ensemble"]["val_ce"] == pytest.approx(report["ensemble"]["val_ce"])
    assert [(m["run_id"], m["weight"]) for m in again["ensemble"]["members"]] == [
        (m["run_id"], m["weight"]) for m in report["ensemble"]["members"]
    ]
    assert again["ensemble"]["gflops"] == pytest.approx(report["ensemble"]["gflops"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--zoo", "no-such-model*"], "no-such-model"),
        (["--strategies", "bogus"], "Unknown strategy"),
        (["--top-k", "0"], "top_k"),
        (["-o", "lora.bogus=1"], "Unknown lora option"),
        (["-o", "nope.x=1"], "unknown strategy"),
        (["-o", 'film.head="svm"'], "FiLM head"),
        (["-o", "lora"], "STRATEGY.KEY=VALUE"),
    ],
)
def test_bad_options_fail_clearly_and_record_nothing(tiny_home, args, message):
    from zooens.service import registry
    from zooens.service.db.session import session_scope, upgrade_to_head

    result = _run(["run", "--dataset", "digits", "--quiet"] + args)
    assert result.exit_code == 2
    assert message in result.output
    upgrade_to_head()
    with session_scope() as s:
        jobs, count = registry.list_jobs(s)
        assert count == 0


def _one_dog(tmp_path) -> str:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, counts in [("train", [("cat", 6), ("dog", 1)]), ("val", [("cat", 2), ("dog", 2)])]:
        for cls, n in counts:
            d = tmp_path / "data" / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return str(tmp_path / "data")


def test_single_example_class_is_refused_before_anything_is_recorded(tiny_home, tmp_path):
    from zooens.service import registry
    from zooens.service.db.session import session_scope, upgrade_to_head

    result = _run(["run", "--data", _one_dog(tmp_path), "--zoo", "user", "--quiet"])
    assert result.exit_code == 2
    assert "dog" in result.output and "--small-classes allow" in result.output
    upgrade_to_head()
    with session_scope() as s:
        assert registry.list_jobs(s)[1] == 0


@pytest.mark.parametrize("policy", ["warn", "allow"])
def test_single_example_class_runs_when_the_caller_says_so(tiny_home, tmp_path, caplog, policy):
    result = _run(
        [
            "run",
            "--data",
            _one_dog(tmp_path),
            "--zoo",
            "user",
            "--small-classes",
            policy,
            "--k",
            "3",
            "--top-k",
            "1",
            "--strategies",
            "linear",
            "--steps",
            "20",
            "--lr",
            "0.1",
            "--resolution",
            "32",
            "--json",
            "--quiet",
        ]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["job"]["status"] == "succeeded"
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "'dog' (1)" in r.getMessage()]
    assert bool(warned) == (policy == "warn")
