"""`zoo.data_config(..., preprocessing=...)`: the model's own transform, or VTAB's plain resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform

from zooens import zoo
from zooens.errors import ConfigError

NAME = "tf_efficientnet_lite0.in1k"  # bicubic, crop_pct 0.875, mean = std = 0.5


def _photo(w: int = 150, h: int = 90) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_resize_goes_straight_to_the_input_size_bilinear_with_no_crop():
    cfg = zoo.data_config(NAME, resolution=64, preprocessing="resize")
    out = create_transform(**cfg, is_training=False)(_photo())
    # the reference, written from its definition: PIL bilinear resize of the whole image to 64x64,
    # then (x / 255 - mean) / std with the model's own mean and std
    ref = np.asarray(_photo().resize((64, 64), Image.BILINEAR), dtype=np.float32) / 255.0
    ref = (ref - 0.5) / 0.5
    assert out.shape == (3, 64, 64)
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), ref, atol=1e-5)


def test_model_preprocessing_is_the_pretrained_config_and_differs_from_resize():
    own = zoo.data_config(NAME, resolution=64)
    assert own["crop_pct"] == pytest.approx(0.875) and own["interpolation"] == "bicubic"
    a = create_transform(**own, is_training=False)(_photo())
    b = create_transform(**zoo.data_config(NAME, resolution=64, preprocessing="resize"), is_training=False)(_photo())
    assert a.shape == b.shape and not torch.allclose(a, b)  # the centre crop cuts the edges out


def test_unknown_preprocessing_is_refused():
    with pytest.raises(ConfigError, match="preprocessing must be one of model, resize"):
        zoo.data_config(NAME, preprocessing="squash")
