"""Helpers shared by the CLI commands."""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import typer
from rich.console import Console

from zooens.errors import ConfigError, ZooensError

F = TypeVar("F", bound=Callable)
err_console = Console(stderr=True)


def fail_on_error(fn: F) -> F:
    """Turn a domain error into a red one-line message and exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ZooensError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def parse_floats(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"Expected comma-separated numbers, got {text!r}.") from None


def parse_ints(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"Expected comma-separated integers, got {text!r}.") from None


def parse_strategy_options(items: list[str]) -> dict[str, dict]:
    """`film.head="lda"` and `lora.rank=8` into {"film": {"head": "lda"}, "lora": {"rank": 8}}."""
    import json

    out: dict[str, dict] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        strategy, dot, name = key.partition(".")
        if not sep or not dot or not strategy or not name:
            raise ConfigError(f"Give strategy options as STRATEGY.KEY=VALUE, e.g. lora.rank=8; got {item!r}.")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare word: a string
        out.setdefault(strategy, {})[name] = value
    return out
