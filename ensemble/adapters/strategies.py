"""The adapters as fine-tuning strategies of the sweep: `patch`, `film`, `kron`, `lora`, `aft`.

Each run saves only the updated tensors (adapter parameters and the head) and reports their
count and size; `load` builds the pre-trained backbone again and re-applies the update.
"""
from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zooens.ensemble.adapters.base import apply_tensors, get_adapter, inject, make_config
from zooens.ensemble.adapters.film import NaiveBayesHead
from zooens.ensemble.finetune import (
    Artifact,
    ImageClassifier,
    ImageStrategy,
    RunSpec,
    SweepConfig,
    _base_config,
    build_run_result,
    embedding_dim,
    register_strategy,
)

log = logging.getLogger(__name__)

ADAPTER_SWEEP = SweepConfig(learning_rates=(0.01, 0.05), steps=(200,), batch_size=32)


class AdapterStrategy(ImageStrategy):
    """A frozen backbone with an adapter, plus a zero-initialised linear head."""

    method: ClassVar[str] = ""
    freeze_norm_stats: ClassVar[bool] = True
    default_sweep: ClassVar[SweepConfig] = ADAPTER_SWEEP

    def _backbone(self, spec_model: str, options: dict[str, Any]):
        from zooens.zoo import create_model

        backbone = create_model(spec_model, num_classes=0)
        config = make_config(self.method, options)
        params = inject(backbone, self.method, config)
        keys = get_adapter(self.method).saved_keys(backbone, config, params)
        return backbone, config, params, keys

    def build(self, spec: RunSpec, n_classes: int, data_cfg: dict[str, Any]):
        backbone, config, params, keys = self._backbone(spec.model, spec.options)
        head = nn.Linear(embedding_dim(backbone, data_cfg), n_classes)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        model = ImageClassifier(backbone, head)
        model._adapter = (config, ["backbone." + k for k in keys] + ["head.weight", "head.bias"])
        return model, params + list(head.parameters())

    def artifact_tensors(self, model: nn.Module, spec: RunSpec) -> dict[str, torch.Tensor]:
        state = model.state_dict()
        return {k: state[k].detach().cpu().clone() for k in model._adapter[1]}

    def artifact_config(self, model: nn.Module, spec: RunSpec) -> dict[str, Any]:
        return {"adapter": {"method": self.method, "config": model._adapter[0].to_dict()}}

    def load(self, artifact: Artifact, *, device: str = "cpu", backbone: nn.Module | None = None) -> nn.Module:
        backbone, _, _, _ = self._backbone(artifact.config["model"], artifact.config["adapter"]["config"])
        head = nn.Linear(artifact.tensors["head.weight"].shape[1], len(artifact.config["classes"]))
        model = ImageClassifier(backbone, head)
        apply_tensors(model, artifact.tensors)
        return model.eval().to(device)


@register_strategy("patch")
class PatchStrategy(AdapterStrategy):
    """Model patch: norm scales/biases and biases (optionally depthwise convs) train."""

    method = "patch"


@register_strategy("lora")
class LoraStrategy(AdapterStrategy):
    """LoRA on linear layers and 1x1 convolutions."""

    method = "lora"


@register_strategy("kron")
class KronStrategy(AdapterStrategy):
    """Kronecker adaptation of a ViT's query and value projections."""

    method = "kron"


# --------------------------------------------------------------------------------------
# FiT: FiLM + Naive Bayes head, trained episodically


def head_features(features: torch.Tensor) -> torch.Tensor:
    """Backbone features on the sphere of radius sqrt(D): per-dimension scale about 1, like the
    identity term of the head's covariance, whatever the backbone's raw scale."""
    return F.normalize(features.float(), dim=1) * features.shape[1] ** 0.5


class FiTClassifier(nn.Module):
    """Backbone with FiLM layers; logits from a Naive Bayes head over stored context features."""

    def __init__(self, backbone: nn.Module, head: NaiveBayesHead, n_classes: int) -> None:
        super().__init__()
        self.backbone, self.head, self.n_classes = backbone, head, n_classes
        self.register_buffer("context_features", torch.zeros(0))
        self.register_buffer("context_labels", torch.zeros(0, dtype=torch.long))
        self._stats: dict[str, torch.Tensor] | None = None

    def set_context(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.context_features, self.context_labels = features.detach(), labels.detach()
        self._stats = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._stats is None:
            self._stats = self.head.fit_stats(self.context_features, self.context_labels, self.n_classes)
        return self.head.logits(head_features(self.backbone(images)), self._stats)


def episodic_loss(fraction: float):
    """Split each class of the batch into context and target; CE of the targets under the head."""

    def loss(model: FiTClassifier, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        feats = head_features(model.backbone(images))
        ctx = torch.zeros(len(labels), dtype=torch.bool)
        for c in labels.unique():
            idx = (labels == c).nonzero().flatten()
            if len(idx) >= 2:
                ctx[idx[: max(1, int(round(fraction * len(idx))))]] = True
        classes = labels[ctx].unique()
        tgt = ~ctx & torch.isin(labels, classes)
        if len(classes) < 2 or not tgt.any():  # too few examples per class: plain prototype CE on the batch
            ctx, tgt, classes = torch.ones_like(ctx), torch.ones_like(ctx), labels.unique()
        remap = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
        remap[classes] = torch.arange(len(classes))
        stats = model.head.fit_stats(feats[ctx], remap[labels[ctx]], len(classes))
        return F.cross_entropy(model.head.logits(feats[tgt], stats), remap[labels[tgt]])

    return loss


@register_strategy("film")
class FilmStrategy(AdapterStrategy):
    """FiT: FiLM layers on a frozen backbone with an automatically configured Naive Bayes head."""

    method = "film"
    # the Gaussian head turns large FiLM steps into large logit changes: smaller rates than the others
    default_sweep: ClassVar[SweepConfig] = SweepConfig(learning_rates=(0.001, 0.003), steps=(200,), batch_size=32)

    def build(self, spec: RunSpec, n_classes: int, data_cfg: dict[str, Any]):
        backbone, config, params, keys = self._backbone(spec.model, spec.options)
        head = NaiveBayesHead(config.head)
        model = FiTClassifier(backbone, head, n_classes)
        model._adapter = (config, ["backbone." + k for k in keys] + ["head.rho", "context_features", "context_labels"])
        return model, params + [head.rho]

    def loss_fn(self, spec: RunSpec):
        return episodic_loss(make_config("film", spec.options).context_fraction)

    def after_training(self, model, spec, ds, data_cfg, device) -> None:
        """The head's context at test time: every training example's features."""
        from zooens.ensemble.training import predict_logits

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
