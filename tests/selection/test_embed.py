"""Embedding through the cache matches a bare timm forward pass; a cache hit builds no model; a zoo
sharing one preprocessing decodes the data once; a model is built once for all its splits."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from timm.data import create_transform

from zooens import zoo
from zooens.selection import decoded as decoded_module
from zooens.selection.cache import EmbeddingCache
from zooens.selection.datasets import ImageDataset, Split
from zooens.selection.embed import (
    batch_size_for,
    built_model,
    clear_built_models,
    embed_split,
    embed_with_cache,
    embedding_key,
    frozen_model,
    resolve_num_workers,
)
from zooens.selection.ranking import ranking_table, score_model
from zooens.settings import get_settings
from zooens.zoo.testing import register_random_model


@pytest.fixture
def tiny(zooens_home):
    register_random_model("tiny-effnet", "test_efficientnet", zooens_home / "w")
    register_random_model("tiny-resnet", "test_resnet", zooens_home / "w")
    clear_built_models()
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 12)
    imgs = rng.integers(0, 255, (36, 20, 20, 3), dtype=np.uint8)
    imgs[..., 0] = np.clip(imgs[..., 0] // 4 + 80 * y[:, None, None], 0, 255)  # class shows in red
    ds = ImageDataset(
        "toy",
        ["a", "b", "c"],
        {
            "train": Split("train", imgs[::2], y[::2]),
            "val": Split("val", imgs[1::2], y[1::2]),
            "test": Split("test", imgs[:9], y[:9]),
        },
    )
    yield zooens_home, ds
    clear_built_models()


@pytest.fixture
def counted_images(monkeypatch):
    """How many images were decoded (Split.image calls in this process: the tests use no workers)."""
    calls: list[int] = []
    real = Split.image
    monkeypatch.setattr(Split, "image", lambda self, i, **kw: calls.append(i) or real(self, i, **kw))
    return calls


@pytest.mark.parametrize("num_workers", [0, 1])
def test_embed_split_matches_bare_timm_forward(tiny, num_workers):
    _, ds = tiny
    model = zoo.create_model("tiny-effnet")
    cfg = zoo.data_config("tiny-effnet", resolution=48)
    ours = embed_split(model, cfg, ds.split("train"), batch_size=7, progress=False, num_workers=num_workers)
    tf = create_transform(**cfg, is_training=False)
    batch = torch.stack([tf(ds.split("train").image(i)) for i in range(len(ds.split("train")))])
    with torch.no_grad():
        ref = model(batch).numpy()
    assert ours.shape == ref.shape == (18, model.num_features)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_second_call_is_a_cache_hit_without_a_model(tiny, monkeypatch):
    home, ds = tiny
    cache = EmbeddingCache(home / "cache")
    first = embed_with_cache("tiny-resnet", ds, "train", cache=cache, resolution=32, progress=False)
    assert not first.cached and first.path.is_file()
    assert first.key == embedding_key("tiny-resnet", ds, "train", resolution=32)
    clear_built_models()

    def boom(*a, **k):
        raise AssertionError("a cache hit must not build a model")

    monkeypatch.setattr(zoo, "create_model", boom)
    second = embed_with_cache("tiny-resnet", ds, "train", cache=cache, resolution=32, progress=False)
    assert second.cached and second.key == first.key
    np.testing.assert_array_equal(second.embeddings, first.embeddings)
    with pytest.raises(AssertionError, match="cache hit"):  # another resolution is another key
        embed_with_cache("tiny-resnet", ds, "train", cache=cache, resolution=40, progress=False)


def test_a_model_is_built_once_for_all_its_splits(tiny, monkeypatch):
    home, ds = tiny
    cache = EmbeddingCache(home / "cache")
    builds = []
    real = zoo.create_model
    monkeypatch.setattr(zoo, "create_model", lambda *a, **k: builds.append(a) or real(*a, **k))
    for split in ("train", "val", "test"):
        res = embed_with_cache("tiny-resnet", ds, split, cache=cache, resolution=32, progress=False)
        assert not res.cached and len(res.embeddings) == len(ds.split(split))
    assert len(builds) == 1
    model = zoo.create_model("tiny-resnet")
    cfg = zoo.data_config("tiny-resnet", resolution=32)
    np.testing.assert_allclose(
        res.embeddings, embed_split(model, cfg, ds.split("test"), progress=False), rtol=1e-5, atol=1e-6
    )


def test_three_models_of_one_geometry_decode_each_split_once(tiny, counted_images):
    """Same geometry, one of them with another mean/std: train is decoded once, not three times;
    after the memory copy is dropped the disk copy serves; another resolution decodes again."""
    home, ds = tiny
    cache = EmbeddingCache(home / "cache")
    base = register_random_model("tiny-a", "test_resnet", home / "w", seed=1)
    other = register_random_model("tiny-b", "test_resnet", home / "w", seed=2)
    shifted = dataclasses.replace(other, input=dataclasses.replace(other.input, mean=(0.3, 0.4, 0.5), std=(0.2,) * 3))
    n = len(ds.split("train"))
    results = [
        embed_with_cache(ws, ds, "train", cache=cache, resolution=32, progress=False)
        for ws in (base, "tiny-resnet", shifted)
    ]
    assert len(counted_images) == n  # 3 models, one decode
    # each model's embeddings are its own timm pipeline's, mean/std included
    ref_cfg = zoo.data_config(shifted, resolution=32)
    assert ref_cfg["mean"] == (0.3, 0.4, 0.5)
    tf = create_transform(**ref_cfg, is_training=False)
    x = torch.stack([tf(ds.split("train").image(i)) for i in range(n)])
    with torch.no_grad():
        ref = zoo.create_model(shifted)(x).numpy()
    np.testing.assert_allclose(results[2].embeddings, ref, rtol=1e-4, atol=1e-5)

    counted_images.clear()
    decoded_module.decoded_cache(cache.root / "decoded").clear_memory()
    fourth = register_random_model("tiny-c", "test_resnet", home / "w", seed=3)
    embed_with_cache(fourth, ds, "train", cache=cache, resolution=32, progress=False)
    assert counted_images == []  # read back from disk
    embed_with_cache(fourth, ds, "train", cache=cache, resolution=40, progress=False)
    assert len(counted_images) == n


def test_score_and_rank(tiny):
    from sklearn.neighbors import KNeighborsClassifier

    home, ds = tiny
    cache = EmbeddingCache(home / "cache")
    scores = [
        score_model(m, ds, k=3, cache=cache, resolution=32, progress=False) for m in ("tiny-effnet", "tiny-resnet")
    ]
    table = ranking_table(scores)
    assert list(table["knn_accuracy"]) == sorted(table["knn_accuracy"], reverse=True)
    s = scores[0]
    tr = embed_with_cache("tiny-effnet", ds, "train", cache=cache, resolution=32, progress=False).embeddings
    va = embed_with_cache("tiny-effnet", ds, "val", cache=cache, resolution=32, progress=False).embeddings
    ref = KNeighborsClassifier(n_neighbors=3, metric="cosine", algorithm="brute").fit(tr, ds.split("train").labels)
    assert s.val_accuracy == pytest.approx(ref.score(va, ds.split("val").labels))
    assert s.embed_dim == tr.shape[1] and not s.cached


def test_workers_and_batch_size_on_the_cpu():
    assert resolve_num_workers(3, "cpu") == 3
    assert resolve_num_workers("auto", "cpu") == 0  # measured: bench/embed_throughput.py
    sizes = {px: batch_size_for("cpu", {"input_size": (3, px, px)}) for px in (32, 64, 112, 160, 224, 384, 1024)}
    assert sizes == {32: 64, 64: 32, 112: 16, 160: 8, 224: 4, 384: 1, 1024: 1}  # ~CPU_BATCH_PIXELS a batch


class _Branchy(torch.nn.Module):
    """Data-dependent control flow: a trace records one branch only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean((2, 3))
        return y * 2 if float(x.mean()) > 0 else y - 1


