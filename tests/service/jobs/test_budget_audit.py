"""Issue 15 through a real job: inference cost per run, the budgeted ensemble and its front, the ranking audit."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.service._tiny import register_tiny_zoo
from zooens.service.cli import app

RUN_ARGS = [
    "run",
    "--dataset",
    "digits",
    "--zoo",
    "user",
    "--resolution",
    "32",
    "--steps",
    "60",
    "--lr",
    "0.05,0.5",
    "--taps",
    "none",
    "--top-k",
    "2",
    "--strategies",
    "linear",
    "--json",
    "--quiet",
]


@pytest.fixture
def tiny_home(zooens_home):
    register_tiny_zoo(zooens_home / "weights")
    return zooens_home


def _report(args: list[str]) -> dict:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_budget_keeps_the_ensemble_within_it_and_the_audit_checks_the_ranking(tiny_home):
    free = _report(RUN_ARGS + ["--audit-ranking", "1"])
    ranking = [r["model_name"] for r in free["ranking"]]
    assert all(r["knn_queries"] == 800 for r in free["ranking"])  # every training example held out once
    runs = free["runs"]
    assert all(r["gflops"] > 0 and r["params_count"] > 0 and r["latency_ms"] > 0 for r in runs)
    # linear runs leave the backbone frozen: one forward pass per model, shared by its runs
    assert {r["model_name"]: r["backbone_key"] for r in runs} == {
        m: next(r["backbone_key"] for r in runs if r["model_name"] == m) for m in ranking
    }
    assert len({r["backbone_key"] for r in runs}) == 3
    # the audit fine-tuned the third model too, but the ensemble is built from the top-2 only
    assert {r["model_name"] for r in runs} == set(ranking)
    assert {m["model_name"] for m in free["ensemble"]["members"]} <= set(ranking[:2])
    assert free["best_single"]["model_name"] in ranking[:2]
    audit = free["job"]["ranking_audit"]
    assert audit["audited_models"] == 3
    assert set(audit["predictors"]) == {"knn", "logme", "imagenet_top1", "num_params"}
    # the static priors: user models have no published ImageNet top-1, and every one its parameter count
    assert audit["predictors"]["imagenet_top1"]["n"] == 0 and audit["predictors"]["num_params"]["n"] == 3
    knn = audit["predictors"]["knn"]
    assert knn["models"] == ranking  # the kNN order, best first
    assert knn["top_k_models"] == ranking[:2]
    best = {m: max(r["val_acc"] for r in runs if r["model_name"] == m) for m in ranking}
    assert knn["regret"] == pytest.approx(max(best.values()) - max(best[m] for m in ranking[:2]))
    shown = CliRunner().invoke(app, ["jobs", "show", str(free["job"]["id"])], env={"COLUMNS": "160"})
    assert shown.exit_code == 0, shown.output
    assert "How good was the ranking?" in shown.output and "inference cost:" in shown.output
    assert "parameters (static prior)" in shown.output
    spearman = knn["spearman"]["value"]
    assert spearman is None or f"{spearman:+.3f}" in shown.output

    # A budget that only the cheapest top-2 model's pass fits.
    top_runs = [r for r in runs if r["model_name"] in ranking[:2]]
    cheapest = min(r["gflops"] for r in top_runs)
    other = max(r["gflops"] for r in top_runs)
    assume_distinct = other > cheapest * 1.02
    budget = cheapest * 1.01
    capped = _report(RUN_ARGS + ["--max-gflops", repr(budget)])
    ens = capped["ensemble"]
    assert ens["max_gflops"] == pytest.approx(budget)
    assert ens["gflops"] <= budget
    in_budget = [r for r in capped["runs"] if r["gflops"] <= budget]
    assert in_budget
    # the greedy selects on train's held-out rows and val's (cross-fitted probes): there, not on val alone, the
    # kept ensemble is never worse than its first pick, the best single run within the budget
    assert ens["loss_curve"][ens["size"] - 1] <= ens["loss_curve"][0] + 1e-9
    assert capped["best_single"]["gflops"] <= budget
    if assume_distinct:
        assert len({m["model_name"] for m in ens["members"]}) == 1
    front = ens["front"]
    assert front["metric"] == "gflops" and front["budget"] == pytest.approx(budget)
    costs = [p["cost"] for p in front["front"]]
    losses = [p["val_loss"] for p in front["front"]]
    assert costs == sorted(costs) and losses == sorted(losses, reverse=True)  # Pareto: more cost, lower loss
    assert all(p["test_accuracy"] is not None for p in front["front"])
    assert front["path"][0]["size"] == 1


def test_two_budgets_at_once_are_refused(tiny_home):
    result = CliRunner().invoke(app, RUN_ARGS + ["--max-gflops", "1", "--max-latency-ms", "5"])
    assert result.exit_code != 0
    assert "one inference budget" in result.output


def test_taps_auto_ranks_each_models_last_stages_as_candidates(tiny_home):
    from zooens.zoo import taps_for

    report = _report(
        [
            "run",
            "--dataset",
            "digits",
            "--zoo",
            "tiny-effnet",
            "--taps",
            "auto",
            "--resolution",
            "32",
            "--steps",
            "40",
            "--lr",
            "0.5",
            "--top-k",
            "2",
            "--strategies",
            "linear",
            "--json",
            "--quiet",
        ]
    )
    taps = taps_for("tiny-effnet")
    assert taps and all(t.startswith("tiny-effnet@") for t in taps)
    assert report["job"]["zoo_models"] == ["tiny-effnet", *taps]
    assert {r["model_name"] for r in report["ranking"]} == {"tiny-effnet", *taps}
    dims = {r["model_name"]: r["embed_dim"] for r in report["ranking"]}
    assert len({dims[t] for t in taps}) > 1  # different stages, different widths
    top2 = [r["model_name"] for r in report["ranking"][:2]]
    assert {r["model_name"] for r in report["runs"]} == set(top2)
    # a tap is a cut-down network: its forward pass costs less than the whole model's
    for run in report["runs"]:
        if "@" in run["model_name"]:
            assert run["params_count"] < next(
                r["params"] for r in report["ranking"] if r["model_name"] == "tiny-effnet"
            )
