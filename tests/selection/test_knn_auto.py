"""`k="auto"` (`knn.auto_k` of the class sizes) and kNN@1 from the same search as kNN@k, against a brute-force
numpy leave-one-out 1-NN; the job parameter, its checks and its command-line spelling."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from zooens.errors import ConfigError, DatasetError
from zooens.pipeline.checks import check_k
from zooens.pipeline.params import JobParams, parse_params
from zooens.selection.knn import AUTO_K_MAX, auto_k, knn_loo, resolve_k


@pytest.mark.parametrize(
    "counts, k",
    [
        ([2] * 397, 1),  # SUN397 at VTAB-1k's 800: about two a class
        ([2, 3] * 200, 1),  # two or three a class: median 2 or 3 -> 1 or 2 -> 1 (k=2 is 1-NN with a worse tie-break)
        ([3] * 300, 1),
        ([4] * 100, 3),
        ([8] * 100, 7),  # Caltech101-like: about eight a class
        ([80] * 10, 10),  # VTAB-1k's 10 classes of 80
        ([50] * 16, 10),
        ([1000] * 2, AUTO_K_MAX),
        ([1] * 50, 1),  # one a class: the nearest other point is all there is
        ([80] * 9 + [1], 10),  # one rare class does not set k for the others (the median does)
    ],
)
def test_auto_k_follows_the_class_sizes(counts, k):
    assert auto_k(counts) == k
    assert auto_k({f"c{i}": c for i, c in enumerate(counts)}) == k  # a class -> count mapping too


def test_auto_k_ignores_empty_classes_and_refuses_no_data():
    assert auto_k([0, 0, 5, 5, 5]) == 4
    with pytest.raises(DatasetError):
        auto_k([0, 0])
    with pytest.raises(DatasetError):
        auto_k([])


def test_auto_k_is_always_a_legal_leave_one_out_k():
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(0, 30, rng.integers(1, 40))
        if counts.sum() < 2:
            continue
        k = auto_k(counts)
        assert 1 <= k <= AUTO_K_MAX and k < counts.sum()


def test_resolve_k():
    y = np.repeat(np.arange(5), 6)  # 6 a class
    assert resolve_k("auto", y) == 5
    assert resolve_k(7, y) == 7
    with pytest.raises(ConfigError):
        resolve_k("five", y)


def _brute_force_loo_1nn(X: np.ndarray, y: np.ndarray, queries: np.ndarray) -> float:
    """Cosine leave-one-out 1-NN in float64 numpy: each query's most similar other point."""
    Xn = X.astype(np.float64) / np.maximum(np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True), 1e-12)
    sims = Xn[queries] @ Xn.T
    sims[np.arange(len(queries)), queries] = -np.inf
    return float(np.mean(y[sims.argmax(axis=1)] == y[queries]))


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("k", [1, 3, 10, "auto"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knn1_equals_brute_force_leave_one_out_1nn(backend, k, seed):
    rng = np.random.default_rng(seed)
    n, d, classes = 300, 16, 12
    y = rng.integers(0, classes, n)
    X = (rng.normal(size=(classes, d))[y] * 0.7 + rng.normal(size=(n, d))).astype(np.float32)
    loo = knn_loo(X, y, k, backend=backend)
    assert loo.knn1_accuracy == pytest.approx(_brute_force_loo_1nn(X, y, loo.queries), abs=1e-12)
    assert loo.k == resolve_k(k, y)
    assert knn_loo(X, y, 1, backend=backend).accuracy == pytest.approx(loo.knn1_accuracy, abs=1e-12)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_knn1_on_subsampled_queries(backend):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 20, 600)
    X = rng.normal(size=(600, 8)).astype(np.float32) + np.eye(20, 8)[y] * 2
    loo = knn_loo(X, y, "auto", max_queries=150, backend=backend)
    assert loo.subsampled and loo.n_queries == 150
    assert loo.knn1_accuracy == pytest.approx(_brute_force_loo_1nn(X, y, loo.queries), abs=1e-12)


def test_job_params_k_is_auto_by_default_and_takes_bounded_ints():
    assert JobParams().k == "auto"
    assert JobParams(k=5).k == 5 and JobParams(k="7").k == 7
    assert JobParams.model_validate(JobParams().model_dump()).k == "auto"  # a job row reads back
    for bad in (0, 1001, "many", 2.5):
        with pytest.raises(ConfigError, match="k"):
            parse_params(k=bad)


def test_check_k_takes_auto_whatever_the_class_sizes(caplog):
    tiny = {"a": 2, "b": 1}
    with caplog.at_level(logging.WARNING):
        check_k("d", tiny, has_val=True, params=JobParams(k="auto"))
    assert not caplog.records
    with pytest.raises(ConfigError, match="k=10"):
        check_k("d", tiny, has_val=True, params=JobParams(k=10))
