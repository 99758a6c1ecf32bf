"""timm's catalogue of pretrained tags as weight sets, built offline from their pretrained cfgs."""

from __future__ import annotations

import logging
import time
from typing import Any

import timm
from timm.models import get_pretrained_cfg

from zooens.zoo._types import InputConfig, WeightSet, WeightSource

logger = logging.getLogger(__name__)

# Tag tokens naming a training dataset, as timm spells them.
_DATA_TOKENS: dict[str, str] = {
    "in1k": "ImageNet-1k",
    "in12k": "ImageNet-12k",
    "in21k": "ImageNet-21k",
    "in22k": "ImageNet-22k",
    "laion2b": "LAION-2B",
    "laion400m": "LAION-400M",
    "openai": "OpenAI WIT-400M",
    "datacompxl": "DataComp-XL",
    "dfn2b": "DFN-2B",
    "dfn5b": "DFN-5B",
    "webli": "WebLI",
    "jft300m": "JFT-300M",
    "jft": "JFT-300M",  # Noisy Student: `ns_jft_in1k`
    "ig1b": "Instagram-1B",
    "ig3b": "Instagram-3.5B",
    "lvd142m": "LVD-142M",
    "lvd1689m": "LVD-1689M",
    "sat493m": "SAT-493M",
    "sa1b": "SA-1B",
    "merged2b": "Merged-2B",
    "yfcc15m": "YFCC-15M",
    "yfcc100m": "YFCC-100M",
    "datacomp1b": "DataComp-1B",
    "dfndr2b": "DFN-DR-2B",
    "m38m": "Merged-38M",
    "cc12m": "CC-12M",
    "mim": "masked image modelling",
}


def upstream_data_from_tag(tag: str, num_classes: int | None) -> str | None:
    """Training data read from a timm tag ('fb_in22k_ft_in1k' -> 'ImageNet-22k -> ImageNet-1k')."""
    seen: list[str] = []
    for token in tag.lower().replace("-", "_").split("_"):
        label = _DATA_TOKENS.get(token)
        if label and label not in seen:
            seen.append(label)
    if not seen and num_classes == 1000:
        seen.append("ImageNet-1k")
    return " -> ".join(seen) or None


def weight_set_from_cfg(name: str, cfg: Any) -> WeightSet:
    """One catalogue weight set from timm's PretrainedCfg of `name`."""
    arch, _, tag = name.partition(".")
    paper = None
    if cfg.paper_ids:
        paper = cfg.paper_ids if isinstance(cfg.paper_ids, str) else ", ".join(cfg.paper_ids)
    elif cfg.paper_name:
        paper = cfg.paper_name
    elif cfg.origin_url:
        paper = cfg.origin_url
    return WeightSet(
        name=name,
        arch=cfg.architecture or arch,
        tag=cfg.tag or tag,
        origin="catalogue",
        source=WeightSource(kind="hub", hub_id=cfg.hf_hub_id or None, url=cfg.url or None),
        input=InputConfig.from_timm(cfg),
        num_classes=int(cfg.num_classes or 0),
        upstream_data=upstream_data_from_tag(cfg.tag or tag, cfg.num_classes),
        license=cfg.license,
        paper=paper,
        custom_load=bool(cfg.custom_load),
    )


def build_catalogue() -> dict[str, WeightSet]:
    """Every `timm.list_pretrained()` tag as a weight set, by name."""
    start = time.perf_counter()
    out: dict[str, WeightSet] = {}
    for name in timm.list_pretrained():
        cfg = get_pretrained_cfg(name)
        if cfg is None:
            continue
        out[name] = weight_set_from_cfg(name, cfg)
    logger.debug("catalogue of %d weight sets built in %.3f s", len(out), time.perf_counter() - start)
    return out
