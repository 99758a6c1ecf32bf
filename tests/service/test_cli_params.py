"""The job options of `zooens run` and `zooens vtab run` come from `JobParams`' fields: one flag per
field, the model's default, the field's description as help, and a new field is a new flag."""

from __future__ import annotations

import re
from typing import Any, Literal

import pytest
import typer
from pydantic import Field
from typer.testing import CliRunner

from zooens.errors import ConfigError
from zooens.pipeline.params import JobParams
from zooens.service.cli import app
from zooens.service.cli import run as run_module
from zooens.service.cli._params import job_options, job_params

FLAGS = {
    "top_k": ["--top-k"],
    "k": ["--k"],
    "strategies": ["--strategies"],
    "augmentation": ["--augmentation"],
    "learning_rates": ["--lr"],
    "steps": ["--steps"],
    "batch_size": ["--batch-size"],
    "ensemble_size": ["--ensemble-size"],
    "seed": ["--seed"],
    "resolution": ["--resolution"],
    "n_train": ["--n-train"],
    "n_val": ["--n-val"],
    "max_test": ["--max-test"],
    "preprocessing": ["--preprocessing"],
    "small_classes": ["--small-classes"],
    "max_gflops": ["--max-gflops"],
    "max_latency_ms": ["--max-latency-ms"],
    "audit_ranking": ["--audit-ranking"],
    "taps": ["--taps"],
    "pull": ["--pull", "--no-pull"],
    "strategy_options": ["--option", "-o"],
}
"""The flags as they were declared by hand before they came from the model: they must not change."""

EXCLUDED_FROM_RUN: dict[str, str] = {}
"""Fields `zooens run` does not offer, each with its reason (none today)."""


def _options(*path: str) -> dict[str, Any]:
    """name -> the option of a command (Typer's own click), by the command's path under `zooens`."""
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return {p.name: p for p in command.params if p.param_type_name == "option"}


