"""zooens against what a practitioner would do without it, in one run per dataset, on the same splits.

    .venv/bin/python bench/peers.py                       # Fashion-MNIST 1k, digits, the dSprites-location stand-in
    .venv/bin/python bench/peers.py --datasets all        # and every other offline stand-in task
    .venv/bin/python bench/peers.py --zoo packaged        # every contender on the offline zoo of two upstreams

Contenders, each trained on the same 800 train / 200 val images (zooens' split policy with the job's seed) and
scored on the same test images (a seeded subsample of `--max-test`):

- `zooens`: the default job (`taps` auto; `--taps none`: the models alone; `zooens.pipeline.fit`: the
  embedded zoo and its layer taps, `strategies` auto and concat, auto being `linear` on a CPU and `full` on a GPU;
  `k` auto), its calibrated `predict_proba` on the test images;
- `logreg-top1`: scikit-learn's `LogisticRegression` (L2, lbfgs) on standardised embeddings of the zoo entry zooens
  ranked first (a layer tap when one ranked first), C picked on val from 10^-4..10^4 by val accuracy (CLIP's
  linear-probe protocol, Radford et al. 2021, appendix A.3; ties to the smaller C);
- `logreg-concat`: the same on the concatenated embeddings of every zoo model (their final features: what a
  practitioner reads off a model);
- `logreg-concat-refit`: `logreg-concat` fitted again at its chosen C on train+val (the VTAB-1k protocol, which
  zooens' `linear` and `concat` runs follow by default): the practitioner who also knows that trick;
- on a GPU only, `full-top1`: full fine-tuning of the kNN-top-1 model with BiT's hyper-rule (one run, no sweep).

Each contender pays for its own embeddings: the baselines embed train, val and test with every model they use
through an empty embedding cache of their own, and zooens' job through another one. Test accuracy, NLL and ECE
(15 equal-width confidence bins, Guo et al. 2017) are computed here from each contender's test probabilities;
CPU-seconds are this process's `time.process_time()` over the contender's whole fit (embedding included).
zooens' row also gives the test accuracy of two single runs of its own job: `best_single_test_acc`, the run with the
lowest val cross-entropy (what the CLI, API and dashboard call the best single run), and `first_pick_test_acc`, the
greedy's first pick (the lowest cross-entropy on its selection rows: train's held-out rows and val's for cross-
fitted probes), the run the ensemble is guaranteed not to be worse than on those rows; and the ensemble against that
first pick image by image on test: `gained_vs_first_pick` (test images the ensemble gets right and the first pick
wrong), `lost_vs_first_pick` (the reverse) and `mcnemar_p` (McNemar's exact test, two-sided: the binomial
probability of a split of the discordant images at least that uneven if neither were better; 1.0 where none differ).
Writes bench/results/peers.csv (with `--taps none`: peers-taps-none.csv, so both runs are kept side by side; with
`--zoo Z` other than `embedded`: peers-Z.csv, every contender on that zoo).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_rows
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from zooens.ensemble import EnsemblePredictor
from zooens.pipeline import JobParams, fit, prepare_job_dataset
from zooens.selection.cache import EmbeddingCache
from zooens.selection.datasets import load_dataset
from zooens.selection.embed import embed_with_cache
from zooens.selection.vtab.offline import OFFLINE_TASKS, make_offline_suite
from zooens.zoo import resolve_zoo

DEFAULT = "fashion-mnist,digits,offline-dsprites-location"
C_GRID = np.logspace(-4, 4, 17)


def ece(proba: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins (Guo et al. 2017, eq. 3)."""
    conf = proba.max(1)
    correct = proba.argmax(1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return float(total)


def nll(proba: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None))))


