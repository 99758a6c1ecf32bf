"""Both kNN backends (FAISS, blocked torch) against scikit-learn brute force and each other, the
block budget, and the stratified leave-one-out subsample against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.neighbors import KNeighborsClassifier

from zooens.errors import ConfigError
from zooens.selection.knn import (
    _neighbours,
    knn_accuracy,
    knn_loo,
    knn_loo_accuracy,
    knn_predict,
    loo_queries,
    resolve_backend,
)

BACKENDS = ["faiss", "torch"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _random(n=300, d=16, classes=5, seed=0):
    """Gaussian points around class centres: no two similarities tie (continuous data)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return (rng.normal(size=(classes, d))[y] * 0.7 + rng.normal(size=(n, d))).astype(np.float32), y


def _sklearn_loo_predictions(X, y, k):
    """k+1 brute-force cosine neighbours of every point by scikit-learn, the point itself (always
    first: no duplicates) dropped, then scipy's mode of the rest (ties: the smallest label)."""
    idx = (
        KNeighborsClassifier(n_neighbors=k + 1, metric="cosine", algorithm="brute")
        .fit(X, y)
        .kneighbors(X, return_distance=False)
    )
    assert (idx[:, 0] == np.arange(len(X))).all()
    return stats.mode(y[idx[:, 1:]], axis=1, keepdims=False).mode


def _brute_loo_predictions(X, y, k, queries):
    """Exact LOO by a full similarity matrix in float64: query i never its own neighbour."""
    Xn = X.astype(np.float64) / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn[queries] @ Xn.T
    S[np.arange(len(queries)), queries] = -np.inf
    nb = np.argsort(-S, axis=1, kind="stable")[:, :k]
    counts = np.stack([np.bincount(y[row], minlength=y.max() + 1) for row in nb])
    return counts.argmax(axis=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 4, 10])
def test_loo_equals_scikit_learn_brute_force(backend, k):
    X, y = _random(seed=k)
    ref = float(np.mean(_sklearn_loo_predictions(X, y, k) == y))
    assert knn_loo_accuracy(X, y, k, backend=backend) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 3, 10])
def test_predict_and_accuracy_equal_scikit_learn(backend, k):
    X, y = _random(n=400, seed=10 + k)
    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(X[:300], y[:300])
    np.testing.assert_array_equal(knn_predict(X[:300], y[:300], X[300:], k, backend=backend), clf.predict(X[300:]))
    assert knn_accuracy(X[:300], y[:300], X[300:], y[300:], k, backend=backend) == pytest.approx(
        clf.score(X[300:], y[300:]), abs=1e-12
    )


def test_backends_find_the_same_neighbours_whatever_the_block():
    X, y = _random(n=500, d=32, seed=3)
    queries = np.arange(0, 500, 3)
    sets = {}
    for backend, block in [("faiss", 0), ("torch", 4 * 500), ("torch", 4 * 500 * 37), ("torch", 2**28)]:
        idx = _neighbours(X, None, 7, query_index=queries, backend=backend, device=None, block_bytes=block)
        assert idx.shape == (len(queries), 7) and not (idx == queries[:, None]).any()
        sets[(backend, block)] = np.sort(idx, axis=1)
    first = next(iter(sets.values()))
    for got in sets.values():
        np.testing.assert_array_equal(got, first)
    pred = {b: knn_predict(X[:400], y[:400], X[400:], 5, backend=b, block_bytes=4 * 400 * 3) for b in BACKENDS}
    np.testing.assert_array_equal(pred["faiss"], pred["torch"])


def test_torch_tensors_in_give_the_numpy_answer():
    X, y = _random(seed=5)
    ref = knn_loo_accuracy(X, y, 5, backend="faiss")
    assert knn_loo_accuracy(torch.from_numpy(X), torch.from_numpy(y), 5, backend="torch") == ref
    assert knn_loo_accuracy(torch.from_numpy(X), y, 5, backend="faiss") == ref


@CUDA
@pytest.mark.parametrize("on_device", [True, False])
def test_cuda_torch_equals_cpu_faiss(on_device):
    X, y = _random(n=600, d=64, seed=6)
    ref = knn_loo(X, y, 5, backend="faiss", device="cpu").accuracy
    Xc = torch.from_numpy(X).cuda() if on_device else X
    assert knn_loo(Xc, y, 5, device=None if on_device else "cuda").accuracy == ref


def test_auto_rule_and_bad_backend():
    assert resolve_backend("auto", torch.device("cpu")) == "faiss"
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    assert resolve_backend("torch", torch.device("cpu")) == "torch"
    X, y = _random(n=20)
    with pytest.raises(ConfigError, match="backend"):
        knn_loo_accuracy(X, y, 3, backend="annoy")
    with pytest.raises(ConfigError, match="max_queries"):
        knn_loo_accuracy(X, y, 3, max_queries=0)


def test_loo_queries_are_stratified_seeded_and_everything_when_small():
    rng = np.random.default_rng(0)
    y = rng.choice(4, size=5000, p=[0.5, 0.3, 0.15, 0.05])
    q = loo_queries(y, 700, seed=1)
    assert len(q) == 700 == len(np.unique(q)) and (np.diff(q) > 0).all()
    expected = np.bincount(y) * 700 / len(y)
    assert np.all(np.abs(np.bincount(y[q], minlength=4) - expected) < 1)  # every class within one of its share
    np.testing.assert_array_equal(q, loo_queries(y, 700, seed=1))
    assert not np.array_equal(q, loo_queries(y, 700, seed=2))
    np.testing.assert_array_equal(loo_queries(y, 5000), np.arange(5000))
    np.testing.assert_array_equal(loo_queries(y, None), np.arange(5000))


@pytest.mark.parametrize("backend", BACKENDS)
def test_subsampled_loo_equals_brute_force_on_its_queries(backend):
    X, y = _random(n=1200, d=24, classes=6, seed=7)
    est = knn_loo(X, y, 5, max_queries=250, seed=3, backend=backend)
    assert est.subsampled and est.n_queries == 250 and est.n == 1200
    np.testing.assert_array_equal(est.queries, loo_queries(y, 250, seed=3))
    ref = _brute_loo_predictions(X, y, 5, est.queries)
    assert est.accuracy == pytest.approx(float(np.mean(ref == y[est.queries])), abs=1e-12)
    again = knn_loo(X, y, 5, max_queries=250, seed=3, backend=backend)
    assert again.accuracy == est.accuracy
    full = knn_loo(X, y, 5, max_queries=None, backend=backend)
    assert not full.subsampled and full.n_queries == 1200
    assert full.accuracy == pytest.approx(float(np.mean(_brute_loo_predictions(X, y, 5, np.arange(1200)) == y)))