def test_frozen_model_embeds_like_the_eager_model_and_falls_back_when_it_cannot(tiny, caplog):
    home, ds = tiny
    clear_built_models()
    ws = register_random_model("tiny-frozen", "test_resnet", home / "w", seed=4)
    cfg = zoo.data_config(ws, resolution=32)
    eager = embed_split(zoo.create_model(ws, num_classes=0), cfg, ds.split("train"), batch_size=5, progress=False)
    frozen = frozen_model(ws, built_model(ws), cfg, batch_size=5)
    assert isinstance(frozen, torch.jit.ScriptModule)
    assert frozen_model(ws, built_model(ws), cfg, batch_size=5) is frozen  # kept
    got = embed_split(frozen, cfg, ds.split("train"), batch_size=5, progress=False)
    np.testing.assert_allclose(got, eager, rtol=1e-4, atol=1e-5)
    # embed_with_cache freezes only datasets of embed_freeze_min_images or more (the default: 1000)
    settings = get_settings()
    n = sum(len(s) for s in ds.splits.values())
    for threshold, kind in ((n + 1, "eager"), (n, "frozen")):
        settings.embed_freeze_min_images = threshold
        clear_built_models()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="zooens.selection.embed"):
            res = embed_with_cache(
                ws, ds, "train", cache=EmbeddingCache(home / f"c-{kind}"), resolution=32, progress=False
            )
        assert ("frozen for inference" in caplog.text) == (kind == "frozen")
        np.testing.assert_allclose(res.embeddings, eager, rtol=1e-4, atol=1e-5)
    # a model whose trace would keep one branch is caught by the check and used eager
    branchy = _Branchy().eval()
    with caplog.at_level(logging.INFO, logger="zooens.selection.embed"):
        assert frozen_model(dataclasses.replace(ws, name="branchy"), branchy, cfg, batch_size=4) is branchy
    assert "eager model" in caplog.text


