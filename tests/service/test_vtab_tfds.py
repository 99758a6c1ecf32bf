"""The issue's "done when": `zooens vtab run --tasks all` over an export made under TFDS mock data.

All 19 tasks are exported by the real `export_task` from TFDS's mock data (see
tests/selection/vtab/test_tfds.py: 8 training, 4 validation and 4-24 test examples a task,
images at their native size or 224 px), then run as one batch with a tiny real timm model at 32
px, the linear strategy and few steps. Most classes have no training example at all, as in
VTAB-1k's SUN397; every task must finish and both tables must be written.
"""

from __future__ import annotations

import csv
import importlib.util

import pytest
from typer.testing import CliRunner

from tests.service._tiny import register_tiny_zoo
from zooens.selection.vtab.tasks import TASKS
from zooens.service.cli import app

if importlib.util.find_spec("tensorflow_datasets") is None:
    pytest.skip("the TFDS path needs `pip install 'zooens[vtab]'`", allow_module_level=True)

from tests.selection.vtab.test_tfds import export_all  # noqa: E402  (imports TensorFlow)

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
    "5",
    "--lr",
    "0.1",
    "--quiet",
]


@pytest.mark.slow
def test_all_19_tasks_exported_from_tfds_mock_data_run_and_are_tabled(zooens_home, tmp_path):
    register_tiny_zoo(zooens_home / "weights", ["tiny-resnet"])
    root, out = tmp_path / "vtab", tmp_path / "results"
    exported = export_all(root, train=16)
    assert sorted(exported) == sorted(t.name for t in TASKS)
    result = CliRunner().invoke(
        app, ["vtab", "run", "--data-root", str(root), "--tasks", "all", "--out", str(out), *FAST]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    tasks = {r["task"]: r for r in rows if not r["task"].startswith("mean:")}
    assert sorted(tasks) == sorted(t.name for t in TASKS)
    failed = {name: r.get("reason") for name, r in tasks.items() if r.get("status") != "done"}
    assert not failed, failed
    for r in tasks.values():
        assert 0.0 <= float(r["ensemble_test_acc"]) <= 1.0
    means = {r["task"]: r for r in rows if r["task"].startswith("mean:")}
    assert means["mean:mean"]["tasks"] == "19/19"
    assert {"mean:natural", "mean:specialized", "mean:structured"} <= set(means)
    md = (out / "results.md").read_text()
    assert all(t.name in md for t in TASKS)
