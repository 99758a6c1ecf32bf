"""Named zoo sets shipped as data: `data/zoo_sets.toml` lists each set's timm `arch.tag` names.

A set is a curated spread of pre-trainings (upstream data and objective, CNNs and ViTs): see the
file's header. `zoo_set_names()` lists them, `zoo_set(name)` reads one; the registry resolves a set
name in a zoo spec (`resolve_zoo('diverse-small')`) and `_names.SET_NAMES` reserves the names.
This module reads the file only: it imports nothing of the registry.
"""

from __future__ import annotations

import functools
import importlib.resources
import sys
from dataclasses import dataclass, field

from zooens.errors import UnknownModelError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as `tomli` (a dependency there)
    import tomli as tomllib

__all__ = ["DATA_SET_NAMES", "ZooSet", "zoo_set", "zoo_set_names"]

SETS_FILE = "data/zoo_sets.toml"


@dataclass(frozen=True)
class ZooSet:
    """One named zoo set: its models in file order and each model's upstream category."""

    name: str
    description: str
    models: list[str] = field(default_factory=list)
    upstream: dict[str, str] = field(default_factory=dict)  # model -> upstream category
    why: dict[str, str] = field(default_factory=dict)  # model -> why it is in the set (where said)


@functools.cache
def _load() -> dict[str, ZooSet]:
    text = importlib.resources.files("zooens.zoo").joinpath(SETS_FILE).read_text(encoding="utf-8")
    raw = tomllib.loads(text).get("sets", {})
    out: dict[str, ZooSet] = {}
    for name, body in raw.items():
        models: list[str] = []
        upstream: dict[str, str] = {}
        why: dict[str, str] = {}
        for entry in body.get("models", []):
            model = entry["name"] if isinstance(entry, dict) else str(entry)
            if model in upstream:
                raise ValueError(f"{SETS_FILE}: {model!r} is listed twice in the set {name!r}")
            models.append(model)
            upstream[model] = entry.get("upstream", "other") if isinstance(entry, dict) else "other"
            if isinstance(entry, dict) and entry.get("why"):
                why[model] = str(entry["why"])
        out[name] = ZooSet(name, str(body.get("description", "")), models, upstream, why)
    return out


def zoo_set_names() -> list[str]:
    """Names of the zoo sets shipped in `data/zoo_sets.toml`, in file order."""
    return list(_load())


def zoo_set(name: str) -> ZooSet:
    """The shipped zoo set `name` (a copy: changing it changes nothing here); UnknownModelError
    listing the sets for another name."""
    sets = _load()
    if name not in sets:
        raise UnknownModelError(f"Unknown zoo set {name!r}; the shipped sets are {', '.join(map(repr, sets))}.")
    s = sets[name]
    return ZooSet(s.name, s.description, list(s.models), dict(s.upstream), dict(s.why))


DATA_SET_NAMES: tuple[str, ...] = tuple(zoo_set_names())
"""The names of the shipped sets, read once at import (reserved in `_names.SET_NAMES`)."""