@pytest.mark.parametrize("frozen", [False, True])
def test_a_model_and_its_taps_share_one_pass_and_embed_as_each_alone(tiny, frozen):
    """`family`: the model and its taps are embedded in one forward pass (the model built once, every member
    cached under its own key), giving what each member gives alone (a `LayerTap`, a bare forward); frozen or
    eager alike."""
    home, ds = tiny
    settings = get_settings()
    settings.embed_freeze_min_images = 1 if frozen else 10**9
    names = ["tiny-effnet", *zoo.taps_for("tiny-effnet")]
    assert len(names) == 4
    alone = {}
    for name in names:
        clear_built_models()
        alone[name] = embed_with_cache(
            name, ds, "train", cache=EmbeddingCache(home / f"alone-{frozen}"), resolution=32, progress=False
        ).embeddings
    cache = EmbeddingCache(home / f"family-{frozen}")
    clear_built_models()
    built = []
    real = zoo.create_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zoo, "create_model", lambda ws, **kw: built.append(ws.name) or real(ws, **kw))
        first = embed_with_cache(names[2], ds, "train", cache=cache, resolution=32, progress=False, family=names)
        rest = [
            embed_with_cache(n, ds, "train", cache=cache, resolution=32, progress=False, family=names) for n in names
        ]
    assert built == ["tiny-effnet"]  # one model, one pass, for four members
    assert not first.cached and all(r.cached for r in rest)
    for name, res in zip(names, rest, strict=True):
        np.testing.assert_allclose(res.embeddings, alone[name], rtol=1e-4, atol=1e-5)
        meta = cache.meta(res.key)
        assert sorted([*meta["shared_pass"], name]) == sorted(names)
    np.testing.assert_array_equal(first.embeddings, rest[2].embeddings)
    # a family across models, or of a model that offers no taps, is each embedded alone
    other = embed_with_cache("tiny-resnet", ds, "train", cache=cache, resolution=32, progress=False, family=names)
    assert "shared_pass" not in cache.meta(other.key)


def test_a_family_that_does_not_match_its_members_is_not_used(tiny, caplog):
    """`family_model` checks the shared pass against each member alone and refuses one that differs."""
    from zooens.selection.embed import family_model

    home, ds = tiny
    ws = zoo.get_weight_set("tiny-effnet")
    cfg = zoo.data_config(ws, resolution=32)
    model = built_model(ws)
    layers = [zoo.get_weight_set(t).layer for t in zoo.taps_for("tiny-effnet")]
    assert family_model(model, ws.arch, layers, with_model=True, data_cfg=cfg) is not None
    with caplog.at_level(logging.INFO, logger="zooens.selection.embed"):
        assert family_model(model, ws.arch, ["no.such.layer"], with_model=True, data_cfg=cfg) is None
        broken = torch.nn.Sequential()  # no forward_intermediates: refused, not raised
        assert family_model(broken, ws.arch, layers, with_model=False, data_cfg=cfg) is None
    assert caplog.text.count("one pass per tap") == 2
