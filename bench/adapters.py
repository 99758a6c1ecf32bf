"""Fine-tuning strategies with the embedded zoo on two tasks: test accuracy against updated
parameters and update size, for every strategy.

    .venv/bin/python bench/adapters.py [--resolution 64] [--steps 100] [--tasks fashion-mnist,offline-dsprites-location]
    python bench/adapters.py --resolution 224 --steps 0 --film-max-target 0 --name adapters-gpu   # on a GPU

Per task, one `zooens run` job (800 train / 200 val, up to 1,000 test images) with the strategies
linear, full, patch, film, lora and aft on the kNN-top-1 model (aft distils the three embedded
models' features), each with its own defaults (augmentation as the task declares it). The tasks:
Fashion-MNIST 1k, and the offline stand-in of dSprites x-position, where a mirror changes the label.
kron needs a ViT, and no pre-trained ViT weights ship here. `--steps 0` and `--film-max-target 0` keep
each strategy's own schedule (BiT's rule for full, FiT's episode size). Writes bench/results/<name>.csv
and bench/results/<name>.png (matplotlib), `--name` defaulting to `adapters`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from zooens.selection.vtab.offline import make_offline_suite

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results"
ZOOENS = str(Path(sys.executable).parent / "zooens")


TASKS = ("fashion-mnist", "offline-dsprites-location")
"""Fashion-MNIST 1k (natural images), and the offline stand-in of dSprites x-position: a mirror changes
its label, so a strategy that flips its training images cannot learn it."""


def dataset_for(task: str, tmp: Path) -> str:
    if task == "fashion-mnist":
        return task
    return str(make_offline_suite(tmp, n_test=1000, tasks=[task])[0])


def run_task(task: str, args, tmp: Path) -> tuple[list[dict], dict]:
    teachers = json.dumps(["tf_efficientnet_lite0.in1k", "tf_efficientnet_lite1.in1k", "tf_efficientnet_lite2.in1k"])
    cmd = [
        ZOOENS,
        "run",
        "--dataset",
        dataset_for(task, tmp),
        "--zoo",
        "embedded",
        "--top-k",
        "1",
        "--max-test",
        "1000",
        "--resolution",
        str(args.resolution),
        "--strategies",
        args.strategies,
        *(["--lr", args.lr] if args.lr else []),
        *(["--steps", str(args.steps)] if args.steps else []),
        "-o",
        f"aft.teachers={teachers}",
        *(["-o", f"film.max_target_size={args.film_max_target}"] if args.film_max_target else []),
        "--json",
        "--quiet",
    ]
    report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ).stdout)
    rows = [
        {
            "task": task,
            "model_name": r["model_name"],
            "strategy": r["strategy"],
            "lr": r["hparams"]["lr"],
            "augmentation": r["hparams"].get("augmentation", ""),
            "test_acc": r["test_acc"],
            "val_acc": r["val_acc"],
            "updated_params": r["updated_params"],
            "update_bytes": r["update_bytes"],
            "seconds": round(r["seconds"], 1),
        }
        for r in report["runs"]
    ]
    rows.append(
        {
            "task": task,
            "model_name": "ensemble",
            "strategy": "greedy",
            "lr": "",
            "augmentation": "",
            "test_acc": report["ensemble"]["test_acc"],
            "val_acc": report["ensemble"]["val_acc"],
            "updated_params": "",
            "update_bytes": "",
            "seconds": "",
        }
    )
    return rows, report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--strategies", default="linear,full,patch,film,lora,aft")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument(
        "--film-max-target",
        type=int,
        default=200,
        help="film's targets per episodic task (FiT's 2000 costs ~2,000 forward passes a step on a CPU)",
    )
    p.add_argument("--lr", default=None, help="one learning rate for all (default: each strategy's own grid)")
    p.add_argument("--name", default="adapters", help="output files bench/results/<name>.csv and .png")
    p.add_argument("--plot-only", action="store_true", help="redraw <name>.png from <name>.csv, run nothing")
    args = p.parse_args()
    rows: list[dict] = []
    OUT.mkdir(exist_ok=True)
    if args.plot_only:
        with (OUT / f"{args.name}.csv").open(newline="") as f:
            rows = [
                {k: (float(v) if k in ("test_acc", "updated_params") and v else v) for k, v in r.items()}
                for r in csv.DictReader(f)
            ]
        plot(rows, args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            task_rows, _ = run_task(task.strip(), args, Path(tmp))
            rows += task_rows
            with (OUT / f"{args.name}.csv").open("w", newline="") as f:  # after each task: a long run keeps what it did
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
    for r in rows:
        print(r)
    plot(rows, args)


def plot(rows: list[dict], args) -> None:
    """<name>.png: test accuracy against updated parameters, one panel per task."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        runs = [r for r in rows if r["task"] == task and r["strategy"] != "greedy"]
        ensemble = next(r for r in rows if r["task"] == task and r["strategy"] == "greedy")
        for r in runs:
            ax.scatter(r["updated_params"], 100 * r["test_acc"])
            ax.annotate(f"{r['strategy']} lr={r['lr']}", (r["updated_params"], 100 * r["test_acc"]), fontsize=7)
        ax.axhline(100 * ensemble["test_acc"], ls="--", c="grey", label="greedy ensemble")
        ax.set_xscale("log")
        ax.set_xlabel("updated parameters (log)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{task}, {args.resolution} px, " + (f"{args.steps} steps" if args.steps else "own schedules"))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / f"{args.name}.png", dpi=110)


if __name__ == "__main__":
    main()
