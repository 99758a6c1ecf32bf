"""zoo: the model catalogue (embedded, user and timm weight sets) and model construction."""

from zooens.zoo import embedded as _embedded  # noqa: F401  registers the embedded zoo
from zooens.zoo import hed as _hed  # noqa: F401  registers HED's VGG16 (a packaged weight set) and its timm model
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
from zooens.zoo._facts import (
    UPSTREAM_CATEGORIES,
    ModelFacts,
    count_meta,
    describe_zoo_sets,
    filter_by_facts,
    imagenet_top1,
    model_facts,
    upstream_category,
)
from zooens.zoo._hubenv import hub_cache_dir, hub_endpoint, hub_offline
from zooens.zoo._loading import clear_cache
from zooens.zoo._names import TAP_SEPARATOR
from zooens.zoo._pull import PullEvent, PullOutcome, PullReport, download_sizes, pull
from zooens.zoo._registry import get_weight_set, list_weight_sets, resolve_zoo, taps_for, with_taps, zoo_sets
from zooens.zoo._sets import ZooSet, zoo_set, zoo_set_names
from zooens.zoo._taps import DEFAULT_TAPS, LayerTap, TapFamily, TapLayer, pool_stage, tap_layers
from zooens.zoo._types import InputConfig, WeightSet, WeightSource
from zooens.zoo._user import add_user_model, remove_user_model

__all__ = [
    "DEFAULT_TAPS",
    "InputConfig",
    "LayerTap",
    "TapFamily",
    "ModelFacts",
    "PREPROCESSINGS",
    "PullEvent",
    "PullOutcome",
    "PullReport",
    "TAP_SEPARATOR",
    "TapLayer",
    "UPSTREAM_CATEGORIES",
    "WeightSet",
    "WeightSource",
    "ZooSet",
    "add_user_model",
    "check_preprocessing",
    "clear_cache",
    "count_meta",
    "create_model",
    "data_config",
    "describe",
    "describe_zoo_sets",
    "download_sizes",
    "filter_by_facts",
    "get_weight_set",
    "hub_cache_dir",
    "hub_endpoint",
    "hub_offline",
    "imagenet_top1",
    "list_weight_sets",
    "missing_weights_error",
    "model_facts",
    "provided_models",
    "pool_stage",
    "pull",
    "remove_user_model",
    "resolve_zoo",
    "tap_layers",
    "upstream_category",
    "taps_for",
    "weights_sha256",
    "with_taps",
    "zoo_set",
    "zoo_set_names",
    "zoo_sets",
]
