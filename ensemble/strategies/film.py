"""`film`: FiT (Shysheya et al. 2022) as a fine-tuning strategy: FiLM layers on a frozen backbone
with an automatically configured Naive Bayes head, trained episodically."""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from zooens.ensemble._registry import register_strategy
from zooens.ensemble.adapters import FiTClassifier, NaiveBayesHead, apply_tensors, make_config
from zooens.ensemble.adapters.film import episodic_loss, head_features
from zooens.ensemble.artifacts import Artifact
from zooens.ensemble.specs import RunSpec, SweepConfig
from zooens.ensemble.strategies.adapters import AdapterStrategy
from zooens.ensemble.training import predict_logits

__all__ = ["FilmStrategy"]


@register_strategy("film")
class FilmStrategy(AdapterStrategy):
    """FiT: FiLM layers on a frozen backbone with an automatically configured Naive Bayes head."""

    method = "film"
    # the Gaussian head turns large FiLM steps into large logit changes: smaller rates than the others
    default_sweep: ClassVar[SweepConfig] = SweepConfig(learning_rates=(0.001, 0.003), steps=(200,), batch_size=32)

    def build(self, spec: RunSpec, n_classes: int, data_cfg: dict[str, Any]) -> tuple[nn.Module, list[nn.Parameter]]:
        backbone, config, params, keys = self._backbone(spec.model_name, spec.options)
        head = NaiveBayesHead(config.head)
        model = FiTClassifier(backbone, head, n_classes)
        model._adapter = (config, ["backbone." + k for k in keys] + ["head.rho", "context_features", "context_labels"])
        return model, params + [head.rho]

    def loss_fn(self, spec: RunSpec):
        return episodic_loss(make_config("film", spec.options).context_fraction)

    def after_training(self, model: nn.Module, spec: RunSpec, ds: Any, data_cfg: dict[str, Any], device: str) -> None:
        """The head's context at test time: every training example's features."""
        raw = torch.from_numpy(np.asarray(predict_logits(model.backbone, ds.split("train"), data_cfg,
                                                         batch_size=64, device=device), dtype=np.float32))
        feats = head_features(raw)
        model.set_context(feats.to(device), torch.as_tensor(ds.split("train").labels, device=device))

    def load(self, artifact: Artifact, *, device: str = "cpu", backbone: nn.Module | None = None) -> nn.Module:
        config_d = artifact.config["adapter"]["config"]
        backbone, config, _, _ = self._backbone(artifact.config["model"], config_d)
        model = FiTClassifier(backbone, NaiveBayesHead(config.head), len(artifact.config["classes"]))
        model.set_context(artifact.tensors["context_features"], artifact.tensors["context_labels"])
        apply_tensors(model, artifact.tensors)
        model._stats = None
        return model.eval().to(device)
