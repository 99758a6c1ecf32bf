"""Decoded splits: uint8 + on-device normalisation equals timm's float transform bit for bit; the key
ignores mean/std; the memory and disk copies stay within their byte bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform

from zooens import zoo
from zooens.selection.datasets import Split
from zooens.selection.decoded import (
    DecodedCache,
    DecodeKey,
    Decoder,
    decode_transform,
    decoded_batches,
    mean_std,
    normalize,
)

CONFIGS = [
    # (input_size, interpolation, crop_pct, crop_mode): timm's eval geometries, odd sizes included
    ((3, 48, 48), "bicubic", 0.875, "center"),
    ((3, 40, 56), "bilinear", 0.95, "center"),
    ((3, 32, 32), "bilinear", 1.0, "squash"),
    ((3, 36, 36), "bicubic", 0.9, "border"),
]


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((20, 20), (37, 23), (64, 80))]


@pytest.mark.parametrize("geometry", CONFIGS)
def test_decoded_then_normalised_is_timms_transform_exactly(images, geometry):
    size, interpolation, crop_pct, crop_mode = geometry
    cfg = {
        "input_size": size,
        "interpolation": interpolation,
        "crop_pct": crop_pct,
        "crop_mode": crop_mode,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
    }
    timm_tf = create_transform(**cfg, is_training=False)
    ours = decode_transform(cfg)
    mean, std = mean_std(cfg, "cpu")
    for img in images:
        decoded = ours(img)
        assert decoded.dtype == torch.uint8 and decoded.shape == size
        assert torch.equal(normalize(decoded[None], mean, std)[0], timm_tf(img))


def test_resize_preprocessing_is_exact_too(images):
    cfg = zoo.data_config("tf_efficientnet_lite0.in1k", resolution=40, preprocessing="resize")
    mean, std = mean_std(cfg, "cpu")
    for img in images:
        assert torch.equal(
            normalize(decode_transform(cfg)(img)[None], mean, std)[0], create_transform(**cfg, is_training=False)(img)
        )


def test_the_key_is_the_geometry_not_mean_or_std():
    cfg = {
        "input_size": (3, 32, 32),
        "interpolation": "bicubic",
        "crop_pct": 0.875,
        "crop_mode": "center",
        "mean": (0.5,) * 3,
        "std": (0.5,) * 3,
    }
    same = DecodeKey.of("fp", "train", {**cfg, "mean": (0.1,) * 3, "std": (0.2,) * 3})
    assert DecodeKey.of("fp", "train", cfg) == same and DecodeKey.of("fp", "train", cfg).digest == same.digest
    for other in (
        {**cfg, "crop_pct": 1.0},
        {**cfg, "interpolation": "bilinear"},
        {**cfg, "input_size": (3, 32, 40)},
        {**cfg, "crop_mode": "squash"},
    ):
        assert DecodeKey.of("fp", "train", other) != same
    assert DecodeKey.of("fp2", "train", cfg) != same and DecodeKey.of("fp", "val", cfg) != same
    assert DecodeKey.of("fp", "train", {**cfg, "crop_pct": 0.88}) == same  # 32 / 0.88 and 32 / 0.875: 36 px


def _tensor(n: int, value: int) -> torch.Tensor:
    return torch.full((n, 16, 16, 3), value, dtype=torch.uint8)  # 768 bytes per image (+128 of .npy header)


def test_memory_and_disk_stay_within_their_bounds(tmp_path):
    cache = DecodedCache(tmp_path, memory_bytes=2000, disk_bytes=2000)
    keys = [DecodeKey("fp", f"s{i}", "{}") for i in range(3)]
    for i, key in enumerate(keys):
        cache.put(key, _tensor(1, i))  # two fit
    files = sorted(p.name for p in tmp_path.glob("*/*.npy"))
    assert files == sorted(f"{k.digest}.npy" for k in keys[1:])  # the oldest left the disk
    assert not list(tmp_path.glob("*/*.tmp"))
    cache.clear_memory()
    assert cache.get(keys[0]) is None
    assert torch.equal(cache.get(keys[2]), _tensor(1, 2))  # from disk
    big = DecodeKey("fp", "big", "{}")
    cache.put(big, _tensor(3, 7))  # 2304 bytes: held nowhere
    cache.clear_memory()
    assert cache.get(big) is None


def test_a_corrupt_or_short_entry_is_decoded_again(tmp_path):
    cache = DecodedCache(tmp_path, memory_bytes=0, disk_bytes=10_000)
    key = DecodeKey("fp", "train", "{}")
    cache.put(key, _tensor(2, 1))
    assert cache.get(key, n_images=3) is None  # another length
    cache.path(key).write_bytes(b"not an npy file")
    assert cache.get(key) is None


def test_batches_come_from_the_cache_once_a_split_was_read_through(tmp_path):
    rng = np.random.default_rng(1)
    split = Split("train", rng.integers(0, 256, (10, 12, 12, 3), dtype=np.uint8), np.arange(10) % 2)
    cfg = zoo.data_config("tf_efficientnet_lite0.in1k", resolution=16)
    cache = DecodedCache(None, memory_bytes=1 << 20, disk_bytes=0)
    key = DecodeKey.of("fp", "train", cfg)
    partial = decoded_batches(split, cfg, batch_size=4, key=key, cache=cache)
    next(partial)
    partial.close()
    assert cache.get(key) is None  # a split read in part is not cached
    first = torch.cat(list(decoded_batches(split, cfg, batch_size=4, key=key, cache=cache)))
    assert torch.equal(cache.get(key).permute(0, 3, 1, 2), first)
    again = list(decoded_batches(split, cfg, batch_size=3, key=key, cache=cache))
    assert [len(b) for b in again] == [3, 3, 3, 1] and torch.equal(torch.cat(again), first)
    tf = decode_transform(cfg)
    assert torch.equal(first, torch.stack([tf(split.image(i)) for i in range(10)]))


INTERPOLATIONS = ["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
def test_a_grey_split_decoded_as_one_channel_equals_timm_on_its_rgb_image(interpolation, crop_mode):
    rng = np.random.default_rng(2)
    for shape in ((9, 28, 28), (9, 23, 37, 1)):  # (N, H, W) and (N, H, W, 1)
        split = Split("train", rng.integers(0, 256, shape, dtype=np.uint8), np.arange(9) % 3)
        cfg = {
            "input_size": (3, 40, 40),
            "interpolation": interpolation,
            "crop_pct": 0.9,
            "crop_mode": crop_mode,
            "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225),
        }
        timm_tf = create_transform(**cfg, is_training=False)
        mean, std = mean_std(cfg, "cpu")
        assert split.image(0, keep_grey=True).mode == "L" and split.image(0).mode == "RGB"
        assert Decoder(cfg).grey == (crop_mode != "border")  # border pads with the mean colour: RGB
        batches = list(decoded_batches(split, cfg, batch_size=4))
        assert [b.shape for b in batches] == [(4, 3, 40, 40), (4, 3, 40, 40), (1, 3, 40, 40)]
        assert batches[0].is_contiguous(memory_format=torch.channels_last)  # no reordering copy
        got = normalize(torch.cat(batches), mean, std)
        want = torch.stack([timm_tf(split.image(i)) for i in range(9)])  # the RGB image, timm's transform
        assert torch.equal(got, want)


def test_workers_decode_the_same_batches_and_cache_them(tmp_path):
    rng = np.random.default_rng(3)
    split = Split("train", rng.integers(0, 256, (7, 30, 20, 3), dtype=np.uint8), np.arange(7) % 2)
    cfg = zoo.data_config("tf_efficientnet_lite0.in1k", resolution=24)
    here = torch.cat(list(decoded_batches(split, cfg, batch_size=3)))
    cache = DecodedCache(tmp_path, memory_bytes=1 << 20, disk_bytes=1 << 20)
    key = DecodeKey.of("fp", "train", cfg)
    workers = torch.cat(list(decoded_batches(split, cfg, batch_size=3, num_workers=1, key=key, cache=cache)))
    assert torch.equal(here, workers)
    cache.clear_memory()
    assert torch.equal(cache.get(key, n_images=7).permute(0, 3, 1, 2), here)  # from disk


def test_a_split_larger_than_both_bounds_is_decoded_without_holding_it():
    rng = np.random.default_rng(4)
    split = Split("train", rng.integers(0, 256, (6, 12, 12), dtype=np.uint8), np.arange(6) % 2)
    cfg = zoo.data_config("tf_efficientnet_lite0.in1k", resolution=16)
    cache = DecodedCache(None, memory_bytes=16 * 16 * 3 * 5, disk_bytes=0)  # 5 of the 6 images
    key = DecodeKey.of("fp", "train", cfg)
    batches = list(decoded_batches(split, cfg, batch_size=2, key=key, cache=cache))
    assert len(batches) == 3 and cache.get(key) is None
    tf = decode_transform(cfg)
    assert torch.equal(torch.cat(batches), torch.stack([tf(split.image(i)) for i in range(6)]))
