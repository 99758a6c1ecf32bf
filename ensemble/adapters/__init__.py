"""Parameter-efficient adaptation: one sub-package per method (config, layers, injection and any
head of its own), registered by name in `ADAPTERS`.

The fine-tuning strategies that use these methods live in `zooens.ensemble.strategies`, which
imports this package (never the other way round).
"""

from zooens.ensemble.adapters import film, kron, lora, patch  # noqa: F401  (registration)
from zooens.ensemble.adapters.base import (
    ADAPTERS,
    AdapterConfig,
    AdapterMethod,
    adapter_state_dict,
    apply_tensors,
    get_adapter,
    inject,
    load_adapter,
    make_config,
    register_adapter,
    save_adapter,
    tensor_bytes,
)
from zooens.ensemble.adapters.film import FiTClassifier, NaiveBayesHead

__all__ = [
    "ADAPTERS",
    "AdapterConfig",
    "AdapterMethod",
    "FiTClassifier",
    "NaiveBayesHead",
    "adapter_state_dict",
    "apply_tensors",
    "get_adapter",
    "inject",
    "load_adapter",
    "make_config",
    "register_adapter",
    "save_adapter",
    "tensor_bytes",
]
