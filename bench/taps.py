"""What layer taps bring: the greedy ensemble of the embedded zoo with `--taps auto` against without,
at equal inference budget, on the offline stand-ins (natural and structured) and Fashion-MNIST.

    .venv/bin/python bench/taps.py [--resolution 64] [--tasks offline-fashion-mnist,offline-dsprites-location,...]

Per task, two `zooens run` jobs on the same data (800 train / 200 val, up to 1,000 test images), each
fine-tuning every candidate with `linear` (heads on cached embeddings, so the comparison is about the
features): the three embedded models, and the same with each model's last three stages as extra
candidates (`--taps auto`, 12 candidates). Each pair runs twice: without a budget, and with the budget
of one forward pass of the cheapest embedded model (`--max-gflops` set to its GFLOPs at this
resolution, as measured by the first job). Writes bench/results/taps.csv: per task, taps and budget, the
ensemble's test accuracy, val cross-entropy, GFLOPs and members, and the best kNN score of a full model
and of a tap (structured tasks are known to prefer earlier layers).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import write_rows

from zooens.selection.vtab.offline import make_offline_suite

ZOOENS = str(Path(sys.executable).parent / "zooens")
TASKS = ("offline-fashion-mnist", "offline-dsprites-location", "offline-dsprites-orientation", "offline-clevr-count")
CHEAPEST = "tf_efficientnet_lite0.in1k"


def run_job(dataset: Path, args, *, taps: bool, max_gflops: float | None) -> dict:
    cmd = [
        ZOOENS,
        "run",
        "--dataset",
        str(dataset),
        "--zoo",
        "embedded",
        "--taps",
        "auto" if taps else "none",
        "--top-k",
        "12",
        "--strategies",
        "linear",
        "--resolution",
        str(args.resolution),
        "--max-test",
        str(args.max_test),
        "--json",
        "--quiet",
    ]
    if max_gflops is not None:
        cmd += ["--max-gflops", repr(max_gflops)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ).stdout)


def row(task: str, report: dict, *, taps: bool, budget: float | None) -> dict:
    ens = report["ensemble"]
    ranking = report["ranking"]
    full = [r for r in ranking if "@" not in r["model_name"]]
    tapped = [r for r in ranking if "@" in r["model_name"]]
    best_tap = max(tapped, key=lambda r: r["knn_accuracy"], default=None)
    return {
        "task": task,
        "taps": "auto" if taps else "none",
        "max_gflops": "" if budget is None else round(budget, 4),
        "candidates": len(ranking),
        "ensemble_test_acc": round(ens["test_acc"], 4),
        "ensemble_val_ce": round(ens["val_ce"], 4),
        "ensemble_gflops": round(ens["gflops"], 4),
        "members": " ".join(sorted({m["model_name"] for m in ens["members"]})),
        "best_single_test_acc": round(report["best_single"]["test_acc"], 4),
        "best_full_knn": round(max(r["knn_accuracy"] for r in full), 4),
        "best_tap_knn": "" if best_tap is None else round(best_tap["knn_accuracy"], 4),
        "best_tap": "" if best_tap is None else best_tap["model_name"],
        "seconds": round(report["job"]["duration_seconds"] or 0, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--max-test", type=int, default=1000)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--name", default="taps", help="output file bench/results/<name>.csv")
    args = p.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
            dataset = make_offline_suite(tmp, n_test=args.max_test, tasks=[task])[0]
            plain = run_job(dataset, args, taps=False, max_gflops=None)
            budget = min(r["gflops"] for r in plain["runs"] if r["model_name"] == CHEAPEST)
            for taps in (False, True):
                free = plain if not taps else run_job(dataset, args, taps=True, max_gflops=None)
                rows.append(row(task, free, taps=taps, budget=None))
                rows.append(row(task, run_job(dataset, args, taps=taps, max_gflops=budget), taps=taps, budget=budget))
            write_rows(args.name, rows, echo=False)  # after each task: a long run keeps what it did
    write_rows(args.name, rows)


if __name__ == "__main__":
    main()
