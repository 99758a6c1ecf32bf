"""FiT's classifier: a FiLM-adapted backbone whose logits come from a Naive Bayes head over
stored context features, and the episodic loss it trains with (Shysheya et al. 2022)."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from zooens.ensemble.adapters.film.head import NaiveBayesHead

__all__ = ["FiTClassifier", "episodic_loss", "head_features"]


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


def episodic_loss(fraction: float) -> Callable[[FiTClassifier, torch.Tensor, torch.Tensor], torch.Tensor]:
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