def _cli_default(value: Any) -> Any:
    """A model default as the command line spells it."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return None  # a repeatable option: none given
    return value


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.fixture
def captured(monkeypatch):
    """`zooens run` stopped right after it validated its JobParams: the params it built, or None."""
    seen: dict[str, JobParams] = {}

    def capture(values, **fixed):
        seen["params"] = job_params(values, **fixed)
        raise ConfigError("stopped before the dataset")

    monkeypatch.setattr(run_module, "job_params", capture)
    return seen


def _run(*args: str):
    return CliRunner().invoke(app, ["run", *args])


def test_every_field_is_a_flag_of_zooens_run_with_the_models_default_and_description():
    options = _options("run")
    help_text = _flat(_run("--help").stdout)
    for name, field in JobParams.model_fields.items():
        if name in EXCLUDED_FROM_RUN:
            assert name not in options
            continue
        option = options[name]
        assert sorted(option.opts + option.secondary_opts) == sorted(FLAGS[name]), name
        assert all(flag in help_text for flag in FLAGS[name]), name
        assert option.default == _cli_default(field.get_default(call_default_factory=True)), name
        assert field.description and option.help.startswith(field.description), name
    assert set(FLAGS) == set(JobParams.model_fields) - set(EXCLUDED_FROM_RUN)
    # the CLI's own options stay as declared in run.py
    assert {"dataset", "zoo", "data", "as_json", "wide", "quiet"} <= set(options)
    assert options["dataset"].opts == ["--dataset", "-d"] and options["quiet"].opts == ["--quiet", "-q"]


def test_help_shows_defaults_and_choices():
    help_text = _flat(_run("--help").stdout)
    assert "--augmentation [auto|none|flip|crop|crop_flip]" in help_text
    assert "--preprocessing [model|resize]" in help_text and "--taps [none|auto]" in help_text
    assert "--lr <float>,..." in help_text and "--steps <int>,..." in help_text
    assert "-o, --option STRATEGY.KEY=VALUE" in help_text
    assert "--k [<int>|auto]" in help_text and "recorded with each score. [default: auto]" in help_text
    assert "[default: auto]" in help_text and "[default: 800]" in help_text


def test_no_option_gives_the_models_defaults(captured):
    result = _run()
    assert result.exit_code == 2 and "stopped before the dataset" in result.output
    assert captured["params"] == JobParams()


def test_lists_and_strategy_options_parse_to_job_params(captured):
    result = _run(
        "--lr",
        "0.1,0.01",
        "--steps",
        "10, 20",
        "--strategies",
        "linear,lora,film",
        "-o",
        "lora.rank=4",
        "--option",
        'film.head="lda"',
        "--top-k",
        "2",
        "--max-gflops",
        "1.5",
        "--taps",
        "auto",
    )
    assert result.exit_code == 2, result.output
    params = captured["params"]
    assert params.learning_rates == [0.1, 0.01] and params.steps == [10, 20]
    assert params.strategies == ["linear", "lora", "film"]
    assert params.strategy_options == {"lora": {"rank": 4}, "film": {"head": "lda"}}
    assert params.top_k == 2 and params.max_gflops == 1.5 and params.taps == "auto"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-k", "0"], "top_k"),
        (["--lr", "0.1,fast"], "comma-separated numbers"),
        (["--steps", "1.5"], "comma-separated integers"),
        (["--augmentation", "mirror"], "augmentation"),
        (["--strategies", "nope"], "nope"),
        (["-o", "lora"], "STRATEGY.KEY=VALUE"),
        (["-o", "lora.no_such_key=1"], "no_such_key"),
        (["--max-gflops", "1", "--max-latency-ms", "2"], "one inference budget"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(args, message):
    result = _run(*args, "--dataset", "no-such-dataset-either")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output


def test_vtab_run_keeps_its_flags_and_vtab_defaults():
    options = _options("vtab", "run")
    expected = {
        "top_k": (["--top-k"], 3),
        "strategies": (["--strategies"], "auto,concat"),
        "augmentation": (["--augmentation"], "auto"),
        "preprocessing": (["--preprocessing"], "resize"),
        "learning_rates": (["--lr"], None),
        "steps": (["--steps"], None),
        "resolution": (["--resolution"], None),
        "seed": (["--seed"], 0),
    }
    own = {"data_root", "tasks_spec", "zoo", "refit", "force", "out", "quiet"}
    assert set(options) == set(expected) | own
    for name, (flags, default) in expected.items():
        assert options[name].opts == flags and options[name].default == default, name
        assert options[name].help.startswith(JobParams.model_fields[name].description), name


def test_vtab_run_builds_vtab_params(monkeypatch, tmp_path):
    import zooens.service.vtab as vtab

    seen = {}

    def fake_run_vtab(data_root, names, out, *, params, **kwargs):
        seen["params"] = params
        return []

    monkeypatch.setattr(vtab, "select_tasks", lambda root, spec: ["dtd"])
    monkeypatch.setattr(vtab, "run_vtab", fake_run_vtab)
    args = ["vtab", "run", "--data-root", str(tmp_path), "--out", str(tmp_path / "out"), "-q"]
    result = CliRunner().invoke(app, [*args, "--lr", "0.1,0.2", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    params = seen["params"]
    assert params.preprocessing == "resize" and params.small_classes == "allow"
    assert params.learning_rates == [0.1, 0.2] and params.top_k == 2 and params.k == JobParams().k
    bad = CliRunner().invoke(app, [*args, "--preprocessing", "crop"])
    assert bad.exit_code == 2 and bad.output.strip().startswith("error:") and "preprocessing" in bad.output


class WithKnobs(JobParams):
    """A parameter added to the model is one line; the CLI below is not touched."""

    new_knob: int = Field(default=5, ge=1, le=9, description="A knob a future job will have.")
    new_mode: Literal["a", "b"] = Field(default="a", description="A mode.")
    new_switch: bool = Field(default=True, description="A switch.")
    new_list: list[float] | None = Field(default=None, description="Some numbers.", json_schema_extra={"x-cli": "-n"})


def test_a_new_field_is_a_new_flag():
    seen = {}
    knobs = typer.Typer(rich_markup_mode=None)

    @knobs.command()
    @job_options(model=WithKnobs)
    def go(**job: Any) -> None:
        seen["params"] = job_params(job, model=WithKnobs)

    help_text = _flat(CliRunner().invoke(knobs, ["--help"]).stdout)
    assert "--new-knob <int> A knob a future job will have. [default: 5]" in help_text
    assert "--new-mode [a|b] A mode. [default: a]" in help_text and "-n <float>,..." in help_text
    assert "--new-switch / --no-new-switch A switch. [default: new-switch]" in help_text
    assert "--top-k" in help_text  # and every field it inherits
    result = CliRunner().invoke(knobs, ["--new-knob", "7", "--new-mode", "b", "-n", "1,2", "--no-new-switch"])
    assert result.exit_code == 0, result.output
    assert seen["params"] == WithKnobs(new_knob=7, new_mode="b", new_list=[1.0, 2.0], new_switch=False)
    assert CliRunner().invoke(knobs, []).exit_code == 0 and seen["params"] == WithKnobs()
    with pytest.raises(ConfigError, match="new_knob"):
        job_params({"new_knob": 10}, model=WithKnobs)


def test_a_field_the_cli_cannot_spell_is_refused_when_the_command_is_declared():
    class Odd(JobParams):
        pairs: list[tuple[int, int]] = Field(default_factory=list, description="Pairs.")

    def go(**job: Any) -> None: ...

    with pytest.raises(TypeError, match="pairs"):
        job_options(model=Odd)(go)
