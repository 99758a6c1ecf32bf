"""One fine-tuning run of the sweep: check the spec and the data, hand over to the strategy, time it."""

from __future__ import annotations

import logging
import time
from typing import Any

from zooens.ensemble._registry import get_strategy
from zooens.ensemble.results import RunResult
from zooens.ensemble.specs import RunSpec
from zooens.errors import DatasetError
from zooens.utils import resolve_device

log = logging.getLogger(__name__)

__all__ = ["run_finetune"]


def run_finetune(spec: RunSpec, ds: Any, *, cache: Any, device: str = "cpu", progress: bool = True) -> RunResult:
    """Run one fine-tune of `spec.model_name` on `ds` with `spec.strategy`; `seconds` is the wall time."""
    spec.validate()
    for split in ("train", "val"):
        if split not in ds.splits:
            raise DatasetError(
                f"Fine-tuning needs 'train' and 'val' splits; {ds.name!r} has {', '.join(sorted(ds.splits))}. "
                "Use selection.datasets.vtab_split to draw them."
            )
    strategy = get_strategy(spec.strategy)
    device = resolve_device(device)
    log.info(
        "Fine-tuning %s with %s: lr %g, %d steps, batch %d, seed %d, augmentation %s",
        spec.model_name,
        spec.strategy,
        spec.lr,
        spec.steps,
        spec.batch_size,
        spec.seed,
        spec.augmentation,
    )
    start = time.perf_counter()
    result = strategy.fit(spec, ds, cache=cache, device=device, progress=progress)
    result.seconds = time.perf_counter() - start
    log.info(
        "%s/%s: val CE %.4f, val acc %.4f, %.1f s",
        spec.model_name,
        spec.strategy,
        result.val_ce,
        result.val_acc,
        result.seconds,
    )
    return result
