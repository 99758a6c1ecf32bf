"""kNN (the default backend; both backends in test_knn_backends.py) against scikit-learn's
KNeighborsClassifier on the same embeddings; LogME sanity."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from zooens.selection.knn import knn_accuracy, knn_loo_accuracy, knn_predict, logme_score


def _clustered(n=240, d=24, classes=6, spread=1.5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, d)) * spread
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


def _sklearn_loo(X, y, k):
    pred = np.empty(len(X), dtype=np.int64)
    for i in range(len(X)):
        mask = np.arange(len(X)) != i
        clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(X[mask], y[mask])
        pred[i] = clf.predict(X[i : i + 1])[0]
    return float(np.mean(pred == y))


@pytest.mark.parametrize("k", [1, 2, 4, 10])
@pytest.mark.parametrize("spread", [0.3, 2.0])  # low spread: many tied votes
def test_loo_accuracy_equals_scikit_learn(k, spread):
    X, y = _clustered(spread=spread, seed=k)
    assert knn_loo_accuracy(X, y, k) == pytest.approx(_sklearn_loo(X, y, k), abs=1e-12)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_train_to_val_accuracy_and_predictions_equal_scikit_learn(k):
    X, y = _clustered(n=400, spread=0.8, seed=1)
    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(X[:300], y[:300])
    np.testing.assert_array_equal(knn_predict(X[:300], y[:300], X[300:], k), clf.predict(X[300:]))
    assert knn_accuracy(X[:300], y[:300], X[300:], y[300:], k) == pytest.approx(clf.score(X[300:], y[300:]))


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_duplicate_points_do_not_count_themselves(backend):
    X, y = _clustered(n=60, seed=3)
    X2, y2 = np.concatenate([X, X]), np.concatenate([y, (y + 1) % 6])  # each point has a twin of another class
    acc = knn_loo_accuracy(X2, y2, k=1, backend=backend)
    assert acc == 0.0  # the nearest *other* point is always the mislabelled twin


def test_bad_inputs():
    from zooens.errors import ConfigError, DatasetError

    X, y = _clustered(n=20)
    with pytest.raises(ConfigError):
        knn_loo_accuracy(X, y, k=0)
    with pytest.raises(DatasetError):
        knn_loo_accuracy(X, y[:-1], k=3)
    X[0, 0] = np.nan
    with pytest.raises(DatasetError, match="NaN"):
        knn_loo_accuracy(X, y, k=3)


def test_logme_prefers_informative_features():
    X, y = _clustered(n=300, spread=2.0, seed=4)
    rng = np.random.default_rng(0)
    assert logme_score(X, y) > logme_score(X, rng.permutation(y))
    assert logme_score(X, y) > logme_score(rng.normal(size=X.shape), y)
    assert np.isfinite(logme_score(X[:, :3], y))
