"""Strategy `full`: fine-tune the whole network plus a new linear head, BiT style.

Meant for GPUs; on a CPU it is practical only for tiny models. The artifact holds the
complete state dict (every parameter and buffer), so it is as large as the model.
"""
from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from torch import nn

from zooens.ensemble._registry import register_strategy
from zooens.ensemble.artifacts import Artifact
from zooens.ensemble.specs import RunSpec, SweepConfig
from zooens.ensemble.strategies.base import ImageClassifier, ImageStrategy, embedding_dim
from zooens.zoo import create_model

log = logging.getLogger(__name__)

__all__ = ["FullStrategy"]


@register_strategy("full")
class FullStrategy(ImageStrategy):
    """Every weight trains; the head starts at zero as in BiT.

    Default sweep: lr (0.001, 0.003) x 500 steps at batch 32, i.e. BiT's base rate of
    0.003 and a tenth of it, with few steps since the backbone is already good.
    Options: `momentum`, `weight_decay`, `freeze_norm_stats`, `eval_batch_size`.
    """

    default_sweep: ClassVar[SweepConfig] = SweepConfig(learning_rates=(0.001, 0.003), steps=(500,), batch_size=32)

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
