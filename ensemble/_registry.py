"""The fine-tuning strategies by name: `STRATEGIES`, filled by `@register_strategy` at import time.

This module imports no strategy: `zooens.ensemble.strategies` imports the modules that
register (the timm way). It sits beside, not inside, that package so that the run specs can
check a strategy name without importing the strategies themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from zooens.errors import ConfigError
from zooens.registry import Registry

if TYPE_CHECKING:
    from zooens.ensemble.strategies.base import Strategy

__all__ = ["STRATEGIES", "get_strategy", "register_strategy", "strategy_names"]

STRATEGIES: Registry[Strategy] = Registry("strategy", error=ConfigError)

S = TypeVar("S", bound=type)


def register_strategy(name: str) -> Callable[[S], S]:
    """Class decorator: register an instance of the class under `name` in `STRATEGIES`."""

    def decorate(cls: S) -> S:
        if name in STRATEGIES:
            raise ConfigError(
                f"A strategy named {name!r} is already registered ({type(STRATEGIES[name]).__name__}); "
                "choose another name."
            )
        cls.name = name  # type: ignore[attr-defined]
        STRATEGIES.register(name, cls())
        return cls

    return decorate


def get_strategy(name: str) -> Strategy:
    """The registered strategy `name`; ConfigError naming the closest and the valid names otherwise."""
    return STRATEGIES.get(name)


def strategy_names() -> list[str]:
    """Every registered strategy name, sorted."""
    return STRATEGIES.names()
