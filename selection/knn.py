"""k-nearest-neighbour accuracy of embeddings (cosine similarity), exact at any size, and LogME.

Cosine similarity is the inner product of L2-normalised float32 vectors. Votes are uniform;
among tied classes the smallest label wins, exactly as scikit-learn's KNeighborsClassifier
(weights='uniform') decides.

Two exact search backends give the same neighbours (ties in similarity aside):

- `torch`: queries in blocks, each block's similarities to every base vector by one matmul,
  then `topk`; the similarity block never exceeds `KNN_BLOCK_BYTES`. Runs where the
  embeddings are (CUDA when asked or when the embeddings are CUDA tensors).
- `faiss`: `IndexFlatIP` (its own blocked BLAS search), on the GPU when this faiss build has
  GPU support and torch sees one.

`backend='auto'` picks torch on CUDA (the embeddings move there once, or are there already)
and FAISS on the CPU, where it measured 1.15-1.25x faster than the blocked torch search at 10k
and 50k x 1,280 (`bench/knn_loo.py`, 2 loaded cores: both are bound by the same matmul, torch's
top-k costs the rest); at 1k they tie. When faiss cannot be imported, the CPU falls back to torch.

Above `LOO_MAX_QUERIES` training examples, leave-one-out uses a seeded, class-stratified
subsample of that many queries (every point stays a candidate neighbour; a query never counts
itself). This deviates from an exact LOO over all n points, whose cost grows as n^2; the
paper's regime is 1,000 images, where the estimate stays exact. `knn_loo` says how many
queries it used, and the ranking reports it (`ModelScore.knn_queries`).

Both backends return each query's neighbours most similar first, so one search of k neighbours
also gives the leave-one-out 1-NN accuracy (`LooEstimate.knn1_accuracy`): its first column.

`k="auto"` (the job default) is `auto_k` of the training set's class sizes: see its docstring.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import numpy as np
import torch

from zooens.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

__all__ = [
    "AUTO_K_MAX",
    "auto_k",
    "resolve_k",
    "knn_loo_accuracy",
    "knn_loo",
    "LooEstimate",
    "loo_queries",
    "knn_predict",
    "knn_accuracy",
    "logme_score",
    "l2_normalise",
    "resolve_backend",
    "KNN_BACKENDS",
    "KNN_BLOCK_BYTES",
    "LOO_MAX_QUERIES",
]

Backend = Literal["auto", "faiss", "torch"]
KNN_BACKENDS = ("auto", "faiss", "torch")

KNN_BLOCK_BYTES = 256 * 2**20
"""Most bytes one block of query-to-base similarities (float32) may take in the torch backend."""

LOO_MAX_QUERIES = 10_000
"""Leave-one-out over more training examples than this uses a stratified subsample of this many
queries: the estimate's standard error is at most 0.5 points, its cost linear in n, not n^2."""

ArrayLike = np.ndarray | torch.Tensor

AUTO_K_MAX = 10
"""Most neighbours `auto_k` chooses: the former fixed default, enough votes to smooth label noise
once classes are large; more only blurs the neighbourhood (and costs top-k time)."""


def auto_k(train_class_counts: Mapping[Any, int] | Iterable[int]) -> int:
    """The k of leave-one-out kNN that the training set's class sizes can serve.

    `train_class_counts`: examples per class (a mapping class -> count, or the counts); empty
    classes are ignored.

    Rule: k = min(AUTO_K_MAX, median class size - 1), at least 1, and 1 instead of 2.

    Why: a held-out point of a class of m examples has m - 1 neighbours of its own class, so
    with k <= m - 1 its class can fill the whole neighbourhood and win any vote; with more,
    at least k - m + 1 votes must go to other classes, and once k reaches 2(m - 1) its class can
    no longer hold a majority. With about two examples per class (SUN397 at VTAB-1k's 800,
    397 classes) k=10 lets other classes outvote the one same-class neighbour: a simulation of
    that regime measured kNN@10 at 0.55 against 0.86 for k=1. The median rather than the
    smallest class: one rare class (VTAB-1k draws some with one or none) should not set k for
    all the others (`pipeline.checks.check_k` warns when a fixed k outnumbers the smallest).
    k=2 becomes 1: two uniform votes that disagree tie, and the tie goes to the smaller label,
    not to the nearer neighbour, so k=2 is 1-NN with a worse tie-break. Regimes: 397 classes
    x 2-3 -> 1; 100 classes x 8 -> 7; VTAB-1k's 10 classes x 80 -> 10.
    """
    values = train_class_counts.values() if isinstance(train_class_counts, Mapping) else train_class_counts
    counts = np.array([int(c) for c in values], dtype=np.int64)
    counts = counts[counts > 0]
    if counts.size == 0:
        raise DatasetError("auto k needs the training set's class sizes; the training split is empty.")
    k = int(min(AUTO_K_MAX, max(1, int(np.median(counts)) - 1)))
    return 1 if k == 2 else k


