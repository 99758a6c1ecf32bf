"""A tiny job through the CLI with a 20-image val split: the job records the small-val warning, the API's
report and `zooens jobs show` show it, and the ensemble carries its temperature and calibration metrics."""

from __future__ import annotations

import json
import logging

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
    "30",
    "--lr",
    "0.1",
    "--top-k",
    "1",
    "--n-train",
    "100",
    "--n-val",
    "20",
    "--max-test",
    "100",
    "--json",
    "--quiet",
]


@pytest.fixture
def tiny_home(zooens_home):
    register_tiny_zoo(zooens_home / "weights", ["tiny-resnet"])
    return zooens_home


def test_a_small_val_split_is_warned_about_end_to_end(tiny_home, db_url, caplog):
    from zooens.service import registry
    from zooens.service.db.session import session_scope
    from zooens.service.library import fitted_from_job

    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(app, RUN_ARGS)
    assert result.exit_code == 0, result.output
    assert any("only 20 images" in r.getMessage() for r in caplog.records)  # at submission
    report = json.loads(result.stdout)
    job = report["job"]
    assert job["status"] == "succeeded"
    assert sum("only 20 images" in w for w in job["warnings"]) == 1  # at submission and by the ensemble: once
    ens = report["ensemble"]
    assert 0.05 <= ens["temperature"] <= 20
    for key in ("val_nll", "val_brier", "val_ece", "test_nll", "test_brier", "test_ece"):
        assert ens[key] is not None and ens[key] >= 0, key
    assert ens["val_nll"] <= ens["val_ce"] + 1e-9
    assert ens["reliability"]["split"] == "test" and sum(b[0] for b in ens["reliability"]["bins"]) == 100
    with session_scope() as s:
        assert registry.get_job(s, job["id"]).warnings == job["warnings"]

    shown = CliRunner().invoke(app, ["jobs", "show", str(job["id"])])
    assert shown.exit_code == 0, shown.output
    assert "warning:" in shown.stdout and "only 20 images" in " ".join(shown.stdout.split())
    assert "temperature T =" in shown.stdout and "test calibrated: NLL" in shown.stdout

    fitted = fitted_from_job(job["id"])
    assert fitted.warnings_ == job["warnings"]
    assert fitted.ensemble_.temperature == pytest.approx(ens["temperature"])
    assert fitted.predictor.temperature == pytest.approx(ens["temperature"])


def test_submission_warnings_are_recorded_with_the_job_and_merged_once(tiny_home, db_url):
    """What the checks warn about at submission (k above a class, a small val split) is on the job from the
    start, not only in the server's log; the ensemble's own warnings join them, each once."""
    from zooens.pipeline import JobParams
    from zooens.selection.datasets import load_dataset
    from zooens.service import registry
    from zooens.service.db.session import session_scope
    from zooens.service.jobs import register_dataset, submit_job

    ds = load_dataset("digits")
    with session_scope() as s:
        row = register_dataset(s, "digits", ds)
        params = JobParams(k=15, n_train=100, n_val=20, top_k=1, strategies=["linear"], resolution=32)
        job = submit_job(s, row.id, "user", params)
        warnings = list(job.warnings or [])
    assert any("k=15 is more than" in w for w in warnings), warnings
    assert any("only 20 images" in w for w in warnings), warnings
    with session_scope() as s:
        small_val = next(w for w in warnings if "only 20 images" in w)
        registry.add_job_warnings(s, job.id, [small_val, "The ensemble's val cross-entropy is 1e-05"])
        assert registry.get_job(s, job.id).warnings == [*warnings, "The ensemble's val cross-entropy is 1e-05"]
