"""`zooens run`: the whole pipeline in the foreground, stored in the registry."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from zooens.service.cli import app
from zooens.service.cli._common import fail_on_error, parse_floats, parse_ints, parse_strategy_options

console = Console(width=None if sys.stdout.isatty() else 160)


@app.command()
@fail_on_error
def run(
    dataset: str = typer.Option("fashion-mnist", "--dataset", "-d", help="Built-in name (fashion-mnist, digits) or a path (ImageFolder dir, .npz, .csv)."),
    zoo: str = typer.Option("embedded", "--zoo", "-z", help="Zoo set: 'embedded', 'user', a glob like 'convnext*', or comma-separated names."),
    data: Optional[Path] = typer.Option(None, "--data", help="An ImageFolder directory; overrides --dataset."),
    top_k: int = typer.Option(3, "--top-k", help="How many of the best-ranked models to fine-tune."),
    k: int = typer.Option(10, "--k", help="Neighbours of the kNN score."),
    strategies: str = typer.Option("linear", "--strategies", help="Comma-separated fine-tuning strategies."),
    lr: Optional[str] = typer.Option(None, "--lr", help="Comma-separated learning rates (default: each strategy's)."),
    steps: Optional[str] = typer.Option(None, "--steps", help="Comma-separated step counts (default: each strategy's)."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Input resolution override (pixels)."),
    ensemble_size: int = typer.Option(10, "--ensemble-size", help="Most members of the greedy ensemble."),
    n_train: int = typer.Option(800, "--n-train", help="Training examples drawn from train when there is no val split."),
    n_val: int = typer.Option(200, "--n-val", help="Validation examples drawn from train when there is no val split."),
    max_test: Optional[int] = typer.Option(None, "--max-test", help="Evaluate on a seeded subsample of the test split."),
    seed: int = typer.Option(0, "--seed", help="Seed of every random choice."),
    option: Optional[list[str]] = typer.Option(None, "--option", "-o",
                                               help="A strategy option STRATEGY.KEY=VALUE (JSON value), e.g. film.head=\"lda\"; repeatable."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Embed, rank, fine-tune the top-K, build the greedy ensemble and report test accuracy."""
    from zooens.selection.datasets import load_dataset
    from zooens.service.db.session import session_scope, upgrade_to_head
    from zooens.service.jobs import register_dataset, submit_job
    from zooens.service.pipeline import JobParams, prepare_job_dataset
    from zooens.service.reports import job_report
    from zooens.service.runner import require_success, run_job

    started = time.perf_counter()
    source = str(data.resolve()) if data is not None else dataset
    if data is None and Path(dataset).exists():
        source = str(Path(dataset).resolve())
    params = JobParams(
        top_k=top_k,
        k=k,
        strategies=[x.strip() for x in strategies.split(",") if x.strip()],
        learning_rates=parse_floats(lr),
        steps=parse_ints(steps),
        resolution=resolution,
        ensemble_size=ensemble_size,
        n_train=n_train,
        n_val=n_val,
        max_test=max_test,
        seed=seed,
        strategy_options=parse_strategy_options(option or []),
    ).validate()
    ds = load_dataset(source)
    prepare_job_dataset(ds, params)  # refuse bad data before anything is recorded
    upgrade_to_head()
    with session_scope() as s:
        ds_row = register_dataset(s, source, ds)
        job = submit_job(s, ds_row.id, zoo, params)
        job_id = job.id
    if not as_json:
        console.print(f"[bold]job {job_id}[/bold]: dataset {ds.name} ({source}), zoo {zoo}")
    status = run_job(job_id, worker_id="cli", progress=not quiet and not as_json)
    with session_scope() as s:
        report = job_report(s, job_id)
    report["seconds"] = round(time.perf_counter() - started, 2)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
    else:
        print_report(report)
    require_success(status, job_id)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def print_report(report: dict) -> None:
    job = report["job"]
    table = Table(title=f"Ranking (job {job['id']})")
    for col in ["#", "model", "kNN acc", "kNN val acc", "fine-tuned val acc", "val CE", "params", "dim", "embed s", "img/s"]:
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in report["ranking"]:
        table.add_row(
            str(r["rank"]),
            r["model"],
            _pct(r["knn_accuracy"]),
            _pct(r["val_accuracy"]),
            _pct(r["finetuned_val_acc"]),
            "-" if r["finetuned_val_ce"] is None else f"{r['finetuned_val_ce']:.3f}",
            f"{r['params'] / 1e6:.1f}M" if r["params"] else "-",
            str(r["embed_dim"] or "-"),
            f"{r['embed_seconds']:.1f}",
            f"{r['images_per_s']:.0f}" if r["images_per_s"] else "cached",
        )
    console.print(table)
    runs = Table(title="Fine-tune runs")
    for col in ["run", "model", "strategy", "lr", "steps", "val CE", "val acc", "test acc", "updated params", "update size", "s"]:
        runs.add_column(col)
    for r in report["runs"]:
        runs.add_row(
            str(r["id"]), r["model"], r["strategy"], f"{r['hparams'].get('lr', 0):g}", str(r["hparams"].get("steps", "-")),
            f"{r['val_ce']:.3f}",
            _pct(r["val_acc"]), _pct(r["test_acc"]), f"{r['updated_params']:,}", f"{r['update_bytes'] / 1024:.1f} KiB",
            f"{r['seconds']:.1f}",
        )
    console.print(runs)
    ens = report["ensemble"]
    if ens:
        t = Table(title=f"Greedy ensemble: val CE {ens['val_ce']:.4f}, val acc {_pct(ens['val_acc'])}, test acc {_pct(ens['test_acc'])}")
        for col in ["run", "model", "strategy", "lr", "steps", "weight", "val CE", "test acc"]:
            t.add_column(col)
        for m in ens["members"]:
            t.add_row(str(m["run_id"]), m["model"], m["strategy"], f"{m['hparams'].get('lr', 0):g}",
                      str(m["hparams"].get("steps", "-")), f"{m['weight']:.3f}", f"{m['val_ce']:.3f}", _pct(m["test_acc"]))
        console.print(t)
        best = max((m["test_acc"] or 0.0 for m in report["runs"]), default=None)
        console.print(f"test accuracy: ensemble {_pct(ens['test_acc'])}, best single run {_pct(best)}")
    if job["error"]:
        console.print(f"[red]error:[/red] {job['error']}")
    console.print(f"status: {job['status']} in {report['seconds']:.1f} s")
