"""The report tables of `zooens run` and `zooens jobs show`."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

console = Console(width=None if sys.stdout.isatty() else 160)


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
            r["model_name"],
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
            str(r["id"]), r["model_name"], r["strategy"], f"{r['hparams'].get('lr', 0):g}", str(r["hparams"].get("steps", "-")),
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
            t.add_row(str(m["run_id"]), m["model_name"], m["strategy"], f"{m['hparams'].get('lr', 0):g}",
                      str(m["hparams"].get("steps", "-")), f"{m['weight']:.3f}", f"{m['val_ce']:.3f}", _pct(m["test_acc"]))
        console.print(t)
        best = max((m["test_acc"] or 0.0 for m in report["runs"]), default=None)
        console.print(f"test accuracy: ensemble {_pct(ens['test_acc'])}, best single run {_pct(best)}")
    if job["error"]:
        console.print(f"[red]error:[/red] {job['error']}")
    console.print(f"status: {job['status']} in {report['seconds']:.1f} s")
