"""kNN tie-breaks and LogME against independent references; ranking order; cache robustness."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import BayesianRidge
from sklearn.neighbors import KNeighborsClassifier

from zooens.selection.cache import EmbeddingCache, cache_key
from zooens.selection.knn import knn_accuracy, knn_loo_accuracy, knn_predict, logme_score
from zooens.selection.ranking import ModelScore, ranking_table


def test_vote_ties_go_to_the_smallest_label_like_scikit_learn():
    # the query sits between two points of class 5 and two of class 2: a 2-2 tie at k=4
    X = np.array([[1, 0.1], [1, -0.1], [0.1, 1], [-0.1, 1], [-1, 0]], np.float32)
    y = np.array([5, 5, 2, 2, 7])
    q = np.array([[1, 1]], np.float32)
    clf = KNeighborsClassifier(n_neighbors=4, metric="cosine", algorithm="brute").fit(X, y)
    assert knn_predict(X, y, q, k=4).tolist() == clf.predict(q).tolist() == [2]


@pytest.mark.parametrize("k", [2, 4, 6])
def test_two_class_even_k_many_ties_equals_scikit_learn(k):
    rng = np.random.default_rng(k)
    y = rng.integers(0, 2, 300) * 3 + 1  # labels {1, 4}: not 0..C-1 contiguous
    X = (rng.normal(size=(300, 8)) + 0.2 * y[:, None]).astype(np.float32)  # heavy overlap -> tied votes
    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(X[:200], y[:200])
    np.testing.assert_array_equal(knn_predict(X[:200], y[:200], X[200:], k), clf.predict(X[200:]))
    # LOO reference: for each i, a classifier fitted without i
    pred = [
        KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
        .fit(np.delete(X, i, 0), np.delete(y, i))
        .predict(X[i : i + 1])[0]
        for i in range(len(X))
    ]
    assert knn_loo_accuracy(X, y, k) == pytest.approx(np.mean(np.array(pred) == y), abs=1e-12)


def test_knn_accuracy_rejects_mismatched_queries():
    from zooens.errors import DatasetError

    X = np.eye(4, dtype=np.float32)
    with pytest.raises(DatasetError, match="dimension"):
        knn_accuracy(X, [0, 1, 0, 1], np.ones((2, 3), np.float32), [0, 1], k=1)
    with pytest.raises(DatasetError, match="query labels"):
        knn_accuracy(X, [0, 1, 0, 1], X, [0, 1], k=1)
    with pytest.raises(DatasetError, match="class indices"):
        knn_loo_accuracy(X, [0, -1, 0, 1], k=1)


def _bayesian_ridge_logme(F: np.ndarray, y: np.ndarray) -> float:
    """LogME via scikit-learn's evidence-maximising BayesianRidge (flat hyper-priors, no intercept)."""
    per_class = []
    for c in np.unique(y):
        t = (y == c).astype(np.float64)
        br = BayesianRidge(
            max_iter=5000,
            tol=1e-12,
            alpha_1=0,
            alpha_2=0,
            lambda_1=0,
            lambda_2=0,
            fit_intercept=False,
            compute_score=True,
        ).fit(F, t)
        per_class.append(br.scores_[-1] / len(F))
    return float(np.mean(per_class))


@pytest.mark.parametrize("n,d", [(300, 16), (40, 64)])  # more samples than features, and fewer
def test_logme_equals_evidence_of_scikit_learn_bayesian_ridge(n, d):
    rng = np.random.default_rng(n)
    y = rng.integers(0, 4, n)
    F = rng.normal(size=(4, d))[y] + rng.normal(size=(n, d))
    assert logme_score(F, y) == pytest.approx(_bayesian_ridge_logme(F, y), rel=1e-4, abs=1e-4)


def test_logme_ranks_separable_above_shuffled_labels():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 400)
    F = rng.normal(size=(5, 32))[y] * 3 + rng.normal(size=(400, 32))
    assert logme_score(F, y) > logme_score(F, rng.permutation(y)) + 0.1


def _score(name: str, knn: float, val: float) -> ModelScore:
    return ModelScore(name, knn, val, 0.0, 1.0, None, 10, 8, True, 10)


def test_ranking_table_order_columns_and_nan_last():
    table = ranking_table(
        [
            _score("c", 0.8, math.nan),
            _score("b", 0.9, 0.5),
            _score("a", 0.9, 0.5),
            _score("d", 0.9, 0.7),
            _score("e", 0.8, 0.1),
        ]
    )
    assert table["model_name"].tolist() == ["d", "a", "b", "e", "c"]
    assert table.columns[:9].tolist() == [
        "model_name",
        "knn_accuracy",
        "val_accuracy",
        "logme",
        "embed_seconds",
        "images_per_s",
        "params",
        "embed_dim",
        "cached",
    ]


def test_cache_round_trip_and_bad_entries_are_misses(tmp_path):
    cache = EmbeddingCache(tmp_path)
    key = cache_key("m", "sha", "fp", "train", {"input_size": (3, 32, 32)})
    assert key != cache_key("m", "sha", "fp", "val", {"input_size": (3, 32, 32)})
    assert key == cache_key("m", "sha", "fp", "train", {"input_size": (3, 32, 32)})
    assert cache.get(key) is None and key not in cache
    emb = np.random.default_rng(0).normal(size=(5, 3))
    path = cache.put(key, emb, meta={"n": 5})
    got = cache.get(key, n_rows=5)
    assert got.dtype == np.float32 and np.allclose(got, emb) and cache.meta(key) == {"n": 5}
    assert not list(path.parent.glob("*.tmp"))  # nothing half-written left behind
    assert cache.get(key, n_rows=6) is None  # another number of images: not this entry
    path.write_bytes(path.read_bytes()[:60])  # truncated file: a miss, not a crash
    assert cache.get(key) is None
