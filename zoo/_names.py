"""The zoo's names: the reserved zoo set names, the embedded weight sets, the unknown-name error.

The lowest piece of the zoo: `_user` checks a new name against these, and `_registry` looks
names up in them, so neither needs the other's internals.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

from zooens.errors import UnknownModelError
from zooens.registry import Registry
from zooens.zoo._types import WeightSet

__all__ = ["EMBEDDED", "SET_NAMES", "suggest_names", "unknown_model_error"]

SET_NAMES: tuple[str, ...] = ("embedded", "user", "available")

EMBEDDED: Registry[WeightSet] = Registry("embedded weight set", error=UnknownModelError)
"""The embedded weight sets by name, filled when `zooens.zoo.embedded` is imported."""


def suggest_names(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """Up to `n` names among `choices` close to `name`: by spelling, then same architecture."""
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.6)
    if len(close) < n:
        stem = name.split(".", 1)[0].lower()
        close += [c for c in choices if c.lower().startswith(stem + ".") and c not in close][: n - len(close)]
    return close


def unknown_model_error(name: str, choices: Iterable[str], what: str = "model") -> UnknownModelError:
    """An UnknownModelError for `name` listing close matches among `choices`."""
    close = suggest_names(name, choices)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return UnknownModelError(
        f"Unknown {what} {name!r}.{hint} List the zoo with `zooens zoo list` "
        "(`--filter 'PATTERN*'` narrows it), or register your own with "
        "`zooens zoo add NAME --arch ARCH --weights FILE`."
    )
