"""Fine-tuning, ensembling and prediction: the public API of `zooens.ensemble`.

Roles, lowest first: `specs` (what to run and the hyper-parameter checks), `_registry` (the
strategies by name), `artifacts` (what a run saves), `results` (what a run returns),
`strategies` (one module per strategy; importing it registers them), `run` (`run_finetune`),
`cost` (inference cost of a forward pass and of an ensemble), `greedy` (ensemble selection,
optionally within a cost budget), `bundle` (one-file ensembles, `.zooens`) and `predictor` (ensemble
prediction). The parameter-efficient
adapter methods live in `zooens.ensemble.adapters`, below the strategies that use them.
"""

from zooens.ensemble._registry import STRATEGIES, get_strategy, register_strategy, strategy_names
from zooens.ensemble.artifacts import Artifact, load_artifact_model
from zooens.ensemble.bundle import (
    BUNDLE_SUFFIX,
    BaseModel,
    Bundle,
    BundleError,
    BundleLimits,
    read_bundle,
    write_bundle,
)
from zooens.ensemble.cost import (
    COST_METRICS,
    EnsembleCost,
    ForwardCost,
    backbone_key,
    cost_vector,
    ensemble_cost,
    forward_cost,
)
from zooens.ensemble.greedy import FrontPoint, GreedyEnsembleSelector
from zooens.ensemble.predictor import EnsemblePredictor, as_images
from zooens.ensemble.results import RunResult, build_run_result, mean_cross_entropy
from zooens.ensemble.run import run_finetune
from zooens.ensemble.specs import (
    RunSpec,
    SweepConfig,
    check_batch_size,
    check_learning_rate,
    check_resolution,
    check_seed,
    check_steps,
)
from zooens.ensemble.strategies import ImageStrategy, Strategy

__all__ = [
    "BUNDLE_SUFFIX",
    "COST_METRICS",
    "STRATEGIES",
    "Artifact",
    "BaseModel",
    "Bundle",
    "BundleError",
    "BundleLimits",
    "EnsembleCost",
    "EnsemblePredictor",
    "ForwardCost",
    "FrontPoint",
    "GreedyEnsembleSelector",
    "ImageStrategy",
    "RunResult",
    "RunSpec",
    "Strategy",
    "SweepConfig",
    "as_images",
    "backbone_key",
    "build_run_result",
    "check_batch_size",
    "check_learning_rate",
    "check_resolution",
    "check_seed",
    "check_steps",
    "cost_vector",
    "ensemble_cost",
    "forward_cost",
    "get_strategy",
    "load_artifact_model",
    "mean_cross_entropy",
    "read_bundle",
    "register_strategy",
    "run_finetune",
    "strategy_names",
    "write_bundle",
]
