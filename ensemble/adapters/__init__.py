"""Parameter-efficient adaptation: one sub-package per method, registered by name, and their
fine-tuning strategies (`patch`, `film`, `kron`, `lora`, `aft`)."""
from zooens.ensemble.adapters import film, kron, lora, patch  # noqa: F401  (registration)
from zooens.ensemble.adapters.base import (
    ADAPTERS,
    AdapterConfig,
    AdapterMethod,
    adapter_state_dict,
    get_adapter,
    inject,
    load_adapter,
    make_config,
    register_adapter,
    save_adapter,
    tensor_bytes,
)
from zooens.ensemble.adapters.film.head import NaiveBayesHead

__all__ = ["ADAPTERS", "AdapterConfig", "AdapterMethod", "adapter_state_dict", "get_adapter", "inject",
           "load_adapter", "make_config", "register_adapter", "save_adapter", "tensor_bytes", "NaiveBayesHead"]


def _register_strategies() -> None:
    from zooens.ensemble.adapters import aft, strategies  # noqa: F401


_register_strategies()
