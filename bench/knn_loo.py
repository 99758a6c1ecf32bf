"""Leave-one-out kNN on 10,000 x 1,280 embeddings: FAISS (ours) against scikit-learn brute cosine.

    .venv/bin/python bench/knn_loo.py [--n 10000] [--dim 1280] [--k 10]

Writes bench/results/knn_loo.csv with both timings, the speed-up and whether they agree.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from _results import write_rows

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from zooens.selection.knn import knn_loo_accuracy



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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, args.n)
    X = (rng.normal(size=(10, args.dim))[y] * 0.05 + rng.normal(size=(args.n, args.dim))).astype(np.float32)
    t = time.perf_counter()
    ours = knn_loo_accuracy(X, y, args.k)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ref = sklearn_loo(X, y, args.k)
    t_ref = time.perf_counter() - t
    row = {"n": args.n, "dim": args.dim, "k": args.k, "faiss_s": round(t_ours, 3), "sklearn_s": round(t_ref, 3),
           "speedup": round(t_ref / t_ours, 2), "faiss_acc": ours, "sklearn_acc": ref, "agree": abs(ours - ref) < 1e-9}
    write_rows("knn_loo", [row])


if __name__ == "__main__":
    main()
