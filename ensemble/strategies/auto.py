"""Strategy `auto`: the paper's method where the hardware allows it, a linear head where it does not.

A job's default. On a worker with a CUDA device `auto` is `full` (BiT fine-tuning of every
selected network, the method zooens's ranking-then-fine-tuning pipeline is built for); on a
CPU-only worker it is `linear` (a head on cached embeddings: seconds per run, where `full` would
take hours). The choice is made where the work runs (`resolve_auto`): the job planner records the
resolved strategy in each unit key and run, and a run asked for directly with `auto` runs and
records the resolved one.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

from torch import nn

from zooens.ensemble._registry import get_strategy, register_strategy
from zooens.ensemble.artifacts import Artifact
from zooens.ensemble.results import RunResult
from zooens.ensemble.specs import RunSpec
from zooens.ensemble.strategies.base import Strategy
from zooens.errors import ConfigError
from zooens.utils import resolve_device

log = logging.getLogger(__name__)

__all__ = ["AUTO", "AutoStrategy", "resolve_auto"]

AUTO = "auto"


def resolve_auto(device: str) -> str:
    """`full` for a CUDA device (`cuda`, `cuda:1`), `linear` for anything else; `auto` asks torch."""
    resolved = resolve_device(device)
    return "full" if str(resolved).startswith("cuda") else "linear"


@register_strategy(AUTO)
class AutoStrategy(Strategy):
    """`full` on a GPU worker, `linear` on a CPU-only one (see the module docstring).

    Its sweep and options are those of the strategy it resolves to; it accepts no options of its
    own (give them to `full` or `linear`). It saves no artifact of its own: the run is the resolved
    strategy's, and its `strategy` says which.
    """

    needs_images: ClassVar[bool] = True

    def check_options(self, options: dict[str, Any]) -> None:
        if options:
            raise ConfigError(
                "Strategy 'auto' takes no options: it runs 'full' on a GPU and 'linear' on a CPU; "
                "give options to those strategies instead (e.g. full.micro_batch_size=16)."
            )

    def fit(self, spec: RunSpec, ds: Any, *, cache: Any, device: str = "cpu", progress: bool = True) -> RunResult:
        resolved = resolve_auto(device)
        log.info("strategy auto -> %s on %s", resolved, resolve_device(device))
        return get_strategy(resolved).fit(
            dataclasses.replace(spec, strategy=resolved), ds, cache=cache, device=device, progress=progress
        )

    def load(self, artifact: Artifact, *, device: str = "cpu", backbone: nn.Module | None = None) -> nn.Module:
        raise ConfigError(
            "An artifact records the strategy 'auto' resolved to ('full' or 'linear'); load it with "
            "that strategy (zooens.ensemble.load_artifact_model reads it from the artifact)."
        )
