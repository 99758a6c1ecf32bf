"""Which prefix of the greedy path to keep: the greedy's test accuracy against its first pick, by prefix rule.

    .venv/bin/python bench/prefix_rules.py                       # every offline peer task, 5 folds
    .venv/bin/python bench/prefix_rules.py --refit-folds 10      # the probes cross-fitted over 10 folds
    .venv/bin/python bench/prefix_rules.py --seeds 3             # each task under job seeds 0, 1 and 2

For each task of `bench/peers.py` (the same splits, 112 px), the default job's runs are fitted once with the
pipeline's own stages (`rank_model`, `finetune_run`: the embedded zoo and its layer taps, `linear` and `concat` on a
CPU, cross-fitted over `--refit-folds` folds), and the greedy ensemble (`GreedyEnsembleSelector`, with replacement,
on the job's selection rows: train's held-out rows and val's) is selected under each prefix rule, with and without
the accuracy guard: `min` (Caruana et al.'s and Mustafa et al.'s lowest cross-entropy, the default) and `one_se`
(the one-standard-error rule). Each row gives the test accuracy of the first pick (the same for every rule: one
path) and the ensemble's, and the difference; the summary line gives, per rule, the mean difference and on how many
tasks the ensemble is below its first pick. The temperature is left out: it changes no argmax.

With `--seeds N`, each task runs under the job seeds 0 .. N-1: the seed draws the probes' cross-fitting folds, and
the job's train/val split from the pool of a task that has no fixed split (Fashion-MNIST, digits; the offline
stand-ins' splits are fixed), so the rows are N draws of the same task, and the summary adds,
per rule, the mean difference task by task over its seeds (one test split of a few hundred images moves the
difference by whole images; the mean over draws is the rule's expected gain on that task).
Writes bench/results/prefix_rules.csv.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from _results import write_rows

from zooens.ensemble.greedy import GreedyEnsembleSelector
from zooens.pipeline import (
    JobParams,
    ScoreRecord,
    finetune_run,
    job_zoo,
    plan_finetune_units,
    prepare_job_dataset,
    rank_model,
    rank_models,
)
from zooens.pipeline.stages import _held_out_rows, probabilities
from zooens.selection.cache import EmbeddingCache
from zooens.selection.datasets import load_dataset
from zooens.selection.vtab.offline import OFFLINE_TASKS, make_offline_suite

RULES = (("min", True), ("min", False), ("one_se", True), ("one_se", False))


def candidates(
    name: str, folds: int, tmp: Path, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The default job's candidate runs on task `name` under job seed `seed`: their held-out probabilities of
    train+val with the labels, and their test probabilities with the labels."""
    offline = name.startswith("offline-")
    source = str(make_offline_suite(tmp / "suite", tasks=[name], n_test=1000)[0]) if offline else name
    options = {"refit_folds": folds}
    params = JobParams(
        resolution=112, max_test=1000, seed=seed, strategy_options={"linear": options, "concat": options}
    )
    ds = prepare_job_dataset(load_dataset(source), params)
    cache = EmbeddingCache(tmp / f"cache-{name}")
    models = [ws.name for ws in job_zoo("embedded", params)[0]]  # the job's zoo: the models and their taps
    scores = [rank_model(ds, m, params, cache=cache, device="cpu", progress=False).part(ScoreRecord) for m in models]
    ranked = rank_models(scores)
    probs = []
    for key in plan_finetune_units(ranked, params, "cpu", audit=False):
        _, result = finetune_run(
            ds, key, params, selected_models=ranked[: params.top_k], cache=cache, device="cpu", progress=False
        )
        probs.append(probabilities(result))
    held, y_held = _held_out_rows(probs, ds)  # the rows the job's greedy selects on
    return held, y_held, np.stack([p["test"] for p in probs]), np.asarray(ds.split("test").labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="all", help="comma-separated, or 'all' (default)")
    parser.add_argument("--refit-folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=1, help="job seeds 0 .. N-1 per task (default 1: seed 0)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="zooens-prefix-rules-"))
    os.environ.setdefault("ZOOENS_HOME", str(tmp / "home"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = ["fashion-mnist", "digits", *OFFLINE_TASKS] if args.datasets == "all" else args.datasets.split(",")
    rows = []
    for name, seed in [(n, s) for n in names for s in range(args.seeds)]:
        held, y_held, test, y_test = candidates(name, args.refit_folds, tmp, seed)
        for rule, guard in RULES:
            selector = GreedyEnsembleSelector(prefix_rule=rule, accuracy_guard=guard).fit(held, y_held)
            first = float((test[selector.selected_[0]].argmax(1) == y_test).mean())
            ours = float((selector.predict_proba(test).argmax(1) == y_test).mean())
            rows.append(
                {
                    "dataset": name,
                    "seed": seed,
                    "refit_folds": args.refit_folds,
                    "prefix_rule": rule,
                    "accuracy_guard": guard,
                    "members": int(selector.best_size_),
                    "first_pick_test_acc": round(first, 4),
                    "test_acc": round(ours, 4),
                    "difference": round(ours - first, 4),
                }
            )
            print(", ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    path = write_rows("prefix_rules", rows, echo=False)
    for rule, guard in RULES:
        mine = [r for r in rows if (r["prefix_rule"], r["accuracy_guard"]) == (rule, guard)]
        diffs = [r["difference"] for r in mine]
        print(
            f"{rule} (accuracy guard {guard}): mean difference {np.mean(diffs):+.4f}, below the first pick on "
            f"{sum(d < 0 for d in diffs)} of {len(diffs)}, above on {sum(d > 0 for d in diffs)}"
        )
        if args.seeds > 1:
            per_task = {n: np.mean([r["difference"] for r in mine if r["dataset"] == n]) for n in names}
            print(
                f"  over {args.seeds} seeds per task: mean difference below the first pick on "
                f"{sum(v < 0 for v in per_task.values())} of {len(names)} tasks; "
                + ", ".join(f"{n} {v:+.4f}" for n, v in per_task.items())
            )
    print(f"CSV: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
