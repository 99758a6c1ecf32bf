"""The fine-tuning strategies, one module each: `linear`, `concat` (one probe over the top-K's embeddings),
`full`, the adapter strategies (`patch`, `lora`, `kron`, `film`), `aft`, and `auto` (`full` on a GPU,
`linear` on a CPU).

Importing this package registers them (the timm way): the registry,
`zooens.ensemble._registry`, imports none of them.
"""

from zooens.ensemble._registry import STRATEGIES, get_strategy, register_strategy, strategy_names
from zooens.ensemble.strategies import adapters, aft, auto, concat, film, full, linear  # noqa: F401  (registration)
from zooens.ensemble.strategies.adapters import AdapterStrategy
from zooens.ensemble.strategies.aft import AftStrategy
from zooens.ensemble.strategies.auto import AutoStrategy, resolve_auto
from zooens.ensemble.strategies.base import ImageClassifier, ImageStrategy, Strategy, embedding_dim
from zooens.ensemble.strategies.concat import ConcatProbeModule, ConcatStrategy
from zooens.ensemble.strategies.film import FilmStrategy
from zooens.ensemble.strategies.full import FullStrategy
from zooens.ensemble.strategies.linear import LinearProbe, LinearProbeModule, LinearStrategy

__all__ = [
    "STRATEGIES",
    "AdapterStrategy",
    "AftStrategy",
    "AutoStrategy",
    "ConcatProbeModule",
    "ConcatStrategy",
    "FilmStrategy",
    "FullStrategy",
    "ImageClassifier",
    "ImageStrategy",
    "LinearProbe",
    "LinearProbeModule",
    "LinearStrategy",
    "Strategy",
    "embedding_dim",
    "get_strategy",
    "register_strategy",
    "resolve_auto",
    "strategy_names",
]
