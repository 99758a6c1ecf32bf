"""`k="auto"` through a real job: resolved from the training labels at ranking, recorded in `knn_scores.k` beside
kNN@1, shown by the report; `--k auto` and `--k 5` on the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.service._tiny import register_tiny_zoo
from zooens.pipeline.params import JobParams
from zooens.service.cli import app
from zooens.service.cli._params import job_params

# digits drawn down to 40 training examples (about 4 a class): auto is 3, not the former default 10
RUN_ARGS = [
    "run",
    "--dataset",
    "digits",
    "--zoo",
    "user",
    "--resolution",
    "32",
    "--n-train",
    "40",
    "--n-val",
    "20",
    "--steps",
    "5",
    "--lr",
    "0.1",
    "--taps",
    "none",
    "--top-k",
    "1",
    "--strategies",
    "linear",
    "--small-classes",
    "allow",
    "--json",
    "--quiet",
]


@pytest.fixture
def tiny_home(zooens_home):
    register_tiny_zoo(zooens_home / "weights", ["tiny-resnet", "tiny-convnext"])
    return zooens_home


def test_k_auto_resolves_at_ranking_and_is_recorded(tiny_home, db_url):
    from zooens.pipeline.splits import prepare_job_dataset
    from zooens.selection.datasets import load_builtin
    from zooens.selection.knn import auto_k
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    result = CliRunner().invoke(app, RUN_ARGS)  # k left at its default: auto
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["job"]["status"] == "succeeded" and report["job"]["params"]["k"] == "auto"
    with session_scope() as s:
        rows = registry.get_ranking(s, report["job"]["id"])
        scores = [(r.model_name, r.k, r.knn_accuracy, r.knn1_accuracy) for r in rows]
    # the training set the job drew (40 of digits, about 4 a class): auto is auto_k of its class sizes
    params = job_params({"n_train": 40, "n_val": 20, "small_classes": "allow"})
    train = prepare_job_dataset(load_builtin("digits"), params).split("train")
    assert len(train) == 40
    expected = auto_k(np.bincount(train.labels))
    assert expected < 10  # not the former default
    assert len(scores) == 2
    assert {k for _, k, _, _ in scores} == {expected}
    assert all(0.0 <= a <= 1.0 and a1 is not None and 0.0 <= a1 <= 1.0 for _, _, a, a1 in scores)
    assert [(r["model_name"], r["k"], r["knn1_accuracy"]) for r in report["ranking"]] == [
        (name, k, a1) for name, k, _, a1 in scores
    ]


def test_an_explicit_k_is_recorded_as_given(tiny_home, db_url):
    result = CliRunner().invoke(app, [*RUN_ARGS, "--k", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["job"]["params"]["k"] == 2
    assert {r["k"] for r in report["ranking"]} == {2}
    assert all(r["knn1_accuracy"] is not None for r in report["ranking"])


@pytest.mark.parametrize("given, k", [(None, "auto"), ("auto", "auto"), ("5", 5), ("1000", 1000)])
def test_the_k_option_takes_auto_and_ints(given, k):
    values = {} if given is None else {"k": given}
    assert job_params(values).k == k
    assert JobParams.model_fields["k"].default == "auto"


def test_cli_report_shows_knn1_and_the_k_used(tiny_home, db_url):
    result = CliRunner().invoke(app, [r for r in RUN_ARGS if r not in ("--json", "--quiet")] + ["--k", "3"])
    assert result.exit_code == 0, result.output
    assert "kNN@3 acc" in result.output and "kNN@1 acc" in result.output
