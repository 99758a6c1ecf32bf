"""FiT's classifier: a FiLM-adapted backbone whose logits come from the Naive Bayes head configured
on stored context features (Shysheya et al. 2022, Eq. 2). FiT feeds the head the backbone's raw
pooled features (no normalisation), and so does this module."""

from __future__ import annotations

import torch
from torch import nn

from zooens.ensemble.adapters.film.head import NaiveBayesHead

__all__ = ["FiTClassifier"]


class FiTClassifier(nn.Module):
    """Backbone with FiLM layers; logits (B, C) from a Naive Bayes head over stored context features.

    `set_context` stores the context (at test time: every training example's features, as FiT
    configures its head on the whole downstream training set after fine-tuning); the head's
    statistics are computed once from it and cached until the context changes.
    """

    def __init__(self, backbone: nn.Module, head: NaiveBayesHead, n_classes: int) -> None:
        super().__init__()
        self.backbone, self.head, self.n_classes = backbone, head, n_classes
        self.register_buffer("context_features", torch.zeros(0))
        self.register_buffer("context_labels", torch.zeros(0, dtype=torch.long))
        self._stats: dict[str, torch.Tensor] | None = None

    def set_context(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Features (N, D) and labels (N,) in [0, n_classes) the head is configured from."""
        self.context_features, self.context_labels = features.detach().float(), labels.detach().long()
        self._stats = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.context_features.numel() == 0:
            raise RuntimeError("FiTClassifier has no context: call set_context with the training features first.")
        if self._stats is None:
            with torch.no_grad():
                self._stats = self.head.fit_stats(self.context_features, self.context_labels, self.n_classes)
        features = self.backbone(images).float()
        with torch.autocast(images.device.type, enabled=False):  # the head's Cholesky runs in float32
            return self.head.logits(features, self._stats)
