"""Does looking at the data beat a leaderboard? The ranking audit's four predictors in one run per dataset:
kNN and LogME (they look at the data) against the static priors ImageNet top-1 and parameter count (they do not).

    .venv/bin/python bench/priors.py      # digits and Fashion-MNIST 1k; writes bench/results/priors.csv

Every candidate is fine-tuned (`audit_ranking` covers the whole zoo, with `linear`), so each predictor is judged
against every model's fine-tuned validation accuracy: Spearman, Kendall (tau-b) and the top-K regret. The zoo is the
embedded one with its layer taps (`--taps auto`: 3 models and 9 taps, the only weights of more than one network
that can be had offline); a tap takes its model's published top-1 (ties among a model's taps) and its own pruned
network's parameter count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from _results import write_rows

PREDICTORS = ("knn", "logme", "imagenet_top1", "num_params")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="digits,fashion-mnist")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args()

    os.environ.setdefault("ZOOENS_HOME", tempfile.mkdtemp(prefix="zooens-priors-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import zooens  # after ZOOENS_HOME is set: settings are read on first use

    rows = []
    for dataset in args.datasets.split(","):
        started = time.perf_counter()
        fitted = zooens.fit(
            dataset,
            record=False,
            zoo="embedded",
            taps="auto",
            resolution=args.resolution,
            strategies="linear",
            top_k=args.top_k,
            audit_ranking=12,
            max_test=500,
            progress=False,
        )
        seconds = time.perf_counter() - started
        audit = fitted.ranking_audit_
        if audit is None:
            print(f"{dataset}: no audit", file=sys.stderr)
            return 1
        for name in PREDICTORS:
            p = audit["predictors"][name]
            rows.append(
                {
                    "dataset": dataset,
                    "predictor": name,
                    "models": p["n"],
                    "spearman": None if p["spearman"]["value"] is None else round(p["spearman"]["value"], 4),
                    "kendall": None if p["kendall"]["value"] is None else round(p["kendall"]["value"], 4),
                    "regret_pts": None if p["regret"] is None else round(100 * p["regret"], 2),
                    "top_k": " ".join(p["top_k_models"]),
                    "fit_s": round(seconds, 1),
                }
            )
    path = write_rows("priors", rows)
    print(f"CSV: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
