"""The job as pure functions: no SQL, no HTTP (`zooens.service` adds the registry, workers and doors).

- `params`: `JobParams`, what a user chooses, validated once (API, CLI, Python API, VTAB runner);
- `splits`: the split policy (train/val/test drawn or given, classes too small for leave-one-out);
- `checks`: what can be known at submission (class counts against sizes and `k`; the zoo's weights);
- `plan`: unit keys, the ranking's order, the sweep over the top-K (`auto` resolved);
- `records`: one record per concept (a model's scores, a run, the ensemble), which the service stores
  and its API derives from;
- `stages`: rank one model, fine-tune one run (its cost included), select the ensemble (budget and
  front), audit the ranking;
- `fitted`: the whole job in memory, `fit(dataset, params) -> FittedEnsemble`.

The names below are imported from their module on first use (PEP 562), so `zooens.pipeline.params`
stays light: the CLI reads `JobParams`' fields when it starts, and the stages bring torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zooens.pipeline.checks import check_counts, job_zoo
    from zooens.pipeline.fitted import FittedEnsemble, fit, write_ensemble_file
    from zooens.pipeline.params import JobParams, domain_error, parse_params
    from zooens.pipeline.plan import (
        AUDIT_STRATEGY,
        EMBED,
        ENSEMBLE,
        FINETUNE,
        PULL,
        STAGES,
        UnitKey,
        plan_finetune_units,
        plan_pull_units,
        rank_models,
    )
    from zooens.pipeline.records import (
        EmbedRecord,
        EnsembleFacts,
        EnsembleRecord,
        PullRecord,
        RankingRow,
        RunFacts,
        RunRecord,
        ScoreRecord,
        ranking_table,
    )
    from zooens.pipeline.splits import check_small_classes, drawn_split_sizes, prepare_job_dataset, prepare_splits
    from zooens.pipeline.stages import (
        audit_job_ranking,
        finetune_run,
        pull_weights,
        rank_model,
        run_probabilities,
        select_ensemble,
        static_priors,
    )

_HOMES = {
    "checks": ("check_counts", "job_zoo"),
    "fitted": ("FittedEnsemble", "fit", "write_ensemble_file"),
    "params": ("JobParams", "domain_error", "parse_params"),
    "plan": (
        "AUDIT_STRATEGY",
        "EMBED",
        "ENSEMBLE",
        "FINETUNE",
        "PULL",
        "STAGES",
        "UnitKey",
        "plan_finetune_units",
        "plan_pull_units",
        "rank_models",
    ),
    "records": (
        "EmbedRecord",
        "EnsembleFacts",
        "EnsembleRecord",
        "PullRecord",
        "RankingRow",
        "RunFacts",
        "RunRecord",
        "ScoreRecord",
        "ranking_table",
    ),
    "splits": ("check_small_classes", "drawn_split_sizes", "prepare_job_dataset", "prepare_splits"),
    "stages": (
        "audit_job_ranking",
        "finetune_run",
        "pull_weights",
        "rank_model",
        "run_probabilities",
        "select_ensemble",
        "static_priors",
    ),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "AUDIT_STRATEGY",
    "EMBED",
    "ENSEMBLE",
    "EmbedRecord",
    "EnsembleFacts",
    "EnsembleRecord",
    "FINETUNE",
    "FittedEnsemble",
    "JobParams",
    "PULL",
    "PullRecord",
    "RankingRow",
    "RunFacts",
    "RunRecord",
    "STAGES",
    "ScoreRecord",
    "UnitKey",
    "audit_job_ranking",
    "check_counts",
    "check_small_classes",
    "domain_error",
    "drawn_split_sizes",
    "finetune_run",
    "fit",
    "job_zoo",
    "parse_params",
    "plan_finetune_units",
    "plan_pull_units",
    "prepare_job_dataset",
    "prepare_splits",
    "pull_weights",
    "rank_model",
    "rank_models",
    "ranking_table",
    "run_probabilities",
    "select_ensemble",
    "static_priors",
    "write_ensemble_file",
]


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME_OF})
