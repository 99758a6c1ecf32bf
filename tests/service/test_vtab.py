"""`zooens vtab run` over the offline suite: tables with group means, resume, --force, --refit."""
from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from zooens.service.cli import app
from tests.service._tiny import register_tiny_zoo

TASKS = "offline-digits,offline-dsprites-location"


@pytest.fixture
def suite(zooens_home, tmp_path):
    from zooens.selection.vtab.offline import make_offline_suite

    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet", "tiny-resnet"])
    make_offline_suite(tmp_path / "suite", n_test=100, tasks=TASKS.split(","))
    return tmp_path / "suite"


def _run(suite, out, *extra):
    args = ["vtab", "run", "--data-root", str(suite), "--tasks", TASKS, "--zoo", "user", "--top-k", "2",
            "--resolution", "32", "--steps", "60", "--lr", "0.1,1", "--out", str(out), "--quiet", *extra]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def _jobs() -> int:
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    with session_scope() as s:
        return registry.list_jobs(s)[1]


@pytest.mark.slow
def test_runs_resumes_and_forces(suite, tmp_path):
    out = tmp_path / "out"
    _run(suite, out)
    rows = list(csv.DictReader((out / "results.csv").open()))
    tasks = [r for r in rows if not r["task"].startswith("mean:")]
    means = {r["task"]: r for r in rows if r["task"].startswith("mean:")}
    assert [r["task"] for r in tasks] == TASKS.split(",")
    assert set(means) == {"mean:natural", "mean:structured", "mean:mean"}
    for r in tasks:
        assert r["stand_in"] == "True" and 0 <= float(r["ensemble_test_acc"]) <= 1
    overall = sum(float(r["ensemble_test_acc"]) for r in tasks) / 2
    assert float(means["mean:mean"]["ensemble_test_acc"]) == pytest.approx(overall, abs=1e-4)
    md = (out / "results.md").read_text()
    assert "not VTAB" in md and "| offline-digits | natural |" in md and "**mean** (2)" in md
    assert _jobs() == 2

    _run(suite, out)  # resumes: both tasks done, nothing rerun
    assert _jobs() == 2
    (out / "tasks" / "offline-digits.json").unlink()  # as if interrupted after the first task
    _run(suite, out)
    assert _jobs() == 3
    _run(suite, out, "--force", "--refit")
    assert _jobs() == 5
    refit = list(csv.DictReader((out / "results.csv").open()))
    assert all(r["refit"] == "True" for r in refit if not r["task"].startswith("mean:"))