def resolve_k(k: int | str, labels: ArrayLike) -> int:
    """`k` as an int: `auto_k` of the class sizes of `labels` for "auto", else `k` itself."""
    if k == "auto":
        y = np.asarray(_as_numpy(labels), dtype=np.int64).ravel()
        if y.size and y.min() < 0:
            raise DatasetError("Labels must be class indices 0..C-1; map them with np.unique first.")
        return auto_k(np.bincount(y) if y.size else [])
    if isinstance(k, str) or isinstance(k, bool) or int(k) != k:
        raise ConfigError(f"k must be a positive integer or 'auto', got {k!r}.")
    return int(k)


def _openblas_coretype() -> str | None:
    """The OpenBLAS kernel family this CPU supports, from /proc/cpuinfo (Linux only)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= set(flags):
        return "SkylakeX"
    if {"avx2", "fma"} <= set(flags):
        return "Haswell"
    return None


def _faiss() -> ModuleType:
    """Import faiss, telling its bundled OpenBLAS which kernels to use.

    The OpenBLAS inside the faiss-cpu wheel predates recent CPUs and falls back to its slowest
    (Prescott) kernels on them, making the exact search about 4x slower than numpy's BLAS.
    `OPENBLAS_CORETYPE` is read when the library loads, so it must be set before the import;
    a value set by the user wins.
    """
    if "faiss" not in sys.modules and "OPENBLAS_CORETYPE" not in os.environ:
        core = _openblas_coretype()
        if core:
            os.environ["OPENBLAS_CORETYPE"] = core
            logger.debug("OPENBLAS_CORETYPE=%s for faiss", core)
    import faiss

    return faiss


def l2_normalise(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as C-contiguous float32 (zero rows stay zero)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


def _faiss_gpu(faiss: ModuleType) -> bool:
    """True when torch sees CUDA and this faiss build has GPU support and a GPU."""
    try:
        return torch.cuda.is_available() and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - an odd CUDA set-up falls back to the CPU
        return False


def _device_of(*arrays: ArrayLike, device: str | torch.device | None) -> torch.device:
    """Where the torch backend runs: `device` when given, else CUDA when an input lives there."""
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"kNN on {dev} was asked for, but torch sees no CUDA device; use device='cpu'.")
        return dev
    for a in arrays:
        if isinstance(a, torch.Tensor) and a.device.type != "cpu":
            return a.device
    return torch.device("cpu")


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend ('faiss' or 'torch') for `backend` on `device`.

    'auto': torch on CUDA, FAISS on the CPU (torch when faiss is not importable); the rule
    `bench/knn_loo.py` measures (module docstring).
    """
    if backend not in KNN_BACKENDS:
        raise ConfigError(f"Unknown kNN backend {backend!r}; choose one of {', '.join(KNN_BACKENDS)}.")
    if backend != "auto":
        return backend
    if device.type != "cpu":
        return "torch"
    try:
        _faiss()
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        return "torch"
    return "faiss"


def _as_numpy(X: ArrayLike) -> np.ndarray:
    if isinstance(X, torch.Tensor):
        return X.detach().to("cpu", torch.float32).numpy()
    return np.asarray(X)


