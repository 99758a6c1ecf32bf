"""`film`: FiLM layers (gamma = 1, beta = 0 per channel) after every normalisation layer of a
frozen backbone, as in FiT (Shysheya et al. 2022); the head is `NaiveBayesHead` and the
classifier, trained with an episodic loss, is `FiTClassifier`."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from zooens.ensemble.adapters.base import AdapterConfig, AdapterMethod, register_adapter, replace_module
from zooens.ensemble.adapters.film.classifier import FiTClassifier, episodic_loss, head_features
from zooens.ensemble.adapters.film.head import NaiveBayesHead
from zooens.errors import ConfigError

__all__ = ["FiLM", "FiTClassifier", "FilmConfig", "NaiveBayesHead", "episodic_loss", "head_features"]


@dataclass
class FilmConfig(AdapterConfig):
    head: str = field(default="qda", metadata={"help": "Naive Bayes head: 'qda', 'lda' or 'prototype'."})
    context_fraction: float = field(default=0.5, metadata={"help": "Share of each class in a batch used as context."})

    def validate(self) -> None:
        if self.head not in ("qda", "lda", "prototype"):
            raise ConfigError(f"FiLM head must be 'qda', 'lda' or 'prototype', got {self.head!r}.")
        if not 0 < self.context_fraction < 1:
            raise ConfigError(f"context_fraction must be in (0, 1), got {self.context_fraction}.")


class FiLM(nn.Module):
    """norm(x) * gamma + beta, per channel (dim 1 for images, the last dim for tokens)."""

    def __init__(self, norm: nn.Module, channels: int, channel_dim: int) -> None:
        super().__init__()
        self.norm = norm
        self.channel_dim = channel_dim
        self.film_gamma = nn.Parameter(torch.ones(channels))
        self.film_beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        shape = [1] * y.ndim
        shape[self.channel_dim if self.channel_dim >= 0 else y.ndim + self.channel_dim] = -1
        return y * self.film_gamma.view(shape) + self.film_beta.view(shape)


def _norm_layers(model: nn.Module) -> list[tuple[str, int, int]]:
    found = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            channels = m.num_features if isinstance(m, nn.BatchNorm2d) else m.num_channels
            found.append((name, channels, 1))
        elif isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
            found.append((name, m.normalized_shape[0], -1))
    return found


@register_adapter("film")
class Film(AdapterMethod):
    config_cls = FilmConfig

    def inject(self, model: nn.Module, config: FilmConfig) -> list[nn.Parameter]:
        layers = _norm_layers(model)
        if not layers:
            raise ConfigError("FiLM found no BatchNorm2d, GroupNorm or LayerNorm layer to modulate.")
        params = []
        for name, channels, dim in layers:
            film = FiLM(model.get_submodule(name), channels, dim)
            replace_module(model, name, film)
            params += [film.film_gamma, film.film_beta]
        return params
