"""`film`: FiT (Shysheya et al. 2022): one FiLM layer per block of a frozen backbone, placed as FiT
places them (`placement`), a Naive Bayes head configured in closed form (`head`), trained
episodically (`episodes`); `FiTClassifier` (`classifier`) is the trained model."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from zooens.ensemble.adapters.base import AdapterConfig, AdapterMethod, register_adapter
from zooens.ensemble.adapters.film.classifier import FiTClassifier
from zooens.ensemble.adapters.film.episodes import Episode, EpisodeSampler, train_episodic
from zooens.ensemble.adapters.film.head import HEAD_MODES, NaiveBayesHead
from zooens.ensemble.adapters.film.placement import FiLM, FiLMAct, FiLMNorm, film_sites, inject_film
from zooens.errors import ConfigError

__all__ = [
    "Episode",
    "EpisodeSampler",
    "FiLM",
    "FiLMAct",
    "FiLMNorm",
    "FiTClassifier",
    "FilmConfig",
    "NaiveBayesHead",
    "film_sites",
    "inject_film",
    "train_episodic",
]


@dataclass
class FilmConfig(AdapterConfig):
    head: str = field(
        default="lda", metadata={"help": "Naive Bayes head: 'lda' (FiT's default), 'qda' or 'prototype'."}
    )
    max_target_size: int = field(
        default=2000,
        metadata={"help": "Most target examples in one episodic task (FiT: 2000); the task size is the batch size."},
    )

    def validate(self) -> None:
        if self.head not in HEAD_MODES:
            raise ConfigError(
                f"FiLM head must be one of {', '.join(map(repr, HEAD_MODES))}, got {self.head!r}; "
                "FiT's default is 'lda'."
            )
        if self.max_target_size < 1:
            raise ConfigError(f"max_target_size must be at least 1, got {self.max_target_size}; FiT uses 2000.")


@register_adapter("film")
class Film(AdapterMethod):
    config_cls = FilmConfig

    def inject(self, model: nn.Module, config: FilmConfig) -> list[nn.Parameter]:
        return inject_film(model)
