"""Helpers shared by the CLI commands."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from zooens.errors import ConfigError, ZooensError

F = TypeVar("F", bound=Callable)

PIPE_WIDTH = 10_000
"""Width of the console when stdout is not a terminal: tables keep every column (at their natural width)."""


def make_console(*, stderr: bool = False) -> Console:
    """A console for the CLI: the terminal's width on a terminal, unbounded when piped (nothing cut off)
    unless COLUMNS says otherwise; no syntax highlighting of numbers in messages."""
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty():
        width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, width=width)


err_console = make_console(stderr=True)

_STATE = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    """`zooens -q ...`: no progress bars in any command (set by the top-level callback)."""
    _STATE["quiet"] = quiet


def is_quiet() -> bool:
    return _STATE["quiet"]


__all__ = [
    "escape",
    "err_console",
    "fail_on_error",
    "is_quiet",
    "make_console",
    "parse_floats",
    "parse_ints",
    "parse_strategy_options",
    "set_quiet",
]


def fail_on_error(fn: F) -> F:
    """Turn a domain error into a red one-line message and exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ZooensError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
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