def scores(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {
        "test_acc": round(float((proba.argmax(1) == y).mean()), 4),
        "test_nll": round(nll(proba, y), 4),
        "test_ece": round(ece(proba, y), 4),
    }


def tuned_logreg(
    features: dict[str, np.ndarray], labels: dict[str, np.ndarray], *, refit: bool = False
) -> tuple[np.ndarray, float]:
    """CLIP's protocol: standardise with train statistics, fit an L2 logistic regression for every C of the grid,
    keep the C with the best val accuracy (the smallest C on ties); its test probabilities and C. With `refit`,
    the model at that C is fitted again on train+val (standardised with their statistics)."""
    scaler = StandardScaler().fit(features["train"])
    z = {split: scaler.transform(x) for split, x in features.items()}
    best: tuple[float, float, LogisticRegression] | None = None
    for c in C_GRID:
        model = LogisticRegression(C=float(c), max_iter=5000).fit(z["train"], labels["train"])
        acc = float((model.predict(z["val"]) == labels["val"]).mean())
        if best is None or acc > best[0]:
            best = (acc, float(c), model)
    assert best is not None
    if not refit:
        return best[2].predict_proba(z["test"]), best[1]
    x_all = np.concatenate([features["train"], features["val"]])
    y_all = np.concatenate([labels["train"], labels["val"]])
    scaler = StandardScaler().fit(x_all)
    model = LogisticRegression(C=best[1], max_iter=5000).fit(scaler.transform(x_all), y_all)
    return model.predict_proba(scaler.transform(features["test"])), best[1]


def run_dataset(name: str, args: argparse.Namespace, tmp: Path, gpu: bool) -> list[dict]:
    offline = name.startswith("offline-")
    source = str(make_offline_suite(tmp / "suite", tasks=[name], n_test=args.max_test)[0]) if offline else name
    raw = load_dataset(source)
    params = JobParams(resolution=args.resolution, max_test=args.max_test, taps=args.taps)
    device = "cuda" if gpu else "cpu"
    rows: list[dict] = []

    def row(contender: str, proba: np.ndarray, cpu_s: float, wall_s: float, note: str) -> None:
        rows.append(
            {
                "dataset": name,
                "contender": contender,
                **scores(proba, y_test),
                "cpu_s": round(cpu_s, 1),
                "wall_s": round(wall_s, 1),
                "note": note,
            }
        )

    # zooens' default job, with an embedding cache of its own
    cpu, wall = time.process_time(), time.perf_counter()
    fitted = fit(raw, params, zoo=args.zoo, cache=EmbeddingCache(tmp / f"cache-zooens-{name}"), progress=False)
    cpu_zooens, wall_zooens = time.process_time() - cpu, time.perf_counter() - wall
    ds = prepare_job_dataset(raw, params)
    test = ds.split("test")
    y_test = np.asarray(test.labels)
    images = [test.image(i) for i in range(len(test))]
    proba = fitted.predict_proba(images)
    members = len({m.unit_key for m in fitted.ensemble_.members})
    row(
        "zooens",
        proba,
        cpu_zooens,
        wall_zooens,
        f"{members} distinct runs; ranked first: {fitted.ranking_[0].model_name}",
    )
    best_single = min(fitted.runs_, key=lambda r: r.val_ce)
    first_pick = next(r for r in fitted.runs_ if r.unit_key == fitted.ensemble_.selected[0])
    rows[-1]["best_single_test_acc"] = round(best_single.test_acc, 4)  # rounded as test_acc, so they compare
    rows[-1]["first_pick_test_acc"] = round(first_pick.test_acc, 4)
    # the first pick alone (always a member: every kept prefix starts with it), image by image against the ensemble
    at = [m.unit_key for m in fitted.ensemble_.members].index(first_pick.unit_key)
    alone = EnsemblePredictor([(fitted.members_[at][0], 1.0)], device=device).predict_proba(images).argmax(1)
    assert abs(float((alone == y_test).mean()) - first_pick.test_acc) < 2e-3, "the first pick's test accuracy"
    ours = proba.argmax(1) == y_test
    gained, lost = int(np.sum(ours & (alone != y_test))), int(np.sum(~ours & (alone == y_test)))
    rows[-1]["gained_vs_first_pick"], rows[-1]["lost_vs_first_pick"] = gained, lost
    rows[-1]["mcnemar_p"] = round(binomtest(gained, gained + lost).pvalue, 3) if gained + lost else 1.0

    # the baselines, with an embedding cache of their own
    labels = {s: np.asarray(ds.split(s).labels) for s in ("train", "val", "test")}
    cache = EmbeddingCache(tmp / f"cache-baselines-{name}")
    embedded: dict[str, dict[str, np.ndarray]] = {}
    cpu_embed: dict[str, float] = {}
    top1 = fitted.ranking_[0].model_name  # a layer tap when one ranked first (`taps` auto, the script's default)
    zoo_models = [ws.name for ws in resolve_zoo(args.zoo)]
    for model_name in dict.fromkeys([*zoo_models, top1]):
        cpu = time.process_time()
        embedded[model_name] = {
            s: np.asarray(
                embed_with_cache(
                    model_name, ds, s, cache=cache, resolution=args.resolution, device=device, progress=False
                ).embeddings,
                dtype=np.float64,
            )
            for s in ("train", "val", "test")
        }
        cpu_embed[model_name] = time.process_time() - cpu
    contenders = (
        ("logreg-top1", [top1], False),
        ("logreg-concat", zoo_models, False),
        ("logreg-concat-refit", zoo_models, True),
    )
    for contender, models, refit in contenders:
        cpu, wall = time.process_time(), time.perf_counter()
        feats = {s: np.concatenate([embedded[m][s] for m in models], axis=1) for s in ("train", "val", "test")}
        proba, c = tuned_logreg(feats, labels, refit=refit)
        cpu_fit, wall_fit = time.process_time() - cpu, time.perf_counter() - wall
        row(contender, proba, cpu_fit + sum(cpu_embed[m] for m in models), wall_fit, f"C={c:g}; {'+'.join(models)}")
    if gpu:
        cpu, wall = time.process_time(), time.perf_counter()
        full = fit(
            raw,
            JobParams(resolution=None, max_test=args.max_test, strategies=["full"], top_k=1),
            zoo=top1,
            cache=EmbeddingCache(tmp / f"cache-full-{name}"),
            device="cuda",
            progress=False,
        )
        row("full-top1", full.predict_proba(images), time.process_time() - cpu, time.perf_counter() - wall, top1)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=DEFAULT, help=f"comma-separated, or 'all' (default: {DEFAULT})")
    parser.add_argument("--resolution", type=int, default=112)
    parser.add_argument("--max-test", type=int, default=1000)
    parser.add_argument("--taps", choices=["auto", "none"], default="auto", help="zooens' job's taps (default auto)")
    parser.add_argument(
        "--zoo", default="embedded", help="the zoo of every contender (default embedded; `packaged` adds HED's VGG16)"
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="zooens-peers-"))
    os.environ.setdefault("ZOOENS_HOME", str(tmp / "home"))  # settings are read on first use, after this
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = ["fashion-mnist", "digits", *OFFLINE_TASKS] if args.datasets == "all" else args.datasets.split(",")
    gpu = torch.cuda.is_available()
    rows: list[dict] = []
    for name in names:
        rows += run_dataset(name, args, tmp, gpu)
        for r in rows[-(5 if gpu else 4) :]:
            print(", ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    for r in rows:
        r.setdefault("best_single_test_acc", "")
        r.setdefault("first_pick_test_acc", "")
        for k in ("gained_vs_first_pick", "lost_vs_first_pick", "mcnemar_p"):
            r.setdefault(k, "")
    stem = "peers" if args.taps == "auto" else "peers-taps-none"
    path = write_rows(stem if args.zoo == "embedded" else f"{stem}-{args.zoo}", rows, echo=False)
    by = {(r["dataset"], r["contender"]): r for r in rows}
    wins = sum(by[(n, "zooens")]["test_acc"] >= by[(n, "logreg-concat")]["test_acc"] for n in names)
    single = sum(by[(n, "zooens")]["test_acc"] >= by[(n, "zooens")]["best_single_test_acc"] for n in names)
    first = sum(by[(n, "zooens")]["test_acc"] >= by[(n, "zooens")]["first_pick_test_acc"] for n in names)
    contenders = ("zooens", "logreg-top1", "logreg-concat", "logreg-concat-refit")
    mean = {c: np.mean([by[(n, c)]["test_acc"] for n in names]) for c in contenders}
    print(
        "mean test accuracy: " + ", ".join(f"{c} {mean[c]:.4f}" for c in contenders) + f"; zooens at least as "
        f"accurate as logreg-concat on {wins} of {len(names)}, as its own best single run (lowest val CE) on "
        f"{single} of {len(names)}, as the greedy's first pick (the best single run on its selection rows) on "
        f"{first} of {len(names)}; CSV: {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
