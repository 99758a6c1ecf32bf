"""Strategy `full`: fine-tune the whole network plus a new linear head under BiT's hyper-rule.

Big Transfer (Kolesnikov et al. 2020, section 3.3) fine-tunes every weight with SGD (momentum 0.9,
lr 0.003, batch 512, no weight decay), a zero-initialised head, a schedule whose length, warm-up and
decays follow the training-set size, MixUp (alpha 0.1) from 20k examples on, random crops and flips,
and a resolution rule. `specs.bit_hyperrule` holds the numbers; this module applies them wherever the
run does not say otherwise. Meant for GPUs; on a CPU it is practical only for tiny models. The
artifact holds the complete state dict (every parameter and buffer), so it is as large as the model.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, ClassVar

import torch
from torch import nn

from zooens.ensemble._registry import register_strategy
from zooens.ensemble.artifacts import Artifact
from zooens.ensemble.specs import BIT_BASE_LR, BIT_BATCH, BitRule, RunSpec, SweepConfig, bit_hyperrule
from zooens.ensemble.strategies.base import (
    IMAGE_TRAINING_OPTIONS,
    ImageClassifier,
    ImageStrategy,
    embedding_dim,
)
from zooens.errors import ConfigError
from zooens.zoo import create_model

log = logging.getLogger(__name__)

__all__ = ["BIT_SMALL_STEPS", "DEFAULT_MICRO_BATCH", "FullStrategy", "bit_rule_for"]

BIT_SMALL_STEPS = 500
"""BiT's schedule length under 20k training examples: the default sweep's unit of steps."""

DEFAULT_MICRO_BATCH = 32
"""Images per forward/backward pass of `full` unless `micro_batch_size` says otherwise: BiT's batch
of 512 is reached by accumulating 16 of them, which fits a ResNet-50 at 384 px on one 16 GB GPU."""

_FULL_OPTIONS = frozenset({"micro_batch_size", "mixup", "warmup_steps", "decay_steps"})


def bit_rule_for(ds: Any, device: str) -> BitRule:
    """BiT's hyper-rule for the training split of `ds` (its size; the size of its first image)."""
    train = ds.split("train")
    size = None
    if len(train):
        width, height = train.image(0).size
        size = (height, width)
    return bit_hyperrule(len(train), size, device)


