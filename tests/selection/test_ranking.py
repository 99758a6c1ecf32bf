"""The ranking says how many leave-one-out queries each kNN accuracy used."""

from __future__ import annotations

import numpy as np

from zooens.selection.cache import EmbeddingCache
from zooens.selection.datasets import ImageDataset, Split
from zooens.selection.embed import embed_with_cache
from zooens.selection.knn import knn_loo, loo_queries
from zooens.selection.ranking import RANKING_COLUMNS, ModelScore, ranking_table, score_model
from zooens.zoo.testing import register_random_model


def test_ranking_table_has_knn_queries():
    score = ModelScore("m", 0.5, 0.4, 0.0, 1.0, None, 10, 8, True, 10, knn_queries=7)
    table = ranking_table([score])
    assert "knn_queries" in RANKING_COLUMNS and table.columns.tolist() == RANKING_COLUMNS
    assert table.loc[0, "knn_queries"] == 7


def test_score_model_reports_its_loo_queries(zooens_home):
    register_random_model("tiny-resnet", "test_resnet", zooens_home / "w")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    imgs = rng.integers(0, 255, (30, 16, 16, 3), dtype=np.uint8)
    ds = ImageDataset("toy", ["a", "b", "c"], {"train": Split("train", imgs, y)})
    cache = EmbeddingCache(zooens_home / "cache")
    full = score_model("tiny-resnet", ds, k=3, cache=cache, resolution=32, progress=False)
    assert full.knn_queries == 30
    sub = score_model("tiny-resnet", ds, k=3, cache=cache, resolution=32, progress=False, max_queries=12)
    assert sub.knn_queries == 12 and sub.cached
    emb = embed_with_cache("tiny-resnet", ds, "train", cache=cache, resolution=32, progress=False).embeddings
    ref = knn_loo(emb, y, 3, max_queries=None)
    assert full.knn_accuracy == ref.accuracy
    assert sub.knn_accuracy == knn_loo(emb, y, 3, max_queries=12).accuracy
    assert len(loo_queries(y, 12)) == 12
