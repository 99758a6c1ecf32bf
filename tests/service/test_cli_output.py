"""What a person reads in the terminal: a screenful at 80 columns, complete tables when piped,
messages printed as written (no Rich markup eaten), warnings only by default, true numbers."""

from __future__ import annotations

import json
import logging
import re

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
    # the default job ranks the models and their layer taps: the head of the ranking, and where the rest are
    assert "more ranked entries, 2 fine-tune runs: see `zooens jobs show" in narrow.stdout and "@" in narrow.stdout
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
    assert "no test split" in result.stdout and not re.search(r"(?<![\d.])0\.0%", result.stdout)  # no test acc as 0


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


def _piped(args: list[str], home, cwd=None):
    """The real CLI in a process of its own, stdout and stderr pipes (a log, CI): what it writes there."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "COLUMNS", "LINES")}
    env.update(ZOOENS_HOME=str(home), HF_HUB_OFFLINE="1", TERM="xterm-256color")
    code = "from zooens.service.cli import app; app(prog_name='zooens')"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_piped_run_writes_one_plain_line_per_unit(tiny_home):
    """Bars on for real (no TQDM_DISABLE), output a pipe: no carriage return, no escape code, a short log with
    one line per unit that says what it was and how long it took."""
    done = _piped([a for a in ARGS], tiny_home)
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    assert "\r" not in text and "\x1b" not in text, text[:2000]
    assert len(text.splitlines()) <= 60, text
    units = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert len(units) >= 5, done.stderr  # 3 embeddings, the runs, the ensemble
    assert any("embed and rank tiny-" in line and " done in " in line and "(ETA " in line for line in units)
    assert any("fine-tune tiny-" in line and " linear lr=0.1 steps=30 done in " in line for line in units)
    assert units[-1].endswith("build the ensemble done in " + units[-1].rsplit(" done in ", 1)[1])
    assert "%|" not in done.stderr  # no tqdm frame


def test_one_error_style_and_warnings_after_the_checks(tiny_home, tmp_path):
    import numpy as np

    bogus = _invoke(["run", "--bogus"])
    assert bogus.exit_code == 2 and "error: No such option: --bogus" in bogus.output
    assert "Error:" not in bogus.output and bogus.output.count("error:") == 1

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (60, 16, 16, 3), dtype=np.uint8)
    npz = tmp_path / "small.npz"
    np.savez(npz, train_images=images, train_labels=np.repeat(np.arange(3), 20))
    tiny = ["--zoo", "user", "--resolution", "32", "--strategies", "linear", "--steps", "5", "--lr", "0.1"]
    # the defaults n_train/n_val do not fit 60 images (a warning), and k=200 cannot run (an error): the error alone
    refused = _piped(["run", "--dataset", str(npz), *tiny, "--top-k", "1", "--k", "200"], tiny_home)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("error:") == 1 and "k=200" in refused.stderr
    assert "warning" not in refused.stderr.lower() and "Error:" not in refused.stderr

    ran = _piped(["run", "--dataset", str(npz), *tiny, "--top-k", "1", "--k", "3"], tiny_home)
    assert ran.returncode == 0, ran.stderr
    warnings = [line for line in ran.stderr.splitlines() if "warning" in line.lower()]
    assert warnings and all(line.startswith("warning: ") for line in warnings), ran.stderr
    assert "zooens.pipeline" not in ran.stderr and "WARNING" not in ran.stderr
    assert any("draws n_train=" in line for line in warnings), ran.stderr
    # the small val split: said once when the job is accepted, not again by its report
    assert (ran.stdout + ran.stderr).count("The validation split has only") == 1, ran.stdout + ran.stderr


def test_wide_keeps_every_name_on_one_line_and_no_two_columns_share_a_title(zooens_home, tmp_path):
    import numpy as np

    from zooens.zoo.testing import register_random_model

    name = "tiny-resnet-whose-name-is-far-too-long-for-a-narrow-column"
    register_random_model(name, "test_resnet", zooens_home / "weights")
    rng = np.random.default_rng(0)
    npz = tmp_path / "notest.npz"
    np.savez(npz, train_images=rng.integers(0, 255, (60, 16, 16, 3), dtype=np.uint8), train_labels=np.arange(60) % 3)
    args = ["run", "--dataset", str(npz), "--zoo", "user", "--resolution", "32", "--strategies", "linear"]
    args += ["--steps", "5", "--lr", "0.1", "--top-k", "1", "--k", "1", "--json", "-q"]
    ran = _invoke(args)
    assert ran.exit_code == 0, ran.output
    job_id = json.loads(ran.stdout)["job"]["id"]
    wide = _invoke(["jobs", "show", str(job_id), "--wide"], COLUMNS="80")
    assert wide.exit_code == 0, wide.output
    assert wide.stdout.count(name) >= 3, wide.stdout  # ranking, runs, ensemble, audit
    assert all(name in line for line in wide.stdout.splitlines() if "tiny-resnet-whose" in line), wide.stdout
    for line in wide.stdout.splitlines():
        if "┃" in line:  # a header row: every title once
            titles = [t.strip() for t in line.strip("┃ ").split("┃")]
            assert len(titles) == len(set(titles)), line
    narrow = _invoke(["jobs", "show", str(job_id)], COLUMNS="80")
    assert narrow.exit_code == 0 and max(len(line) for line in narrow.stdout.splitlines()) <= 80


def test_zoo_list_never_squeezes_a_column_to_nothing():
    for columns in ("80", "120"):
        listed = _invoke(["zoo", "list", "--filter", "convnext*"], COLUMNS=columns)
        assert listed.exit_code == 0, listed.output
        lines = listed.stdout.splitlines()
        assert max(len(line) for line in lines) <= int(columns), listed.stdout
        assert "…" not in listed.stdout and "┃┃" not in listed.stdout and "││" not in listed.stdout
        header = next(line for line in lines if "┃" in line)
        shown = [t.strip() for t in header.strip("┃ ").split("┃")]
        assert all(shown) and len(set(shown)) == len(shown), header
        hidden = next((line for line in lines if line.startswith("Not shown at")), "")
        for title in ("name", "origin", "weights", "upstream", "input", "params", "GFLOPs", "IN top-1", "licence"):
            assert title in shown or title in hidden, (columns, header, hidden)
    wide = _invoke(["zoo", "list", "--filter", "convnext*", "--wide"], COLUMNS="80")
    assert "licence" in wide.stdout and "Not shown" not in wide.stdout
