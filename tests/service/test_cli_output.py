"""What a person reads in the terminal: a screenful at 80 columns, complete tables when piped,
messages printed as written (no Rich markup eaten), warnings only by default, true numbers."""

from __future__ import annotations

import json
import logging

import pytest
from typer.testing import CliRunner

from tests.service._tiny import register_tiny_zoo
from zooens import __version__
from zooens.service.cli import app

ARGS = [
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
    "--strategies",
    "linear",
    "--top-k",
    "2",
    "--max-test",
    "200",
]


@pytest.fixture
def tiny_home(zooens_home):
    register_tiny_zoo(zooens_home / "weights")
    return zooens_home


def _invoke(args, **env):
    return CliRunner().invoke(app, args, env={"COLUMNS": None, **env})


def test_the_main_job_fits_a_screen_at_80_columns_and_piped_output_is_complete(tiny_home, caplog):
    caplog.set_level(logging.DEBUG)
    narrow = _invoke(["-q", *ARGS], COLUMNS="80")
    assert narrow.exit_code == 0, narrow.output
    lines = narrow.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, narrow.stdout
    assert len(lines) <= 40, narrow.stdout
    assert "tiny-effnet" in narrow.stdout or "tiny-resnet" in narrow.stdout  # names whole, not `tiny-…`
    assert "…" not in narrow.stdout
    job_id = json.loads(_invoke(["jobs", "list", "--json"]).stdout)[0]["id"]

    wide = _invoke(["jobs", "show", str(job_id), "--wide"])  # piped: no width, nothing cut
    assert wide.exit_code == 0, wide.output
    header = next(line for line in wide.stdout.splitlines() if "update size" in line)
    assert "val acc" in header and "steps" in header
    assert "img/s" in wide.stdout and "LogME" in wide.stdout


def test_best_single_is_the_lowest_val_ce_run_and_durations_are_true(tiny_home):
    result = _invoke([*ARGS, "--json", "--quiet"])
    report = json.loads(result.stdout)
    runs = report["runs"]
    best = min(runs, key=lambda r: (r["val_ce"], r["id"]))
    assert report["best_single"]["id"] == best["id"]
    job = report["job"]
    assert job["duration_seconds"] is not None and 0 < job["duration_seconds"] <= report["seconds"] + 1
    shown = _invoke(["jobs", "show", str(job["id"])])
    assert f"best single run {100 * best['test_acc']:.1f}%" in shown.stdout
    assert "succeeded in 0.0 s" not in shown.stdout and "status: succeeded in" in shown.stdout


def test_without_a_test_split_the_summary_says_so(tiny_home, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (60, 16, 16, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 20)
    np.savez(tmp_path / "notest.npz", train_images=images, train_labels=labels)
    result = _invoke(
        [
            "run",
            "--dataset",
            str(tmp_path / "notest.npz"),
            "--zoo",
            "user",
            "--resolution",
            "32",
            "--strategies",
            "linear",
            "--steps",
            "20",
            "--lr",
            "0.1",
            "--top-k",
            "1",
            "--k",
            "3",
            "-q",
        ]
    )
    assert result.exit_code == 0, result.output
    assert "no test split" in result.stdout and "0.0%" not in result.stdout


def test_messages_keep_their_brackets_and_flags_read_as_flags():
    result = _invoke(["run", "--dataset", "no-such[vtab]", "-q"])
    assert result.exit_code == 2
    assert "no-such[vtab]" in result.output
    help_text = _invoke(["run", "--help"], COLUMNS="80").stdout
    assert "<bool>" not in help_text and "--json" in help_text
    version = _invoke(["--version"])
    assert version.exit_code == 0 and version.stdout.strip() == f"zooens {__version__}"


def test_warnings_only_by_default(tiny_home, caplog):
    caplog.set_level(logging.NOTSET)
    _invoke([*ARGS, "--json", "--quiet"])
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger("faiss.loader").getEffectiveLevel() >= logging.WARNING
    _invoke(["-v", "zoo", "list", "--json"])
    assert logging.getLogger().level == logging.INFO
    _invoke(["-q", "zoo", "list", "--json"])
    assert logging.getLogger().level == logging.ERROR


def test_every_command_prints_names_as_written_and_uncut_when_piped(zooens_home, tmp_path):
    from zooens.zoo.testing import register_random_model

    weights = register_random_model("plain", "test_resnet", tmp_path / "w").source.path
    refused = _invoke(["zoo", "add", "resnet[v2]", "--arch", "test_resnet", "--weights", str(weights)])
    assert refused.exit_code == 2 and "'resnet[v2]'" in refused.output  # the error keeps its brackets
    name = "resnet-v2-a-rather-long-model-name-for-a-table-cell-to-hold-whole.when_piped"
    added = _invoke(["zoo", "add", name, "--arch", "test_resnet", "--weights", str(weights)])
    assert added.exit_code == 0, added.output
    listed = _invoke(["zoo", "list", "--filter", "resnet-v2*"])  # piped: a wide table, nothing cut
    assert name in listed.stdout and "licence" in listed.stdout, listed.stdout
    assert f"Removed {name}." in _invoke(["zoo", "remove", name]).stdout
