"""`zooens vtab run`: task selection, failures recorded, stand-ins kept out of VTAB, refit, tables.

The runs use tiny real timm models (random weights) at 32 px with the linear strategy and few
steps; VTAB-shaped tasks are written in the exported layout (data.npz per split, task.json).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.service._tiny import register_tiny_zoo
from zooens.ensemble import RunSpec
from zooens.errors import ConfigError
from zooens.selection.datasets import write_split_npz
from zooens.selection.vtab.tasks import TASKS
from zooens.service.cli import app
from zooens.service.vtab import (
    DONE,
    FAILED,
    MISSING,
    TaskResult,
    group_means,
    select_tasks,
    spec_from_run,
    task_kind,
    vtab_params,
    write_tables,
)

OFFLINE = "offline-digits,offline-dsprites-location"
FAST = [
    "--zoo",
    "user",
    "--top-k",
    "1",
    "--resolution",
    "32",
    "--strategies",
    "linear",
    "--steps",
    "20",
    "--lr",
    "0.1",
    "--quiet",
]


def write_task(
    root: Path,
    name: str,
    *,
    n_classes: int,
    n_train: int = 800,
    n_val: int = 200,
    n_test: int = 60,
    group: str = "natural",
    stand_in: bool = False,
    seed: int = 0,
) -> Path:
    """A task in the exported layout: 16x16 RGB images whose mean colour depends on the class; labels
    cycle through every class in test, and train800 may leave classes out (as SUN397's does)."""
    rng = np.random.default_rng(seed)
    classes = [f"c{i:03d}" for i in range(n_classes)]
    base = root / name
    for folder, n in (("train800", n_train), ("val200", n_val), ("test", n_test)):
        labels = rng.integers(0, n_classes, n) if folder != "test" else np.arange(n) % n_classes
        images = rng.integers(0, 60, (n, 16, 16, 3)) + (labels * 190 // max(n_classes - 1, 1))[:, None, None, None]
        write_split_npz(base / folder, images.clip(0, 255).astype(np.uint8), labels, classes)
    (base / "task.json").write_text(
        json.dumps(
            {
                "task": name,
                "group": group,
                "stand_in": stand_in,
                "source": "test",
                "classes": classes,
                "flip_preserves_label": False,
                "crop_preserves_label": True,
            }
        )
    )
    return base


def _run(root, out, tasks, *extra, ok=True):
    result = CliRunner().invoke(
        app, ["vtab", "run", "--data-root", str(root), "--tasks", tasks, "--out", str(out), *FAST, *extra]
    )
    if ok:
        assert result.exit_code == 0, result.output
    return result


def _rows(path: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    rows = list(csv.DictReader(path.open()))
    return (
        {r["task"]: r for r in rows if not r["task"].startswith("mean:")},
        {r["task"]: r for r in rows if r["task"].startswith("mean:")},
    )


def _jobs() -> int:
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    with session_scope() as s:
        return registry.list_jobs(s)[1]


# --------------------------------------------------------------------------------------
# Fast: selection, parameters, specs, tables


def test_all_means_the_19_vtab_tasks_never_stand_ins(tmp_path):
    from zooens.selection.vtab.offline import make_offline_suite

    make_offline_suite(tmp_path, n_test=20, tasks=["offline-digits"])
    write_task(tmp_path, "dtd", n_classes=3, n_train=6, n_val=3, n_test=3)
    assert select_tasks(tmp_path, "all") == [t.name for t in TASKS]
    assert select_tasks(tmp_path, "natural") == [t.name for t in TASKS if t.group == "natural"]
    assert select_tasks(tmp_path, "offline") == ["offline-digits"]
    assert select_tasks(tmp_path, "dtd,offline-digits") == ["dtd", "offline-digits"]
    assert task_kind(tmp_path, "offline-digits") == ("offline-natural", True)
    assert task_kind(tmp_path, "dtd") == ("natural", False)
    with pytest.raises(ConfigError, match="offline-nope"):
        select_tasks(tmp_path, "dtd,offline-nope")
    with pytest.raises(ConfigError, match="No offline stand-in"):
        select_tasks(tmp_path / "offline-digits", "offline")


def test_a_folder_with_a_vtab_name_that_says_stand_in_is_a_stand_in(tmp_path):
    write_task(tmp_path, "svhn", n_classes=3, n_train=6, n_val=3, n_test=3, stand_in=True)
    assert task_kind(tmp_path, "svhn") == ("offline-natural", True)


def test_vtab_params_resize_and_allow_unless_chosen():
    from zooens.pipeline import JobParams

    p = vtab_params(JobParams(top_k=2))
    assert (p.preprocessing, p.small_classes, p.top_k) == ("resize", "allow", 2)
    assert vtab_params(JobParams(preprocessing="model")).preprocessing == "model"


def test_vtab_without_refit_keeps_every_run_a_train800_model():
    """`--no-refit` reports models trained on train800: the probes that refit inside a job by default do not, unless
    the caller set `refit` themselves; with refit the job's parameters are left as they are."""
    from zooens.pipeline import JobParams

    p = vtab_params(JobParams(), refit=False)  # strategies auto (linear on a CPU) and concat
    assert p.strategy_options == {"linear": {"refit": False}, "concat": {"refit": False}}
    assert vtab_params(JobParams(), refit=True).strategy_options == {}
    mine = vtab_params(JobParams(strategies=["linear"], strategy_options={"linear": {"refit": True}}), refit=False)
    assert mine.strategy_options == {"linear": {"refit": True}}
    assert vtab_params(JobParams(strategies=["full"]), refit=False).strategy_options == {}


def test_spec_from_run_keeps_strategy_options():
    spec = RunSpec(
        model_name="m",
        strategy="lora",
        lr=0.01,
        steps=7,
        seed=3,
        resolution=32,
        batch_size=16,
        options={"rank": 4},
        augmentation="flip",
        preprocessing="resize",
    ).validate()
    hparams = {**spec.hparams, "strategy_requested": "auto"}
    assert spec_from_run("m", "lora", hparams) == spec


def test_a_concat_run_trains_again_at_its_chosen_c_over_its_models():
    hparams = {
        "lr": 1.0,
        "steps": 200,
        "seed": 0,
        "resolution": 32,
        "batch_size": 64,
        "augmentation": "none",
        "preprocessing": "model",
        "models": ["m", "n"],
        "solver": "lbfgs",
        "C": 0.3,
        "c_grid": [0.1, 0.3, 1.0],
        "c_selection": "val_ce",
        "val_ce_path": [0.9, 0.8, 0.85],
        "passes": [{"key": "m|res=32|prep=model", "gflops": 1.0, "params": 10, "latency_ms": 1.0}],
    }
    spec = spec_from_run("m", "concat", hparams)
    assert spec.options == {"models": ["m", "n"], "c_grid": [0.3], "refit": False}


def _result(task, group, acc, *, stand_in=False, status=DONE):
    done = status == DONE
    return TaskResult(
        task=task,
        group=group,
        stand_in=stand_in,
        status=status,
        reason="" if done else "DatasetError: broken",
        ensemble_test_acc=acc if done else None,
        best_single_test_acc=acc if done else None,
        knn_top1_test_acc=acc if done else None,
        ensemble_size=1 if done else None,
        updated_params=10 if done else None,
        preprocessing="resize",
        seconds=1.0,
    )


def test_tables_keep_stand_ins_out_of_vtab_means_and_count_tasks(tmp_path):
    results = [
        _result("dtd", "natural", 0.5),
        _result("svhn", "natural", None, status=FAILED),
        _result("eurosat", "specialized", 0.9),
        _result("dmlab", "structured", None, status=MISSING),
        _result("offline-digits", "offline-natural", 0.0, stand_in=True),
        _result("offline-dsprites-location", "offline-structured", 0.1, stand_in=True),
    ]
    written = write_tables(results, tmp_path)
    assert tmp_path / "results.csv" in written and tmp_path / "results-offline.csv" in written
    tasks, means = _rows(tmp_path / "results.csv")
    assert set(tasks) == {"dtd", "svhn", "eurosat", "dmlab"}
    assert tasks["svhn"]["status"] == "failed" and tasks["svhn"]["reason"] == "DatasetError: broken"
    assert means["mean:natural"]["tasks"] == "1/2" and float(means["mean:natural"]["ensemble_test_acc"]) == 0.5
    assert means["mean:mean"]["tasks"] == "2/4"
    assert float(means["mean:mean"]["ensemble_test_acc"]) == pytest.approx(0.7)
    assert all(m["stand_in"] == "False" for m in means.values())
    off_tasks, off_means = _rows(tmp_path / "results-offline.csv")
    assert set(off_tasks) == {"offline-digits", "offline-dsprites-location"}
    assert set(off_means) == {"mean:offline-natural", "mean:offline-structured", "mean:mean"}
    assert all(m["stand_in"] == "True" for m in off_means.values())
    md = (tmp_path / "results.md").read_text()
    assert "offline" not in md
    assert "natural (1/2)" in md and "all (2/4)" in md and "- svhn: DatasetError: broken" in md
    assert "Missing" in md and "dmlab" in md and "covers 2 of the 19" in md
    assert max(len(line) for line in md.splitlines()) <= 80
    assert "NOT VTAB" in (tmp_path / "results-offline.md").read_text()


def test_the_reference_mean_only_beside_all_19_tasks():
    from zooens.selection.vtab.reference import REFERENCE_MEAN

    some = [_result(t.name, t.group, 0.5) for t in TASKS[:5]]
    assert group_means(some, stand_in=False)[-1]["reference"] is None
    every = [_result(t.name, t.group, 0.5) for t in TASKS]
    assert group_means(every, stand_in=False)[-1]["reference"] == REFERENCE_MEAN
    one_failed = [*every[:-1], _result(TASKS[-1].name, TASKS[-1].group, None, status=FAILED)]
    assert group_means(one_failed, stand_in=False)[-1]["reference"] is None


# --------------------------------------------------------------------------------------
# Slow: real jobs


@pytest.fixture
def tiny_zoo(zooens_home):
    register_tiny_zoo(zooens_home / "weights", ["tiny-resnet"])
    return zooens_home


@pytest.mark.slow
def test_sun397_shaped_task_runs_and_refits_on_1000(tiny_zoo, tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    write_task(root, "sun397", n_classes=397, n_test=397)
    train = np.load(root / "sun397" / "train800" / "data.npz")["labels"]
    assert np.bincount(train, minlength=397).min() < 2  # classes with one or no training example
    _run(root, out, "sun397")
    record = json.loads((out / "tasks" / "sun397.json").read_text())
    assert record["status"] == "done", record["reason"]
    assert (record["refit"], record["n_train"], record["preprocessing"]) == (True, 1000, "resize")
    tasks, means = _rows(out / "results.csv")
    assert tasks["sun397"]["refit"] == "True" and 0 <= float(tasks["sun397"]["ensemble_test_acc"]) <= 1
    assert means["mean:natural"]["tasks"] == "1/1"
    md = (out / "results.md").read_text()
    assert "Refit: on" in md and "Preprocessing: resize" in md


@pytest.mark.slow
def test_broken_task_is_recorded_others_finish_rerun_retries(tiny_zoo, tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    write_task(root, "eurosat", n_classes=10, group="specialized")
    write_task(root, "svhn", n_classes=10, seed=1)
    good = (root / "svhn" / "train800" / "data.npz").read_bytes()
    (root / "svhn" / "train800" / "data.npz").write_bytes(good[: len(good) // 2])  # truncated
    result = _run(root, out, "svhn,eurosat", "--no-refit")
    assert "1 done, 1 failed, 0 missing" in result.output
    tasks, means = _rows(out / "results.csv")
    assert tasks["svhn"]["status"] == "failed" and tasks["svhn"]["reason"]
    assert tasks["eurosat"]["status"] == "done"
    assert (tasks["eurosat"]["refit"], tasks["eurosat"]["n_train"]) == ("False", "800")
    assert means["mean:natural"]["tasks"] == "0/1" and means["mean:natural"]["ensemble_test_acc"] == ""
    assert means["mean:mean"]["tasks"] == "1/2"
    assert float(means["mean:mean"]["ensemble_test_acc"]) == pytest.approx(
        float(tasks["eurosat"]["ensemble_test_acc"]), abs=1e-4
    )
    assert "Refit: off" in (out / "results.md").read_text()
    jobs = _jobs()
    (root / "svhn" / "train800" / "data.npz").write_bytes(good)  # fixed
    _run(root, out, "svhn,eurosat", "--no-refit")
    tasks, means = _rows(out / "results.csv")
    assert tasks["svhn"]["status"] == "done" and means["mean:mean"]["tasks"] == "2/2"
    assert _jobs() == jobs + 1  # svhn retried, eurosat skipped


@pytest.mark.slow
def test_offline_never_in_a_vtab_mean_in_one_batch(tiny_zoo, tmp_path):
    from zooens.selection.vtab.offline import make_offline_suite

    root, out = tmp_path / "data", tmp_path / "out"
    make_offline_suite(root, n_test=60, tasks=["offline-digits"])
    write_task(root, "dtd", n_classes=5)
    _run(root, out, "dtd,offline-digits", "--no-refit")
    tasks, means = _rows(out / "results.csv")
    assert list(tasks) == ["dtd"]
    assert set(means) == {"mean:natural", "mean:mean"}
    for m in means.values():
        assert m["tasks"] == "1/1"
        assert float(m["ensemble_test_acc"]) == pytest.approx(float(tasks["dtd"]["ensemble_test_acc"]), abs=1e-4)
    off_tasks, off_means = _rows(out / "results-offline.csv")
    assert list(off_tasks) == ["offline-digits"] and off_tasks["offline-digits"]["group"] == "offline-natural"
    assert set(off_means) == {"mean:offline-natural", "mean:mean"}
    assert "offline" not in (out / "results.md").read_text()


@pytest.mark.slow
def test_runs_resumes_and_forces(tiny_zoo, tmp_path):
    from zooens.selection.vtab.offline import make_offline_suite

    suite, out = tmp_path / "suite", tmp_path / "out"
    make_offline_suite(suite, n_test=60, tasks=OFFLINE.split(","))
    _run(suite, out, "offline", "--no-refit")
    tasks, means = _rows(out / "results-offline.csv")
    assert list(tasks) == OFFLINE.split(",") and not (out / "results.csv").exists()
    assert set(means) == {"mean:offline-natural", "mean:offline-structured", "mean:mean"}
    overall = sum(float(r["ensemble_test_acc"]) for r in tasks.values()) / 2
    assert float(means["mean:mean"]["ensemble_test_acc"]) == pytest.approx(overall, abs=1e-4)
    assert _jobs() == 2

    _run(suite, out, "offline", "--no-refit")  # resumes: both tasks done, nothing rerun
    assert _jobs() == 2
    (out / "tasks" / "offline-digits.json").unlink()  # as if interrupted after the first task
    _run(suite, out, "offline", "--no-refit")
    assert _jobs() == 3
    _run(suite, out, "offline", "--force")  # refit is the default
    assert _jobs() == 5
    tasks, _ = _rows(out / "results-offline.csv")
    assert all(r["refit"] == "True" and r["n_train"] == "1000" for r in tasks.values())


def test_keyboard_interrupt_stops_the_batch(tmp_path, monkeypatch):
    import zooens.service.vtab as vtab

    write_task(tmp_path, "dtd", n_classes=3, n_train=6, n_val=3, n_test=3)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(vtab, "run_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        vtab.run_vtab(tmp_path, ["dtd"], tmp_path / "out")
    assert not (tmp_path / "out" / "tasks" / "dtd.json").exists()


def test_plot_written_or_skipped_with_a_notice(tmp_path, caplog):
    import importlib.util

    write_tables([_result("dtd", "natural", 0.5), _result("svhn", "natural", None, status=FAILED)], tmp_path)
    if importlib.util.find_spec("matplotlib") is None:
        assert not (tmp_path / "results.png").exists()
        assert "matplotlib is not installed" in caplog.text
    else:
        assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_a_linear_run_replays_at_its_chosen_c_alone():
    """A refit trains on train+val, so it cannot choose C on val again: a linear run's spec keeps its chosen C as the
    whole grid and drops what the run recorded about the choice."""
    hparams = {
        **RunSpec(model_name="m", strategy="linear", lr=1.0, steps=200, batch_size=64).validate().hparams,
        "solver": "lbfgs",
        "C": 0.1,
        "c_grid": [0.01, 0.1, 1.0],
        "c_selection": "val_ce",
        "val_ce_path": [0.9, 0.5, 0.7],
    }
    spec = spec_from_run("m", "linear", hparams)
    assert spec.options == {"solver": "lbfgs", "c_grid": [0.1], "refit": False}  # train+val already
    sgd = {k: v for k, v in hparams.items() if k not in ("C", "c_grid", "c_selection", "val_ce_path")}
    assert spec_from_run("m", "linear", {**sgd, "solver": "sgd", "momentum": 0.9}).options == {
        "solver": "sgd",
        "momentum": 0.9,
    }
