"""The smaller CLI commands: datasets, jobs, tokens, db."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from zooens.service.cli import app


def _ok(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_datasets_show_and_list(zooens_home):
    shown = json.loads(_ok(["datasets", "show", "digits", "--json"]))
    assert shown["num_classes"] == 10 and sum(shown["splits"].values()) == 1797
    listed = json.loads(_ok(["datasets", "list", "--json"]))
    assert listed["builtins"] == ["fashion-mnist", "digits"] and listed["registered"] == []
    result = CliRunner().invoke(app, ["datasets", "show", "/no/such/place"])
    assert result.exit_code == 2 and "No dataset" in result.output
    assert "t-shirt/top" in _ok(["datasets", "show", "fashion-mnist"])


def test_tokens_and_db(zooens_home):
    token = _ok(["tokens", "create", "ci"]).strip()
    assert token.startswith("zoo_")
    assert "ci" in _ok(["tokens", "list"]) and token not in _ok(["tokens", "list"])
    assert CliRunner().invoke(app, ["tokens", "create", "ci"]).exit_code == 2
    _ok(["tokens", "revoke", "ci"])
    assert "revoked" in _ok(["tokens", "list"])
    assert "head" in _ok(["db", "current"])


def test_jobs_list_and_unknown_job(zooens_home):
    assert json.loads(_ok(["jobs", "list", "--json"])) == []
    _ok(["db", "upgrade"])
    result = CliRunner().invoke(app, ["jobs", "show", "42"])
    assert result.exit_code == 2 and "No job with id 42" in result.output


def test_run_with_strategy_auto_takes_linear_on_a_cpu_and_records_it(zooens_home):
    """`zooens run --strategies auto` on this CPU-only machine: every run is `linear`, says it came from
    `auto`, and records the augmentation it used (none: a linear head on cached embeddings)."""
    from tests.service._tiny import register_tiny_zoo

    register_tiny_zoo(zooens_home / "weights", ["tiny-effnet"])
    report = json.loads(
        _ok(
            [
                "run",
                "--dataset",
                "digits",
                "--zoo",
                "user",
                "--top-k",
                "1",
                "--resolution",
                "32",
                "--n-train",
                "150",
                "--n-val",
                "50",
                "--max-test",
                "50",
                "--steps",
                "20",
                "--strategies",
                "auto",
                "--json",
                "--quiet",
            ]
        )
    )
    assert report["runs"] and all(r["strategy"] == "linear" for r in report["runs"])
    assert all(r["hparams"]["strategy_requested"] == "auto" for r in report["runs"])
    assert all(r["hparams"]["augmentation"] == "none" for r in report["runs"])
    result = CliRunner().invoke(app, ["run", "--dataset", "digits", "--augmentation", "mirror", "--quiet"])
    assert result.exit_code != 0 and "augmentation" in result.output


def test_ctrl_c_in_run_ends_with_how_to_resume(zooens_home, monkeypatch):
    """`zooens run` runs its job through `jobs.run_here`; Ctrl-C once the job exists says how to go on (exit
    130), and before it exists is the plain abort."""
    import zooens.service.jobs as jobs

    def interrupted_run(source, ds, zoo, params, *, on_submitted=None, **kwargs):
        if on_submitted is not None and zoo == "embedded":
            on_submitted(7)
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "run_here", interrupted_run)
    result = CliRunner().invoke(app, ["run", "--dataset", "digits"])
    assert result.exit_code == 130
    assert "job 7: dataset digits" in result.stdout and "`zooens jobs resume 7`" in result.stderr
    early = CliRunner().invoke(app, ["run", "--dataset", "digits", "--zoo", "user"])
    assert early.exit_code != 0 and "resume" not in early.output
