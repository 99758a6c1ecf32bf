"""`zooens.progress`: where bars are drawn, the ETA by unit kind, plain lines for a log."""

from __future__ import annotations

import io

from zooens.pipeline import UnitKey
from zooens.progress import (
    BARS,
    LINES,
    UnitProgress,
    display,
    estimate_eta,
    format_eta,
    inner_bars,
    unit_kind,
    unit_label,
)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal_that_can_move_its_cursor():
    assert display(_Tty(), {"TERM": "xterm-256color"}) == BARS
    assert display(_Tty(), {"TERM": "dumb"}) == LINES
    assert display(io.StringIO(), {"TERM": "xterm"}) == LINES  # a pipe, a file, a CI log
    closed = io.StringIO()
    closed.close()
    assert display(closed, {}) == LINES
    assert inner_bars(False) is False


def test_eta_adds_the_mean_duration_of_each_remaining_units_kind():
    durations = {"embed": [2.0, 4.0], "finetune:linear": [10.0], "finetune:film": [60.0, 80.0]}
    remaining = ["embed", "finetune:linear", "finetune:linear", "finetune:film", "ensemble"]
    assert estimate_eta(remaining, {**durations, "ensemble": [1.0]}) == (3.0 + 2 * 10.0 + 70.0 + 1.0, 0)
    # a kind never timed yet is not guessed from the other kinds' pace: the rest is a lower bound
    assert estimate_eta(remaining, durations) == (3.0 + 2 * 10.0 + 70.0, 1)
    assert estimate_eta(["finetune:film"], {"embed": [2.0]}) == (0.0, 1)
    assert estimate_eta([], {}) == (0.0, 0)
    eta = [format_eta(e) for e in ((31, 0), (725, 0), (3729, 0), (31, 2), (0.0, 3), (0.0, 0))]
    assert eta == ["0:31", "12:05", "1:02:09", "at least 0:31", "?", "0:00"]


def test_kinds_and_labels_of_units():
    ft = UnitKey.finetune("resnet18", "linear", 1.0, 200)
    assert unit_kind(ft) == "finetune:linear" and unit_kind(UnitKey.embed("m")) == "embed"
    assert unit_label(ft) == "fine-tune resnet18 linear lr=1 steps=200"
    assert unit_label(UnitKey.ensemble()) == "build the ensemble"


def test_a_resumed_job_times_only_the_units_run_here_and_writes_plain_lines():
    out = io.StringIO()
    planned = ["embed"] * 3 + ["finetune:linear"] * 4 + ["ensemble"]
    progress = UnitProgress(planned, desc="job 1", stream=out, mode=LINES)
    progress.skip("embed", 3, label="embed")  # done by an earlier process: counted, never timed
    assert progress.durations == {}
    progress.done("finetune:linear", "fine-tune a linear lr=1 steps=200", seconds=5.0)
    assert progress.eta() == (3 * 5.0, 1)  # the ensemble was never timed
    progress.done("finetune:linear", "fine-tune b linear lr=1 steps=200", seconds=7.0)
    assert progress.eta() == (2 * 6.0, 1)
    progress.durations["ensemble"].append(1.0)
    assert progress.eta() == (2 * 6.0 + 1.0, 0)
    progress.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text.splitlines() == [
        "[3/8] embed: 3 already done",
        "[4/8] fine-tune a linear lr=1 steps=200 done in 5.0 s (ETA at least 0:15)",
        "[5/8] fine-tune b linear lr=1 steps=200 done in 7.0 s (ETA at least 0:12)",
    ]


def test_disabled_progress_writes_nothing():
    out = io.StringIO()
    progress = UnitProgress(["embed"], desc="fit", enabled=False, stream=out, mode=LINES)
    progress.done("embed", "embed and rank m")
    assert out.getvalue() == ""


def test_embedding_reports_images_done_to_the_listener_in_its_context(zooens_home):
    """`embed_split` tells `report_inner` after every batch; an `inner_sink` hears it, and only inside its block."""
    import numpy as np

    from tests.service._tiny import register_tiny_zoo
    from zooens.progress import inner_sink
    from zooens.selection.datasets import Split
    from zooens.selection.embed import embed_split
    from zooens.zoo import create_model, data_config

    register_tiny_zoo(zooens_home / "weights", ["tiny-resnet"])
    split = Split("train", np.random.default_rng(0).integers(0, 255, (10, 32, 32, 3), dtype=np.uint8), np.zeros(10))
    model, config = create_model("tiny-resnet", num_classes=0), data_config("tiny-resnet", resolution=32)
    heard: list[tuple[int, int]] = []
    with inner_sink(lambda done, total: heard.append((done, total))):
        embed_split(model, config, split, device="cpu", batch_size=4, progress=False)
    assert heard == [(4, 10), (8, 10), (10, 10)]
    embed_split(model, config, split, device="cpu", batch_size=4, progress=False)
    assert len(heard) == 3  # outside the block nobody listens


def _runner(zooens_home):
    """A job's runner (`_Run`) on a submitted tiny job, claimed by worker "w", and the job's id."""
    from tests.service._tiny import register_tiny_zoo
    from zooens.pipeline import JobParams
    from zooens.selection.datasets import load_dataset
    from zooens.service.db.session import session_scope
    from zooens.service.jobs import register_dataset, submit_job
    from zooens.service.jobs.executors import LocalExecutor
    from zooens.service.jobs.run import _Ownership, _Run

    register_tiny_zoo(zooens_home / "weights", ["tiny-resnet"])
    with session_scope() as s:
        row = register_dataset(s, "digits", load_dataset("digits"))
        job_id = submit_job(s, row.id, "user", JobParams(top_k=1, strategies=["linear"]), claim_for="w").id
    return _Run(job_id, "w", LocalExecutor(), False, _Ownership.__new__(_Ownership)), job_id


def test_the_runner_writes_a_units_inner_progress_to_the_job(zooens_home, db_url):
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    run, job_id = _runner(zooens_home)
    run.remaining = ["embed:tiny-resnet"]
    report = run.inner_reporter("embed", ["embed:tiny-resnet"])
    report(64, 800)
    report(128, 800)  # within INNER_EVERY_SECONDS of the first: not written
    with session_scope() as s:
        assert registry.get_job(s, job_id).progress["embed"] == {
            "done": 0,
            "total": 1,
            "current": "embed:tiny-resnet",
            "inner": {"done": 64, "total": 800},
        }
    report(800, 800)  # the end of a split is always written
    with session_scope() as s:
        assert registry.get_job(s, job_id).progress["embed"]["inner"] == {"done": 800, "total": 800}


def test_the_runner_counts_the_fine_tune_runs_left_by_strategy(zooens_home, db_url):
    """The job page times each strategy by its own finished runs: the worker writes what is left of each."""
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    run, job_id = _runner(zooens_home)
    left = [
        "finetune:tiny-resnet:linear:lr=0.1:steps=5",
        "finetune:tiny-resnet:film:lr=0.01:steps=50",
        "finetune:tiny-resnet:linear:lr=1:steps=5",
    ]
    run.report_progress("finetune", ["finetune:tiny-resnet:linear:lr=0.1:steps=1", *left], left)
    run.report_progress("embed", ["embed:tiny-resnet"], [])
    with session_scope() as s:
        progress = registry.get_job(s, job_id).progress
    assert progress["finetune"] == {"done": 1, "total": 4, "current": left[0], "left": {"linear": 2, "film": 1}}
    assert "left" not in progress["embed"]
