"""Parameter-efficient adaptation on the Fashion-MNIST 1k task with the embedded zoo: test accuracy
against updated parameters and update size, for every strategy.

    .venv/bin/python bench/adapters.py [--model tf_efficientnet_lite0.in1k] [--resolution 64] [--steps 150]

Runs one `zooens run` job (800 train / 200 val, a seeded 1,000-image test subsample) with the
strategies linear, patch, film (LDA head), lora, aft on the kNN-top-1 model (aft distils the three
embedded models' features into it). kron needs a ViT, and no pre-trained ViT weights ship here. Writes
bench/results/adapters.csv and bench/results/adapters.png (matplotlib).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results"
ZOOENS = str(Path(sys.executable).parent / "zooens")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tf_efficientnet_lite0.in1k")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", default=None, help="one learning rate for all (default: each strategy's own grid)")
    args = p.parse_args()
    teachers = json.dumps(["tf_efficientnet_lite0.in1k", "tf_efficientnet_lite1.in1k", "tf_efficientnet_lite2.in1k"])
    cmd = [ZOOENS, "run", "--dataset", "fashion-mnist", "--zoo", "embedded", "--top-k", "1", "--max-test", "1000",
           "--resolution", str(args.resolution), "--strategies", "linear,patch,film,lora,aft",
           *(["--lr", args.lr] if args.lr else []), "--steps", str(args.steps), "-o", 'film.head="lda"', "-o", f"aft.teachers={teachers}",
           "--json", "--quiet"]
    report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ).stdout)
    rows = [
        {"model_name": r["model_name"], "strategy": r["strategy"], "lr": r["hparams"]["lr"], "test_acc": r["test_acc"], "val_acc": r["val_acc"],
         "updated_params": r["updated_params"], "update_bytes": r["update_bytes"], "seconds": round(r["seconds"], 1)}
        for r in report["runs"]
    ]
    rows.append({"model_name": "ensemble", "strategy": "greedy", "lr": "", "test_acc": report["ensemble"]["test_acc"],
                 "val_acc": report["ensemble"]["val_acc"], "updated_params": "", "update_bytes": "", "seconds": ""})
    OUT.mkdir(exist_ok=True)
    with (OUT / "adapters.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print(r)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows[:-1]:
        ax.scatter(r["updated_params"], 100 * r["test_acc"], label=f"{r['strategy']} ({r['model_name'].split('.')[0][-5:]})")
        ax.annotate(r["strategy"], (r["updated_params"], 100 * r["test_acc"]), fontsize=7)
    ax.axhline(100 * report["ensemble"]["test_acc"], ls="--", c="grey", label="greedy ensemble")
    ax.set_xscale("log")
    ax.set_xlabel("updated parameters (log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Fashion-MNIST 1k, embedded zoo, {args.resolution} px, {args.steps} steps")
    fig.tight_layout()
    fig.savefig(OUT / "adapters.png", dpi=110)


if __name__ == "__main__":
    main()
