"""The CLI and the registry it reads: a read never makes a registry, an empty answer says where it looked,
datasets are named by name wherever an id is taken, and `jobs list` says what a job gave."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from tests.service._tiny import register_tiny_zoo
from zooens.service.cli import app

TINY_RUN = ["--zoo", "user", "--resolution", "32", "--strategies", "linear", "--steps", "5", "--lr", "0.1"]
TINY_RUN += ["--top-k", "1", "--k", "3", "--json", "-q"]


def _invoke(args, **env):
    return CliRunner().invoke(app, args, env={"COLUMNS": None, **env})


def _npz(path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (48, 16, 16, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, train_images=images, train_labels=labels, test_images=images[:12], test_labels=labels[:12])
    return str(path)


def test_reads_never_make_a_registry_and_say_where_they_looked(zooens_home):
    db = zooens_home / "zooens.db"
    listed = _invoke(["jobs", "list"])
    assert listed.exit_code == 0, listed.output
    assert "No registry at sqlite:///" in listed.stderr and str(db) in listed.stderr
    assert "ZOOENS_HOME" in listed.stderr and "ZOOENS_DATABASE_URL" in listed.stderr
    assert json.loads(_invoke(["jobs", "list", "--json"]).stdout) == []
    datasets = _invoke(["datasets", "list"])
    assert datasets.exit_code == 0 and "digits" in datasets.stdout and "No registry at" in datasets.stdout
    for args in (["jobs", "show", "3"], ["jobs", "cancel", "3"], ["datasets", "delete", "shapes"]):
        refused = _invoke(args)
        assert refused.exit_code == 2, (args, refused.output)
        assert refused.output.count("error:") == 1 and "No registry at" in refused.output, refused.output
    narrow = _invoke(["jobs", "show", "3"], COLUMNS="50")  # word-wrapped at the width, `error:` once
    lines = narrow.stderr.splitlines()
    assert len(lines) > 3 and max(len(line) for line in lines) <= 50 and narrow.stderr.count("error:") == 1
    assert "ZOOENS_DATABASE_URL=URL," in narrow.stderr.split()  # words whole
    tokens = _invoke(["tokens", "list"])
    assert tokens.exit_code == 0 and "No registry at" in tokens.stderr
    assert _invoke(["datasets", "show", "digits", "--json"]).exit_code == 0  # a built-in needs no registry
    assert not db.exists()

    assert _invoke(["db", "upgrade"]).exit_code == 0
    empty = _invoke(["jobs", "list"])
    assert empty.exit_code == 0 and f"No jobs in the registry at sqlite:///{db}" in empty.stdout.replace("\n", "")
    unknown = _invoke(["jobs", "show", "42"])
    assert unknown.exit_code == 2 and "No job with id 42" in unknown.output


def test_datasets_by_name_and_jobs_list_says_what_each_job_gave(zooens_home, tmp_path):
    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    shapes = _npz(tmp_path / "a" / "shapes.npz", seed=0)
    ran = _invoke(["run", "--dataset", shapes, *TINY_RUN])
    assert ran.exit_code == 0, ran.output
    job = json.loads(ran.stdout)["job"]

    shown = _invoke(["datasets", "show", "shapes", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["source"] == shapes
    by_name = json.loads(_invoke(["jobs", "list", "--dataset", "shapes", "--json"]).stdout)
    assert [r["id"] for r in by_name] == [job["id"]] and by_name[0]["dataset"] == "shapes"
    assert by_name[0]["strategies"] == ["linear"] and by_name[0]["test_acc"] is not None
    assert json.loads(_invoke(["jobs", "list", "--dataset", str(job["dataset_id"]), "--json"]).stdout) == by_name

    table = _invoke(["jobs", "list"], COLUMNS="120")
    assert table.exit_code == 0, table.output
    header = next(line for line in table.stdout.splitlines() if " id " in line)
    for title in ("dataset", "status", "accuracy", "duration", "strategies"):
        assert title in header, table.stdout
    row = next(line for line in table.stdout.splitlines() if "shapes" in line)
    assert "linear" in row and "% test" in row and " s " in row, table.stdout

    unknown = _invoke(["jobs", "list", "--dataset", "shapez"])
    assert unknown.exit_code == 2 and "No registered dataset is named 'shapez'" in unknown.output
    assert "did you mean 'shapes'" in unknown.output and unknown.output.count("error:") == 1

    # two datasets of one name: the name alone is refused, and the message gives both ids
    from zooens.selection.datasets import load_dataset
    from zooens.service.db.session import session_scope
    from zooens.service.jobs import register_dataset

    other = _npz(tmp_path / "b" / "shapes.npz", seed=1)
    with session_scope() as s:
        second = register_dataset(s, other, load_dataset(other)).id
    ambiguous = _invoke(["datasets", "show", "shapes"])
    assert ambiguous.exit_code == 2 and "2 registered datasets are named 'shapes'" in ambiguous.output
    assert f"{job['dataset_id']}, {second}" in ambiguous.output
    assert json.loads(_invoke(["datasets", "show", str(second), "--json"]).stdout)["source"] == other
