"""zoo: the model catalogue (embedded, user and timm weight sets) and model construction."""

from zooens.zoo import embedded as _embedded  # noqa: F401  registers the embedded zoo
from zooens.zoo._factory import (
    PREPROCESSINGS,
    check_preprocessing,
    create_model,
    data_config,
    describe,
    missing_weights_error,
    provided_models,
    weights_sha256,
)
from zooens.zoo._loading import clear_cache
from zooens.zoo._names import TAP_SEPARATOR
from zooens.zoo._registry import get_weight_set, list_weight_sets, resolve_zoo, taps_for, with_taps, zoo_sets
from zooens.zoo._taps import DEFAULT_TAPS, LayerTap, TapLayer, tap_layers
from zooens.zoo._types import InputConfig, WeightSet, WeightSource
from zooens.zoo._user import add_user_model, remove_user_model

__all__ = [
    "DEFAULT_TAPS",
    "InputConfig",
    "LayerTap",
    "PREPROCESSINGS",
    "TAP_SEPARATOR",
    "TapLayer",
    "WeightSet",
    "WeightSource",
    "add_user_model",
    "check_preprocessing",
    "clear_cache",
    "create_model",
    "data_config",
    "describe",
    "get_weight_set",
    "list_weight_sets",
    "missing_weights_error",
    "provided_models",
    "remove_user_model",
    "resolve_zoo",
    "tap_layers",
    "taps_for",
    "weights_sha256",
    "with_taps",
    "zoo_sets",
]
