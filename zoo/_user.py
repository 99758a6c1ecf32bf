"""The user's own models, persisted as JSON in `settings.user_zoo_file`."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import resolve_model_data_config

from zooens.errors import ConfigError, ConflictError, MissingWeightsError
from zooens.settings import Settings, get_settings
from zooens.zoo._loading import classifier_prefixes, file_sha256, load_into, read_state_dict
from zooens.zoo._names import EMBEDDED, SET_NAMES, unknown_model_error
from zooens.zoo._types import InputConfig, WeightSet, WeightSource

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_FORMAT_VERSION = 1

_lock = threading.RLock()
_cache: dict[str, Any] = {"key": None, "sets": {}}


def _file_key(path: Path) -> tuple[str, int, int] | tuple[str, None, None]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (str(path), None, None)
    return (str(path), st.st_size, st.st_mtime_ns)


def _read(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        models = data["models"]
        if not isinstance(models, dict):
            raise TypeError("'models' is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"The user zoo file {path} is unreadable ({exc}); fix or delete it, then add your models "
            "again with `zooens zoo add`."
        ) from None
    return models


def _write(path: Path, models: dict[str, dict[str, Any]]) -> None:
    """Write atomically: a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".user_zoo.", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": _FORMAT_VERSION, "models": models}, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _to_weight_set(name: str, entry: dict[str, Any]) -> WeightSet:
    return WeightSet(
        name=name,
        arch=entry["arch"],
        tag=name.partition(".")[2],
        origin="user",
        source=WeightSource(kind="file", path=entry["path"], sha256=entry["sha256"]),
        input=InputConfig.from_dict(entry["input"]),
        num_classes=int(entry.get("num_classes", 0)),
        embed_dim=entry.get("embed_dim"),
        num_params=entry.get("num_params"),
        upstream_data=entry.get("upstream_data"),
        license=entry.get("license"),
        paper=entry.get("paper"),
    )


def user_weight_sets(settings: Settings | None = None) -> dict[str, WeightSet]:
    """The user's weight sets by name, re-read whenever the file changes."""
    path = (settings or get_settings()).user_zoo_file
    key = _file_key(path)
    with _lock:
        if _cache["key"] != key:
            _cache["sets"] = {n: _to_weight_set(n, e) for n, e in _read(path).items()}
            _cache["key"] = key
        return dict(_cache["sets"])


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ConfigError(
            f"Invalid model name {name!r}: use letters, digits, '.', '_' and '-', starting with a "
            "letter or digit (e.g. 'my_resnet.ft_cats')."
        )
    if name in SET_NAMES:
        raise ConfigError(f"{name!r} is the name of a zoo set; choose another model name.")
    if name in EMBEDDED:
        raise ConflictError(f"{name!r} is an embedded model and cannot be replaced; choose another name.")


def _check_arch(arch: str) -> None:
    if not isinstance(arch, str) or not timm.is_model(arch):
        raise unknown_model_error(str(arch), timm.list_models(), what="timm architecture")


def add_user_model(
    name: str,
    arch: str,
    weights_path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    settings: Settings | None = None,
) -> WeightSet:
    """Register a local checkpoint of a timm architecture as a user model; returns its weight set."""
    settings = settings or get_settings()
    _check_name(name)
    _check_arch(arch)
    path = Path(weights_path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"Weights file {path} does not exist; give the path of a .safetensors or .pth file.")
    if path.suffix.lower() not in _SUFFIXES:
        raise ConfigError(
            f"Weights file {path.name} has an unsupported extension; give a .safetensors, .pth or .pt file."
        )
    with _lock:
        models = _read(settings.user_zoo_file)
        if name in models and not overwrite:
            raise ConflictError(
                f"A user model called {name!r} exists already ({models[name]['path']}); choose another "
                "name, pass overwrite=True (`--overwrite`), or remove it with `zooens zoo remove`."
            )
    label = f"{name!r} ({path.name})"
    state = read_state_dict(path)
    with torch.random.fork_rng(devices=[]):
        model = timm.create_model(arch, pretrained=False, num_classes=0)
    load_into(model, state, label)
    heads = [k for k in state if k.endswith("weight") and any(k.startswith(p) for p in classifier_prefixes(model))]
    num_classes = int(state[heads[0]].shape[0]) if heads and state[heads[0]].ndim == 2 else 0
    entry: dict[str, Any] = {
        "arch": arch,
        "path": str(path),
        "sha256": file_sha256(path),
        "input": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in InputConfig.from_timm(resolve_model_data_config(model)).to_dict().items()
        },
        "num_classes": num_classes,
        "embed_dim": _embed_dim(model),
        "num_params": int(sum(p.numel() for p in model.parameters())),
        "added_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    del model, state
    with _lock:
        models = _read(settings.user_zoo_file)
        if name in models and not overwrite:
            raise ConflictError(f"A user model called {name!r} was added meanwhile; choose another name.")
        models[name] = entry
        _write(settings.user_zoo_file, models)
    logger.info("registered user model %s (%s, %s)", name, arch, path)
    return _to_weight_set(name, entry)


def _embed_dim(model: Any) -> int:
    """Width of the embedding a `num_classes=0` timm model returns."""
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def remove_user_model(name: str, *, settings: Settings | None = None) -> None:
    """Forget a user model (its weights file is left alone)."""
    settings = settings or get_settings()
    with _lock:
        models = _read(settings.user_zoo_file)
        if name not in models:
            raise unknown_model_error(name, models, what="user model")
        del models[name]
        _write(settings.user_zoo_file, models)
    logger.info("removed user model %s", name)


def verify_user_file(ws: WeightSet) -> Path:
    """The user model's file, which must still exist."""
    path = Path(ws.source.path or "")
    if not path.is_file():
        raise MissingWeightsError(
            f"The weights of user model {ws.name!r} were registered at {path}, which no longer exists. "
            f"Put the file back, or register it again with `zooens zoo add {ws.name} --arch {ws.arch} "
            "--weights FILE --overwrite`."
        )
    return path
