"""Embedding through the cache matches a bare timm forward pass; a cache hit builds no model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zooens.selection.cache import EmbeddingCache
from zooens.selection.datasets import ImageDataset, Split
from zooens.selection.embed import embed_split, embed_with_cache
from zooens.selection.ranking import ranking_table, score_model


@pytest.fixture
def tiny(zooens_home):
    from zooens.zoo.testing import register_random_model

    register_random_model("tiny-effnet", "test_efficientnet", zooens_home / "w")
    register_random_model("tiny-resnet", "test_resnet", zooens_home / "w")
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 12)
    imgs = rng.integers(0, 255, (36, 20, 20, 3), dtype=np.uint8)
    imgs[..., 0] = np.clip(imgs[..., 0] // 4 + 80 * y[:, None, None], 0, 255)  # class shows in red
    ds = ImageDataset("toy", ["a", "b", "c"], {"train": Split("train", imgs[::2], y[::2]),
                                               "val": Split("val", imgs[1::2], y[1::2])})
    return zooens_home, ds


def test_embed_split_matches_bare_timm_forward(tiny):
    import timm
    from timm.data import create_transform

    from zooens import zoo

    _, ds = tiny
    model = zoo.create_model("tiny-effnet")
    cfg = zoo.data_config("tiny-effnet", resolution=48)
    ours = embed_split(model, cfg, ds.split("train"), batch_size=7, progress=False)
    tf = create_transform(**cfg, is_training=False)
    batch = torch.stack([tf(ds.split("train").image(i)) for i in range(len(ds.split("train")))])
    with torch.no_grad():
        ref = model(batch).numpy()
    assert ours.shape == ref.shape == (18, model.num_features)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_second_call_is_a_cache_hit_without_a_model(tiny, monkeypatch):
    from zooens import zoo

    home, ds = tiny
    cache = EmbeddingCache(home / "cache")
    first = embed_with_cache("tiny-resnet", ds, "train", cache=cache, resolution=32, progress=False)
    assert not first.cached and first.path.is_file()

    def boom(*a, **k):
        raise AssertionError("a cache hit must not build a model")

    monkeypatch.setattr(zoo, "create_model", boom)
    second = embed_with_cache("tiny-resnet", ds, "train", cache=cache, resolution=32, progress=False)
    assert second.cached and second.key == first.key
    np.testing.assert_array_equal(second.embeddings, first.embeddings)
    with pytest.raises(AssertionError, match="cache hit"):  # another resolution is another key
        embed_with_cache("tiny-resnet", ds, "train", cache=cache, resolution=40, progress=False)


def test_score_and_rank(tiny):
    from sklearn.neighbors import KNeighborsClassifier

    home, ds = tiny
    cache = EmbeddingCache(home / "cache")
    scores = [score_model(m, ds, k=3, cache=cache, resolution=32, progress=False) for m in ("tiny-effnet", "tiny-resnet")]
    table = ranking_table(scores)
    assert list(table["knn_accuracy"]) == sorted(table["knn_accuracy"], reverse=True)
    s = scores[0]
    tr = embed_with_cache("tiny-effnet", ds, "train", cache=cache, resolution=32, progress=False).embeddings
    va = embed_with_cache("tiny-effnet", ds, "val", cache=cache, resolution=32, progress=False).embeddings
    ref = KNeighborsClassifier(n_neighbors=3, metric="cosine", algorithm="brute").fit(tr, ds.split("train").labels)
    assert s.val_accuracy == pytest.approx(ref.score(va, ds.split("val").labels))
    assert s.embed_dim == tr.shape[1] and not s.cached
