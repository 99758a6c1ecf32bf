"""The zoo's names: the reserved zoo set names, the embedded weight sets, the unknown-name error.

The lowest piece of the zoo: `_user` checks a new name against these, and `_registry` looks
names up in them, so neither needs the other's internals.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from zooens.errors import UnknownModelError
from zooens.registry import Registry
from zooens.zoo._sets import DATA_SET_NAMES
from zooens.zoo._types import WeightSet

__all__ = [
    "BUILTIN_SET_NAMES",
    "EMBEDDED",
    "SET_NAMES",
    "TAP_SEPARATOR",
    "split_tap",
    "suggest_names",
    "unknown_model_error",
]

BUILTIN_SET_NAMES: tuple[str, ...] = ("embedded", "user", "available")
"""The zoo sets computed from this machine's zoo (not read from `data/zoo_sets.toml`)."""

SET_NAMES: tuple[str, ...] = BUILTIN_SET_NAMES + DATA_SET_NAMES
"""Every zoo set name: the built-in ones, then the shipped sets of `data/zoo_sets.toml`
(`diverse-small`, `diverse`); no user model may take one of these names."""

TAP_SEPARATOR = "@"
"""Joins a model and one of its layers into a layer tap's name: `tf_efficientnet_lite2.in1k@blocks.4`.
No model name holds it (timm's tags do not, and user model names are letters, digits, '.', '_', '-')."""

_LAYER_RE = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")

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


def split_tap(name: str) -> tuple[str, str | None]:
    """`(model, layer)` of a layer tap's name `model@layer`, `(name, None)` for any other name.

    UnknownModelError for an empty side, a layer that is no module path ('blocks.4'), or a tap of a tap.
    """
    if TAP_SEPARATOR not in name:
        return name, None
    model, _, layer = name.partition(TAP_SEPARATOR)
    model, layer = model.strip(), layer.strip()
    if TAP_SEPARATOR in layer:
        raise UnknownModelError(
            f"{name!r} is a tap of a tap; a layer tap is taken of a model only: 'MODEL@LAYER', "
            "e.g. 'tf_efficientnet_lite2.in1k@blocks.4'."
        )
    if not model or not _LAYER_RE.match(layer):
        raise UnknownModelError(
            f"{name!r} is not a layer tap name: write 'MODEL@LAYER' with a module name of that model, "
            "e.g. 'tf_efficientnet_lite2.in1k@blocks.4' (`zooens zoo list --filter 'MODEL@*'` lists them)."
        )
    return model, layer
