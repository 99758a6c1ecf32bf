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
    assert len(job["warnings"]) >= 1 and "only 20 images" in job["warnings"][0]
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