def _check(X: ArrayLike, y: ArrayLike, k: int) -> tuple[ArrayLike, np.ndarray]:
    """Embeddings (as given) and int64 labels, after the shape, label, k and finiteness checks."""
    y = np.asarray(_as_numpy(y), dtype=np.int64)
    if not isinstance(X, torch.Tensor):
        X = np.asarray(X)
    if X.ndim != 2 or len(X) != len(y):
        raise DatasetError(
            f"Embeddings of shape {tuple(X.shape)} do not match {len(y)} labels; give one row per label."
        )
    if y.ndim != 1 or (len(y) and y.min() < 0):
        raise DatasetError("Labels must be a 1-d array of class indices 0..C-1; map them with np.unique first.")
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}.")
    finite = bool(torch.isfinite(X).all()) if isinstance(X, torch.Tensor) else bool(np.all(np.isfinite(X)))
    if not finite:
        raise DatasetError("Embeddings contain NaN or infinite values; check the model's output.")
    return X, y


def _normalised_tensor(X: ArrayLike, device: torch.device) -> torch.Tensor:
    """float32 rows of unit L2 norm on `device` (zero rows stay zero), as `l2_normalise`."""
    t = X if isinstance(X, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    t = t.to(device=device, dtype=torch.float32)
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _block_rows(n_base: int, block_bytes: int) -> int:
    """Queries per block so that a float32 (rows, n_base) similarity block fits `block_bytes`."""
    return max(1, block_bytes // (4 * max(n_base, 1)))


def _search_torch(
    base: torch.Tensor, queries: torch.Tensor, k: int, exclude: np.ndarray | None, block_bytes: int
) -> np.ndarray:
    """Indices (n_queries, k) of the k most similar base rows, most similar first; `exclude[i]`: a base row
    query i may not use."""
    out = np.empty((len(queries), k), dtype=np.int64)
    rows = _block_rows(len(base), block_bytes)
    excl = None if exclude is None else torch.from_numpy(np.asarray(exclude, dtype=np.int64)).to(base.device)
    with torch.inference_mode():
        for start in range(0, len(queries), rows):
            stop = min(start + rows, len(queries))
            sims = queries[start:stop] @ base.T
            if excl is not None:
                sims[torch.arange(stop - start, device=base.device), excl[start:stop]] = -torch.inf
            out[start:stop] = sims.topk(k, dim=1, sorted=True).indices.cpu().numpy()
    return out


def _search_faiss(base: np.ndarray, queries: np.ndarray, k: int, exclude: np.ndarray | None) -> np.ndarray:
    """As `_search_torch`, through a FAISS flat inner-product index (GPU when this build has one); FAISS
    returns each row most similar first, and dropping the query itself keeps that order."""
    faiss = _faiss()
    index = faiss.IndexFlatIP(base.shape[1])
    if _faiss_gpu(faiss):
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(base)
    if exclude is None:
        return index.search(queries, k)[1].astype(np.int64, copy=False)
    _, idx = index.search(queries, k + 1)
    n = len(queries)
    own = idx == np.asarray(exclude)[:, None]
    # drop the query itself; when duplicates pushed it out of the list, drop the last neighbour
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    return idx[keep].reshape(n, k).astype(np.int64, copy=False)


def _neighbours(
    base: ArrayLike,
    queries: ArrayLike | None,
    k: int,
    *,
    query_index: np.ndarray | None = None,
    backend: str,
    device: str | torch.device | None,
    block_bytes: int,
) -> np.ndarray:
    """k nearest base rows of each query (cosine), most similar first; `queries=None`: the base rows at
    `query_index`, each excluded from its own neighbours (leave-one-out)."""
    dev = _device_of(base, *(() if queries is None else (queries,)), device=device)
    chosen = resolve_backend(backend, dev)
    if chosen == "faiss":
        B = l2_normalise(_as_numpy(base))
        Q = B[query_index] if queries is None else l2_normalise(_as_numpy(queries))
        return _search_faiss(B, np.ascontiguousarray(Q), k, query_index if queries is None else None)
    Bt = _normalised_tensor(base, dev)
    if queries is None:
        assert query_index is not None
        Qt = Bt[torch.from_numpy(query_index).to(dev)]
        return _search_torch(Bt, Qt, k, query_index, block_bytes)
    return _search_torch(Bt, _normalised_tensor(queries, dev), k, None, block_bytes)


def _vote(neighbour_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Majority label per row of (n, k) neighbour labels; ties go to the smallest label."""
    n = len(neighbour_labels)
    rows = np.repeat(np.arange(n, dtype=np.int64), neighbour_labels.shape[1])
    counts = np.bincount(rows * n_classes + neighbour_labels.ravel(), minlength=n * n_classes)
    return counts.reshape(n, n_classes).argmax(axis=1)  # first maximum: the smallest tied label


def knn_predict(
    train_X: ArrayLike,
    train_y: ArrayLike,
    query_X: ArrayLike,
    k: int = 10,
    *,
    backend: Backend = "auto",
    device: str | torch.device | None = None,
    block_bytes: int = KNN_BLOCK_BYTES,
) -> np.ndarray:
    """Predicted labels of `query_X` (n_queries, d) by majority vote of its k most similar
    training points `train_X` (n_train, d); numpy arrays or torch tensors (CUDA ones stay there)."""
    X, y = _check(train_X, train_y, k)
    if len(X) == 0:
        raise DatasetError("kNN needs at least one training example; the training split is empty.")
    Q = query_X if isinstance(query_X, torch.Tensor) else np.asarray(query_X)
    if Q.ndim != 2 or Q.shape[1] != X.shape[1]:
        raise DatasetError(
            f"Query embeddings of shape {tuple(Q.shape)} do not match training embeddings of dimension "
            f"{X.shape[1]}; embed both with the same model and resolution."
        )
    if k > len(X):
        raise ConfigError(
            f"k={k} neighbours but only {len(X)} training examples; lower k below {len(X) + 1} or add examples."
        )
    if len(Q) == 0:
        return np.zeros(0, dtype=np.int64)
    idx = _neighbours(X, Q, k, backend=backend, device=device, block_bytes=block_bytes)
    return _vote(y[idx], int(y.max()) + 1)


def knn_accuracy(
    train_X: ArrayLike,
    train_y: ArrayLike,
    query_X: ArrayLike,
    query_y: ArrayLike,
    k: int = 10,
    *,
    backend: Backend = "auto",
    device: str | torch.device | None = None,
    block_bytes: int = KNN_BLOCK_BYTES,
) -> float:
    """Accuracy of `knn_predict` on labelled queries (e.g. train-to-val)."""
    query_y = np.asarray(_as_numpy(query_y))
    if len(query_y) != len(query_X):
        raise DatasetError(f"{len(query_X)} query embeddings but {len(query_y)} query labels; give one each.")
    if len(query_y) == 0:
        raise DatasetError("kNN accuracy needs at least one query; the query split is empty.")
    pred = knn_predict(train_X, train_y, query_X, k, backend=backend, device=device, block_bytes=block_bytes)
    return float(np.mean(pred == query_y))


def loo_queries(y: ArrayLike, max_queries: int | None = LOO_MAX_QUERIES, seed: int = 0) -> np.ndarray:
    """Sorted indices of the leave-one-out queries: all of them up to `max_queries`, else a seeded
    class-stratified subsample of `max_queries` (each class in proportion to its frequency, the
    largest remainders rounded up, ties to the smaller label)."""
    y = np.asarray(_as_numpy(y), dtype=np.int64)
    n = len(y)
    if max_queries is not None and max_queries < 1:
        raise ConfigError(f"max_queries must be at least 1 (or None for every point), got {max_queries}.")
    if max_queries is None or n <= max_queries:
        return np.arange(n, dtype=np.int64)
    classes, counts = np.unique(y, return_counts=True)
    quotas = counts * max_queries / n
    take = np.floor(quotas).astype(np.int64)
    rest = max_queries - int(take.sum())
    order = sorted(range(len(classes)), key=lambda c: (-(quotas[c] - take[c]), c))
    take[order[:rest]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(y == c))[:t] for c, t in zip(classes, take, strict=False)]
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True)
class LooEstimate:
    """A leave-one-out kNN accuracy and the queries it was measured on.

    `queries`: indices of the held-out points (every point when `subsampled` is False);
    `knn1_accuracy`: leave-one-out 1-NN accuracy on the same queries, from the same search (the
    nearest of the k neighbours); `k`: the neighbours behind `accuracy`."""

    accuracy: float
    queries: np.ndarray
    n: int
    knn1_accuracy: float | None = None
    k: int | None = None

    @property
    def n_queries(self) -> int:
        return len(self.queries)

    @property
    def subsampled(self) -> bool:
        return self.n_queries < self.n


def knn_loo(
    X: ArrayLike,
    y: ArrayLike,
    k: int | Literal["auto"] = 10,
    *,
    max_queries: int | None = LOO_MAX_QUERIES,
    seed: int = 0,
    backend: Backend = "auto",
    device: str | torch.device | None = None,
    block_bytes: int = KNN_BLOCK_BYTES,
) -> LooEstimate:
    """Leave-one-out kNN accuracy of X (n, d): each query is classified by its k nearest *other*
    points (`k="auto"`: `auto_k` of y's class sizes), and its 1-NN accuracy from the same search.
    Over `max_queries` points, the queries are `loo_queries(y, max_queries, seed)`."""
    k = resolve_k(k, y)
    X, y = _check(X, y, k)
    n = len(X)
    if n < 2:
        raise DatasetError("Leave-one-out kNN needs at least two examples.")
    if k >= n:
        # each query would vote over every other point: the score says nothing about the embedding
        raise ConfigError(
            f"k={k} neighbours but only {n} examples; leave-one-out leaves the query out, so k must be "
            f"smaller than {n}: lower k or add examples."
        )
    queries = loo_queries(y, max_queries, seed)
    if len(queries) < n:
        logger.info("leave-one-out kNN over %d of %d points (stratified, seed %d)", len(queries), n, seed)
    idx = _neighbours(X, None, k, query_index=queries, backend=backend, device=device, block_bytes=block_bytes)
    pred = _vote(y[idx], int(y.max()) + 1)
    truth = y[queries]
    return LooEstimate(
        float(np.mean(pred == truth)), queries, n, knn1_accuracy=float(np.mean(y[idx[:, 0]] == truth)), k=k
    )


def knn_loo_accuracy(
    X: ArrayLike,
    y: ArrayLike,
    k: int | Literal["auto"] = 10,
    *,
    max_queries: int | None = LOO_MAX_QUERIES,
    seed: int = 0,
    backend: Backend = "auto",
    device: str | torch.device | None = None,
    block_bytes: int = KNN_BLOCK_BYTES,
) -> float:
    """Leave-one-out kNN accuracy (`knn_loo(...).accuracy`)."""
    return knn_loo(
        X, y, k, max_queries=max_queries, seed=seed, backend=backend, device=device, block_bytes=block_bytes
    ).accuracy


def logme_score(X: np.ndarray, y: np.ndarray, max_iter: int = 100, tol: float = 1e-5) -> float:
    """LogME (Yu et al., 2021): mean per-class log marginal evidence of a Bayesian linear model.

    For each one-vs-rest target, the prior precision alpha and noise precision beta are found
    by the evidence fixed point in the eigenbasis of F^T F; the score is the maximised log
    evidence divided by n, averaged over classes. Higher is better.
    """
    F = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    n, d = F.shape
    U, s, _ = np.linalg.svd(F, full_matrices=False)
    sigma = s**2
    r = len(s)
    scores = []
    for c in np.unique(y):
        t = (y == c).astype(np.float64)
        f = U.T @ t
        outside = float(t @ t - f @ f)  # part of t outside the span of F
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            denom = alpha + beta * sigma
            gamma = float(np.sum(beta * sigma / denom))
            m = beta * s * f / denom  # posterior mean in the eigenbasis
            mm = float(m @ m)
            res = float(np.sum((f - s * m) ** 2)) + max(outside, 0.0)
            new_alpha = gamma / max(mm, 1e-12)
            new_beta = max(n - gamma, 1e-12) / max(res, 1e-12)
            done = abs(new_alpha - alpha) / alpha < tol and abs(new_beta - beta) / beta < tol
            alpha, beta = new_alpha, new_beta
            if done:
                break
        denom = alpha + beta * sigma
        m = beta * s * f / denom
        mm = float(m @ m)
        res = float(np.sum((f - s * m) ** 2)) + max(outside, 0.0)
        evidence = (
            n / 2 * np.log(beta)
            + d / 2 * np.log(alpha)
            - n / 2 * np.log(2 * np.pi)
            - beta / 2 * res
            - alpha / 2 * mm
            - 0.5 * (np.sum(np.log(denom)) + (d - r) * np.log(alpha))
        )
        scores.append(evidence / n)
    return float(np.mean(scores))
