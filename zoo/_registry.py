"""The registry: embedded, user and catalogue weight sets, looked up by `arch.tag` name.

Precedence when names collide: embedded, then user, then timm's catalogue. The embedded sets
register themselves when `zooens.zoo.embedded` is imported (the package `__init__` does that).
A layer tap `model@layer` (`zooens.zoo._taps`) resolves here like any name; listings show taps
only when asked (`taps=True`, or a pattern with '@').
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import threading
from collections.abc import Iterable, Sequence

from timm.models import get_pretrained_cfg

from zooens.errors import UnknownModelError
from zooens.zoo._catalogue import build_catalogue
from zooens.zoo._names import EMBEDDED, SET_NAMES, TAP_SEPARATOR, split_tap, suggest_names, unknown_model_error
from zooens.zoo._sets import zoo_set, zoo_set_names
from zooens.zoo._taps import DEFAULT_TAPS, tap_layers, tap_stages, tap_weight_set
from zooens.zoo._types import WeightSet
from zooens.zoo._user import user_weight_sets

__all__ = [
    "SET_NAMES",
    "all_weight_sets",
    "get_weight_set",
    "list_weight_sets",
    "register_weight_set",
    "resolve_zoo",
    "taps_for",
    "unknown_model_error",
    "with_taps",
    "zoo_sets",
]

logger = logging.getLogger(__name__)

_catalogue: dict[str, WeightSet] = {}  # filled lazily from timm's pretrained cfgs
_catalogue_lock = threading.Lock()

_GLOB_CHARS = set("*?[")


def register_weight_set(ws: WeightSet) -> WeightSet:
    """Add an embedded weight set at import time; a duplicate name is an error."""
    return EMBEDDED.register(ws.name, ws)


def _embedded_sets() -> dict[str, WeightSet]:
    return dict(EMBEDDED.items())


def _default_zoo() -> list[WeightSet]:
    """The zoo set `embedded`: the registered weight sets of origin `embedded` (not those of origin `package`,
    such as HED's VGG16, which the set `packaged` adds)."""
    return [ws for _, ws in EMBEDDED.items() if ws.origin == "embedded"]


def _catalogue_sets() -> dict[str, WeightSet]:
    if not _catalogue:
        with _catalogue_lock:
            if not _catalogue:
                _catalogue.update(build_catalogue())
    return _catalogue


def all_weight_sets() -> dict[str, WeightSet]:
    """Every weight set by name, precedence applied, in catalogue then user then embedded order."""
    merged = dict(_catalogue_sets())
    merged.update(user_weight_sets())
    merged.update(_embedded_sets())
    return merged


def get_weight_set(name: str) -> WeightSet:
    """The weight set called `name`; a bare architecture picks its embedded or default tag; `model@layer`
    is a layer tap of `model` (UnknownModelError listing the model's tap layers for a wrong layer)."""
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError("A model name must be a non-empty string such as 'tf_efficientnet_lite0.in1k'.")
    name = name.strip()
    base, layer = split_tap(name)
    if layer is not None:
        return tap_weight_set(get_weight_set(base), layer)
    if name in EMBEDDED:
        return EMBEDDED.get(name)
    user = user_weight_sets()
    if name in user:
        return user[name]
    catalogue = _catalogue_sets()
    if name in catalogue:
        return catalogue[name]
    if "." not in name:
        for _, ws in EMBEDDED.items():
            if ws.arch == name:
                return ws
        cfg = get_pretrained_cfg(name)  # timm's default tag of a bare architecture
        if cfg is not None and f"{name}.{cfg.tag}" in catalogue:
            logger.debug("%r resolved to %r", name, f"{name}.{cfg.tag}")
            return catalogue[f"{name}.{cfg.tag}"]
    raise unknown_model_error(name, all_weight_sets())


def list_weight_sets(pattern: str | None = None, available_only: bool = False, taps: bool = False) -> list[WeightSet]:
    """Weight sets whose name matches the glob `pattern` (case-insensitive), sorted by name.

    Layer taps are listed only when asked: `taps=True` adds every tap layer of each model listed, and a
    pattern 'MODELS@LAYERS' lists the taps whose layer matches LAYERS of the models matching MODELS
    (`'tf_efficientnet_lite*@blocks.*'`). Each tapped architecture is built once on the meta device.
    """
    model_pat, _, layer_pat = (pattern or "").partition(TAP_SEPARATOR)
    sets: Iterable[WeightSet] = all_weight_sets().values()
    if model_pat:
        pat = model_pat.lower()
        sets = [ws for ws in sets if fnmatch.fnmatchcase(ws.name.lower(), pat)]
    if available_only:
        sets = [ws for ws in sets if ws.weights_present]
    if taps or layer_pat:
        out: list[WeightSet] = []
        for ws in sets:
            if not layer_pat:
                out.append(ws)
            out += [
                tap_weight_set(ws, t.module)
                for t in tap_layers(ws.arch)
                if not layer_pat or fnmatch.fnmatchcase(t.module.lower(), layer_pat.lower())
            ]
        sets = out
    return sorted(sets, key=lambda ws: ws.name)


def taps_for(model: str | WeightSet, last: int = DEFAULT_TAPS) -> list[str]:
    """Names of the layer taps `--taps auto` adds for `model` (`zoo._taps.tap_stages`: its last `last`
    stages before its final features, deepest last); empty when timm cannot tap its architecture."""
    ws = get_weight_set(model) if isinstance(model, str) else model
    return [f"{ws.name}{TAP_SEPARATOR}{t.module}" for t in tap_stages(ws, last)]


def with_taps(weight_sets: Iterable[WeightSet], last: int = DEFAULT_TAPS) -> list[WeightSet]:
    """Each weight set followed by its `taps_for` taps (`--taps auto`), without duplicates; a tap given
    already stays where it is and gets no taps of its own."""
    out: dict[str, WeightSet] = {}
    for ws in weight_sets:
        out.setdefault(ws.name, ws)
        if not ws.is_tap:
            for t in tap_stages(ws, last):
                tap = tap_weight_set(ws, t.module)
                out.setdefault(tap.name, tap)
    return list(out.values())


def zoo_sets() -> dict[str, list[str]]:
    """The named zoo sets: the embedded models, the user's own, then the shipped sets of
    `data/zoo_sets.toml` ('diverse-small', 'diverse'; their weights come from the hub)."""
    out = {"embedded": [ws.name for ws in _default_zoo()], "user": sorted(user_weight_sets())}
    for name in zoo_set_names():
        out[name] = zoo_set(name).models
    return out


def _resolve_token(token: str) -> list[WeightSet]:
    if token == "embedded":
        return _default_zoo()
    if token == "user":
        user = user_weight_sets()
        if not user:
            raise UnknownModelError(
                "The zoo set 'user' is empty: register a model first with "
                "`zooens zoo add NAME --arch ARCH --weights FILE`."
            )
        return [user[n] for n in sorted(user)]
    if token == "available":
        found = list_weight_sets(available_only=True)
        if not found:
            raise UnknownModelError(
                "No weight set has weights on this machine; install the efficientnet-lite packages, "
                "add a file with `zooens zoo add`, or fill the Hugging Face hub cache."
            )
        return found
    if token in zoo_set_names():
        return [get_weight_set(name) for name in zoo_set(token).models]
    if _GLOB_CHARS & set(token):
        found = list_weight_sets(token)
        if not found:
            stem = token.strip("*?[]").split("*", 1)[0]
            close = suggest_names(stem, all_weight_sets()) if stem else []
            hint = f" Close names: {', '.join(close)}." if close else ""
            raise UnknownModelError(
                f"The pattern {token!r} matches no model.{hint} Try `zooens zoo list --filter '{token}'` "
                f"with a broader pattern, or one of the sets {', '.join(repr(n) for n in SET_NAMES)}."
            )
        return found
    try:
        return [get_weight_set(token)]
    except UnknownModelError:
        close = difflib.get_close_matches(token.lower(), SET_NAMES, n=1, cutoff=0.75)
        if not close:
            raise
        raise UnknownModelError(
            f"Unknown zoo set or model {token!r}; did you mean {close[0]!r}? Zoo sets: "
            f"{', '.join(repr(n) for n in SET_NAMES)}; patterns ('convnext*') and model names work too."
        ) from None


def resolve_zoo(spec: str | Sequence[str], *, taps: int = 0) -> list[WeightSet]:
    """Weight sets of a zoo spec: a set name (`SET_NAMES`), a glob, comma-separated names (layer taps `model@layer`
    among them), or a list of those; `taps` > 0 adds each model's last `taps` stages (`with_taps`)."""
    if isinstance(spec, str):
        tokens = [t.strip() for t in spec.split(",")]
    else:
        tokens = [str(t).strip() for t in spec]
    tokens = [t for t in tokens if t]
    if not tokens:
        raise UnknownModelError(
            f"The zoo {spec!r} names no model; use a zoo set ({', '.join(repr(n) for n in SET_NAMES)}), "
            "a pattern such as 'convnext*', or comma-separated model names."
        )
    out: dict[str, WeightSet] = {}
    for token in tokens:
        for ws in _resolve_token(token):
            out.setdefault(ws.name, ws)
    return with_taps(out.values(), taps) if taps else list(out.values())
