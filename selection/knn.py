"""k-nearest-neighbour accuracy of embeddings with FAISS (cosine similarity), and LogME.

Cosine similarity is the inner product of L2-normalised float32 vectors. Votes are uniform;
among tied classes the smallest label wins, exactly as scikit-learn's KNeighborsClassifier
(weights='uniform') decides.
"""
from __future__ import annotations

import logging
import os
import sys
from types import ModuleType

import numpy as np
import torch

from zooens.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

__all__ = ["knn_loo_accuracy", "knn_predict", "knn_accuracy", "logme_score", "l2_normalise"]


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


def _use_gpu() -> bool:
    """True when torch sees CUDA and this faiss build has GPU support and a GPU."""
    faiss = _faiss()
    try:
        return torch.cuda.is_available() and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - an odd CUDA set-up falls back to the CPU
        return False


def _search(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices (n_queries, k) of the most similar base vectors, most similar first."""
    faiss = _faiss()

    index = faiss.IndexFlatIP(base.shape[1])
    if _use_gpu():
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(base)
    _, idx = index.search(queries, k)
    return idx


def _vote(neighbour_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Majority label per row of (n, k) neighbour labels; ties go to the smallest label."""
    counts = np.zeros((len(neighbour_labels), n_classes), dtype=np.int64)
    rows = np.repeat(np.arange(len(neighbour_labels)), neighbour_labels.shape[1])
    np.add.at(counts, (rows, neighbour_labels.ravel()), 1)
    return counts.argmax(axis=1)  # first maximum: the smallest tied label


def _check(X: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    y = np.asarray(y, dtype=np.int64)
    if X.ndim != 2 or len(X) != len(y):
        raise DatasetError(
            f"Embeddings of shape {X.shape} do not match {len(y)} labels; give one row per label."
        )
    if y.ndim != 1 or (len(y) and y.min() < 0):
        raise DatasetError("Labels must be a 1-d array of class indices 0..C-1; map them with np.unique first.")
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}.")
    if not np.all(np.isfinite(X)):
        raise DatasetError("Embeddings contain NaN or infinite values; check the model's output.")
    return l2_normalise(X), y


def knn_predict(train_X: np.ndarray, train_y: np.ndarray, query_X: np.ndarray, k: int = 10) -> np.ndarray:
    """Predicted labels of `query_X` by majority vote of its k most similar training points."""
    Xn, y = _check(train_X, train_y, k)
    if len(Xn) == 0:
        raise DatasetError("kNN needs at least one training example; the training split is empty.")
    Q = np.asarray(query_X)
    if Q.ndim != 2 or Q.shape[1] != Xn.shape[1]:
        raise DatasetError(
            f"Query embeddings of shape {Q.shape} do not match training embeddings of dimension "
            f"{Xn.shape[1]}; embed both with the same model and resolution."
        )
    if k > len(Xn):
        raise ConfigError(
            f"k={k} neighbours but only {len(Xn)} training examples; lower k below {len(Xn) + 1} or add examples."
        )
    Q = l2_normalise(Q)
    k_eff = k
    idx = _search(Xn, Q, k_eff)
    return _vote(y[idx], int(y.max()) + 1)


def knn_accuracy(
    train_X: np.ndarray, train_y: np.ndarray, query_X: np.ndarray, query_y: np.ndarray, k: int = 10
) -> float:
    """Accuracy of `knn_predict` on labelled queries (e.g. train-to-val)."""
    query_y = np.asarray(query_y)
    if len(query_y) != len(query_X):
        raise DatasetError(f"{len(query_X)} query embeddings but {len(query_y)} query labels; give one each.")
    if len(query_y) == 0:
        raise DatasetError("kNN accuracy needs at least one query; the query split is empty.")
    pred = knn_predict(train_X, train_y, query_X, k)
    return float(np.mean(pred == query_y))


def knn_loo_accuracy(X: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Leave-one-out kNN accuracy: each point is classified by its k nearest *other* points."""
    Xn, y = _check(X, y, k)
    n = len(Xn)
    if n < 2:
        raise DatasetError("Leave-one-out kNN needs at least two examples.")
    if k >= n:
        # each query would vote over every other point: the score says nothing about the embedding
        raise ConfigError(
            f"k={k} neighbours but only {n} examples; leave-one-out leaves the query out, so k must be "
            f"smaller than {n}: lower k or add examples."
        )
    k_eff = k
    idx = _search(Xn, Xn, k_eff + 1)
    own = idx == np.arange(n)[:, None]
    # drop the point itself; when duplicates pushed it out of the list, drop the last neighbour
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k_eff)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    neighbours = idx[keep].reshape(n, k_eff)
    pred = _vote(y[neighbours], int(y.max()) + 1)
    return float(np.mean(pred == y))


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
            n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
            - beta / 2 * res - alpha / 2 * mm
            - 0.5 * (np.sum(np.log(denom)) + (d - r) * np.log(alpha))
        )
        scores.append(evidence / n)
    return float(np.mean(scores))