@register_strategy("full")
class FullStrategy(ImageStrategy):
    """Every weight trains; the head starts at zero, as in BiT.

    Default sweep on a CPU: lr 0.003 x 500 steps at batch 512 (BiT-HyperRule for the under-20k datasets
    of VTAB-1k and typical uploads; a job over a larger dataset takes BiT's 10k or 20k steps when the
    user gave no steps). On a GPU (`gpu_sweep`): lr (0.001, 0.003, 0.01) x (half, all) of BiT's schedule,
    so the greedy ensemble has several runs of each model to choose from. A user's `learning_rates` and
    `steps` replace either.

    From BiT's rule, unless given: the resolution (`spec.resolution` None: 128 px for small images
    and on CPUs, 384 px otherwise on a GPU, recorded in the run's hparams), warm-up and decay steps
    (the rule's fractions scaled to `spec.steps`), MixUp's alpha. Options: `micro_batch_size`
    (gradient accumulation; default 32), `mixup` (alpha), `warmup_steps`, `decay_steps` (a list),
    plus `momentum`, `weight_decay`, `freeze_norm_stats`, `eval_batch_size`.
    """

    default_sweep: ClassVar[SweepConfig] = SweepConfig(
        learning_rates=(BIT_BASE_LR,), steps=(BIT_SMALL_STEPS,), batch_size=BIT_BATCH
    )
    gpu_sweep: ClassVar[SweepConfig] = SweepConfig(
        learning_rates=(0.001, BIT_BASE_LR, 0.01), steps=(BIT_SMALL_STEPS // 2, BIT_SMALL_STEPS), batch_size=BIT_BATCH
    )
    """On a GPU: learning rates around BiT's 0.003 (a third and three times it) x the rule's schedule and half of it,
    six runs per model, so that the greedy ensemble chooses among several runs of each model, as the small sweep of
    Mustafa et al. 2020 does; BiT itself needs no sweep and uses 0.003 alone (the CPU default, where one run is
    already costly)."""
    accepted_options: ClassVar[frozenset[str]] = IMAGE_TRAINING_OPTIONS | _FULL_OPTIONS

    def check_options(self, options: dict[str, Any]) -> None:
        super().check_options(options)
        micro = options.get("micro_batch_size")
        if micro is not None and (isinstance(micro, bool) or not isinstance(micro, int) or micro < 1):
            raise ConfigError(f"full.micro_batch_size must be a positive integer, got {micro!r}; e.g. 32.")
        mixup = options.get("mixup")
        if mixup is not None and (
            isinstance(mixup, bool) or not isinstance(mixup, (int, float)) or not math.isfinite(mixup) or mixup < 0
        ):
            raise ConfigError(f"full.mixup is MixUp's alpha, a non-negative number, got {mixup!r}; BiT uses 0.1.")
        warmup = options.get("warmup_steps")
        if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
            raise ConfigError(f"full.warmup_steps must be a non-negative integer, got {warmup!r}; e.g. 100.")
        decays = options.get("decay_steps")
        if decays is not None and (
            not isinstance(decays, (list, tuple))
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in decays)
        ):
            raise ConfigError(f"full.decay_steps must be a list of step numbers, got {decays!r}; e.g. [200, 300, 400].")

    def sweep_on(self, device: str | None) -> SweepConfig:
        """`gpu_sweep` on a CUDA worker, else `default_sweep` (one run)."""
        return self.gpu_sweep if device is not None and str(device).startswith("cuda") else self.default_sweep

    def job_steps(self, steps: int, ds: Any, device: str, *, steps_given: bool) -> int:
        """BiT's schedule length for the dataset's size (500, 10k or 20k steps) unless the user gave steps: a
        default sweep's steps are fractions of the under-20k schedule (500: the rule's length, 250: half of
        it), scaled to the rule of this dataset's size."""
        if steps_given:
            return steps
        return max(1, round(bit_rule_for(ds, device).steps * steps / BIT_SMALL_STEPS))

    def training_plan(self, spec: RunSpec, ds: Any, device: str) -> tuple[RunSpec, dict[str, Any]]:
        """Fill what the run leaves open from BiT's rule; the returned spec records every choice."""
        rule = bit_rule_for(ds, device)
        options = dict(spec.options)
        warmup, decays = rule.scaled(spec.steps)
        options.setdefault("warmup_steps", warmup)
        options.setdefault("decay_steps", list(decays))
        options.setdefault("mixup", rule.mixup)
        options.setdefault("micro_batch_size", min(DEFAULT_MICRO_BATCH, spec.batch_size))
        if options["warmup_steps"] > spec.steps:
            raise ConfigError(
                f"full.warmup_steps is {options['warmup_steps']} but the run has {spec.steps} steps; "
                "give fewer warm-up steps."
            )
        resolution = spec.resolution if spec.resolution is not None else rule.resolution
        planned = dataclasses.replace(spec, resolution=resolution, options=options)
        if spec.resolution is None:
            log.info(
                "full: BiT's resolution rule gives %d px on %s (images resized to %d, cropped to %d)",
                resolution,
                device,
                rule.resize,
                rule.resolution,
            )
        kwargs = {
            "warmup_steps": int(options["warmup_steps"]),
            "decay_steps": [int(d) for d in options["decay_steps"]],
            "mixup_alpha": float(options["mixup"]),
            "micro_batch_size": int(options["micro_batch_size"]),
            "crop_enlarge": rule.resize / rule.resolution,
        }
        return planned, kwargs

    def adjust_data_config(self, data_cfg: dict[str, Any], spec: RunSpec) -> dict[str, Any]:
        """BiT evaluates on the image resized to the crop size, without a centre crop."""
        return data_cfg | {"crop_pct": 1.0}

    def build(self, spec: RunSpec, n_classes: int, data_cfg: dict[str, Any]) -> tuple[nn.Module, list[nn.Parameter]]:
        backbone = create_model(spec.model_name, num_classes=0)
        head = nn.Linear(embedding_dim(backbone, data_cfg), n_classes)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        model = ImageClassifier(backbone, head)
        return model, list(model.parameters())

    def artifact_tensors(self, model: nn.Module, spec: RunSpec) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def load(self, artifact: Artifact, *, device: str = "cpu", backbone: nn.Module | None = None) -> nn.Module:
        n_classes = len(artifact.config["classes"])
        backbone = create_model(artifact.config["model"], num_classes=0, pretrained=False)
        head = nn.Linear(artifact.tensors["head.weight"].shape[1], n_classes)
        model = ImageClassifier(backbone, head)
        model.load_state_dict(artifact.tensors, strict=True)
        return model.eval().to(device)
