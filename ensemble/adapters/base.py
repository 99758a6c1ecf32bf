"""Shared machinery of the parameter-efficient adapters.

An adapter method has a config (a dataclass validated on creation) and an `inject` that
changes a model in place so that it starts as the identity (same outputs as before) and
returns the only parameters that train. A saved adapter is `adapter.json` (method and config)
plus `adapter.safetensors` holding only the updated tensors; `load_adapter` re-applies it to a
fresh base model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from zooens.errors import ConfigError
from zooens.registry import Registry

__all__ = [
    "AdapterConfig",
    "AdapterMethod",
    "ADAPTERS",
    "register_adapter",
    "get_adapter",
    "make_config",
    "inject",
    "adapter_state_dict",
    "save_adapter",
    "load_adapter",
    "tensor_bytes",
    "apply_tensors",
    "replace_module",
]

CONFIG_FILE = "adapter.json"
TENSORS_FILE = "adapter.safetensors"


@dataclass
class AdapterConfig:
    """Base of adapter configs; subclasses add fields with `metadata={"help": ...}`."""

    def __post_init__(self) -> None:
        for f in fields(self):
            default = f.default
            value = getattr(self, f.name)
            if isinstance(default, (bool, int, float, str)) and not isinstance(default, type(None)):
                expected = (int, float) if isinstance(default, float) else type(default)
                if not isinstance(value, expected) or (isinstance(value, bool) and not isinstance(default, bool)):
                    raise ConfigError(
                        f"{type(self).__name__}.{f.name} must be a {type(default).__name__}, got {value!r}."
                    )
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError saying what to change."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> AdapterConfig:
        """The config a saved adapter (`to_dict` in an artifact or adapter.json) was trained with; a method
        whose defaults changed since fills the fields an older save lacks with what they meant then."""
        return cls(**saved)


class AdapterMethod:
    """One method: its config class, how it changes a model, which tensors it saves."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[AdapterConfig]] = AdapterConfig

    def inject(self, model: nn.Module, config: AdapterConfig) -> list[nn.Parameter]:
        raise NotImplementedError

    def saved_keys(self, model: nn.Module, config: AdapterConfig, trainable: list[nn.Parameter]) -> list[str]:
        """State-dict keys that hold the update: by default the trainable parameters."""
        ids = {id(p) for p in trainable}
        return [name for name, p in model.named_parameters() if id(p) in ids]


ADAPTERS: Registry[AdapterMethod] = Registry("adapter", error=ConfigError)
M = TypeVar("M", bound=type[AdapterMethod])


def register_adapter(name: str) -> Callable[[M], M]:
    """Class decorator: register an instance of the method under `name` in `ADAPTERS`."""

    def decorate(cls: M) -> M:
        if name in ADAPTERS:
            raise ConfigError(f"An adapter named {name!r} is already registered; choose another name.")
        cls.name = name
        ADAPTERS.register(name, cls())
        return cls

    return decorate


def get_adapter(name: str) -> AdapterMethod:
    """The registered method `name`; ConfigError naming the closest and the valid names otherwise."""
    return ADAPTERS.get(name)


def make_config(name: str, options: dict[str, Any] | None = None) -> AdapterConfig:
    """The method's config from options; unknown keys are refused with the valid ones listed."""
    cls = get_adapter(name).config_cls
    known = {f.name for f in fields(cls)}
    options = {k: v for k, v in (options or {}).items() if k in known or k not in _TRAINING_OPTIONS}
    unknown = set(options) - known
    if unknown:
        raise ConfigError(f"Unknown {name} option(s) {sorted(unknown)}; valid: {sorted(known)}.")
    try:
        return cls(**options)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Bad {name} options {options}: {exc}. See the option help of {cls.__name__}.") from None


_TRAINING_OPTIONS = {"momentum", "weight_decay", "freeze_norm_stats", "eval_batch_size", "teachers", "beta"}


def inject(model: nn.Module, name: str, config: AdapterConfig) -> list[nn.Parameter]:
    """Freeze `model`, apply the adapter, return the parameters that train (and only those)."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = get_adapter(name).inject(model, config)
    for p in params:
        p.requires_grad_(True)
    return params


def adapter_state_dict(model: nn.Module, keys: list[str]) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    return {k: state[k].detach().cpu().clone() for k in keys}


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def save_adapter(model: nn.Module, name: str, config: AdapterConfig, keys: list[str], directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps({"method": name, "config": config.to_dict()}, indent=2))
    save_file({k: v.contiguous() for k, v in adapter_state_dict(model, keys).items()}, str(directory / TENSORS_FILE))
    return directory


def load_adapter(base_model: nn.Module, directory: str | Path) -> tuple[nn.Module, AdapterConfig]:
    """Re-apply a saved adapter to a fresh base model (the one it was trained from)."""
    directory = Path(directory)
    meta = json.loads((directory / CONFIG_FILE).read_text())
    config = get_adapter(meta["method"]).config_cls.from_saved(meta["config"])
    inject(base_model, meta["method"], config)
    tensors = load_file(str(directory / TENSORS_FILE))
    apply_tensors(base_model, tensors)
    return base_model.eval(), config


def apply_tensors(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load the update into a model that has the adapter injected; every key must exist."""
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if unexpected:
        raise ConfigError(
            f"The adapter holds tensors the model does not have: {unexpected[:5]}; "
            "was it trained on another architecture?"
        )


def replace_module(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
