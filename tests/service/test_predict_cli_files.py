"""`zooens predict` with several files: each image answered on its own (a bad one does not sink the batch),
named so that `zero/0.png` and `one/0.png` can be told apart, exit code 1 when one could not be read."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.service._tiny import fit_tiny, register_tiny_zoo
from zooens.selection.datasets import load_dataset
from zooens.service.cli import app
from zooens.service.cli.predict import shown_names


def test_names_are_relative_to_the_current_directory_or_to_the_common_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shown_names(["zero/0.png", str(tmp_path / "one" / "0.png")]) == ["zero/0.png", "one/0.png"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert shown_names([str(tmp_path / "a" / "zero" / "0.png"), str(tmp_path / "a" / "one" / "0.png")]) == [
        "zero/0.png",
        "one/0.png",
    ]
    assert shown_names([str(tmp_path / "a" / "x.png")]) == ["x.png"]


@pytest.mark.slow
def test_a_bad_file_gets_its_own_row_and_the_others_are_answered(zooens_home, tmp_path, monkeypatch):
    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    fitted = fit_tiny()
    model = tmp_path / "digits.zooens"
    runner = CliRunner()
    assert runner.invoke(app, ["export", str(fitted.job_id), "-o", str(model)]).exit_code == 0
    test = load_dataset("digits").split("test")
    images = tmp_path / "images"
    for folder, index in (("zero", 0), ("one", 1)):
        (images / folder).mkdir(parents=True)
        test.image(index).save(images / folder / "0.png")
    (images / "broken.png").write_bytes(b"not a png at all")
    monkeypatch.chdir(images)
    files = ["zero/0.png", "broken.png", "one/0.png", "missing.png"]

    table = runner.invoke(app, ["predict", str(model), *files], env={"COLUMNS": "100"})
    assert table.exit_code == 1, table.output
    lines = table.stdout.splitlines()
    for name in ("zero/0.png", "one/0.png", "broken.png", "missing.png"):
        assert any(name in line for line in lines), table.stdout
    broken = next(line for line in lines if "broken.png" in line)
    assert "error:" in broken and "%" not in broken
    assert "%" in next(line for line in lines if "zero/0.png" in line)
    assert "2 of 4 images could not be read" in table.stderr

    answer = runner.invoke(app, ["predict", str(model), *files, "--json"])
    assert answer.exit_code == 1
    rows = json.loads(answer.stdout)["predictions"]
    assert [r["image"] for r in rows] == files
    assert [("error" in r) for r in rows] == [False, True, False, True]
    classes = json.loads(answer.stdout)["classes"]
    assert rows[0]["label"] in classes and "missing.png" in rows[3]["error"]

    good = runner.invoke(app, ["predict", str(model), "zero/0.png", "one/0.png", "--json"])
    assert good.exit_code == 0, good.output
    alone = json.loads(good.stdout)["predictions"]
    assert [r["probabilities"] for r in alone] == [rows[0]["probabilities"], rows[2]["probabilities"]]
