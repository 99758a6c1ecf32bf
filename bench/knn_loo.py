"""Leave-one-out kNN on n x 1,280 clustered embeddings: each backend of `zooens.selection.knn`
(FAISS, blocked torch matmul + top-k) against scikit-learn's brute-force cosine, in one run.

    .venv/bin/python bench/knn_loo.py [--sizes 1000 10000 50000] [--dim 1280] [--k 10] [--sklearn-max 10000]
                                      [--repeats 2] [--device cpu] [--full]

One row per (n, queries): the seconds of each backend (best of `--repeats`, alternated so that
load on a shared machine hits both alike), `torch_vs_faiss` (faiss seconds / torch seconds: above 1,
torch is faster, which is what `backend='auto'` picks), each backend's speed-up over scikit-learn
(up to `--sklearn-max` points), and whether all accuracies agree. Above `LOO_MAX_QUERIES` points
the production path is the stratified subsample (`queries` < n); `--full` also times the exact
LOO over every point there (n^2 work: minutes at 50k on 2 cores).

Writes bench/results/knn_loo.csv.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from _results import write_rows
from sklearn.neighbors import KNeighborsClassifier

from zooens.selection.knn import LOO_MAX_QUERIES, knn_loo, resolve_backend


def sklearn_loo(X: np.ndarray, y: np.ndarray, k: int) -> float:
    """LOO with scikit-learn: k+1 neighbours of every point, itself dropped, uniform vote."""
    clf = KNeighborsClassifier(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(X, y)
    idx = clf.kneighbors(X, return_distance=False)
    own = idx == np.arange(len(X))[:, None]
    drop = np.where(own.any(1), own.argmax(1), k)
    keep = np.ones_like(idx, bool)
    keep[np.arange(len(X)), drop] = False
    neigh = y[idx[keep].reshape(len(X), k)]
    counts = np.zeros((len(X), y.max() + 1), int)
    np.add.at(counts, (np.repeat(np.arange(len(X)), k), neigh.ravel()), 1)
    return float(np.mean(counts.argmax(1) == y))


def clustered(n: int, dim: int, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic embeddings: class centres plus isotropic noise (about 15-20% LOO accuracy)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = (rng.normal(size=(classes, dim))[y] * 0.05 + rng.normal(size=(n, dim))).astype(np.float32)
    return X, y


def best_of(fns: dict[str, Callable[[], float]], repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds (best of `repeats`, the functions alternated) and the value each returned."""
    seconds = {name: float("inf") for name in fns}
    values: dict[str, float] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            values[name] = fn()
            seconds[name] = min(seconds[name], time.perf_counter() - t)
    return seconds, values


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--sklearn-max", type=int, default=10_000, help="largest n also timed with scikit-learn")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu", help="where the torch backend runs (cpu, cuda)")
    p.add_argument(
        "--full", action="store_true", help=f"also time the exact LOO over every point above {LOO_MAX_QUERIES:,} points"
    )
    args = p.parse_args()
    X, y = clustered(100, 8)
    knn_loo(X, y, 3, backend="faiss")  # faiss' import out of the timings
    rows = []
    for n in args.sizes:
        X, y = clustered(n, args.dim)
        plans = [LOO_MAX_QUERIES] + ([None] if args.full and n > LOO_MAX_QUERIES else [])
        for max_queries in plans:
            fns: dict[str, Callable[[], float]] = {
                backend: (
                    lambda b=backend, m=max_queries, X=X, y=y: (
                        knn_loo(X, y, args.k, max_queries=m, backend=b, device=args.device).accuracy
                    )
                )
                for backend in ("faiss", "torch")
            }
            exact = max_queries is None or n <= max_queries
            if n <= args.sklearn_max and exact:
                fns["sklearn"] = lambda X=X, y=y: sklearn_loo(X, y, args.k)
            seconds, acc = best_of(fns, args.repeats if n <= 10_000 or "sklearn" in fns else 1)
            sk = seconds.get("sklearn")
            row = {
                "n": n,
                "dim": args.dim,
                "k": args.k,
                "queries": min(n, max_queries or n),
                "device": args.device,
                "threads": torch.get_num_threads(),
                "faiss_s": round(seconds["faiss"], 3),
                "torch_s": round(seconds["torch"], 3),
                "sklearn_s": None if sk is None else round(sk, 3),
                "torch_vs_faiss": round(seconds["faiss"] / seconds["torch"], 2),
                "faiss_vs_sklearn": None if sk is None else round(sk / seconds["faiss"], 2),
                "torch_vs_sklearn": None if sk is None else round(sk / seconds["torch"], 2),
                "auto": resolve_backend("auto", torch.device(args.device)),
                "accuracy": acc["torch"],
                "agree": len({round(a, 12) for a in acc.values()}) == 1,
            }
            rows.append(row)
            print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    write_rows("knn_loo", rows, echo=False)


if __name__ == "__main__":
    main()
