"""What a job will run: unit keys, the ranking's order and the sweep over the top-K.

    pull:<model_name>                                    fetch a model's missing weights (`pull` jobs only)
    embed:<model_name>                                   rank one model (kNN on its embeddings)
    finetune:<model_name>:<strategy>:lr=<lr>:steps=<n>   one run of the sweep
    ensemble                                             the greedy ensemble of the job's runs

`UnitKey` formats and parses keys; a run's key names it everywhere (its record, the ensemble's
members and front, the registry's `job_units.key` and `finetune_runs.unit_key`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from zooens.ensemble import get_strategy
from zooens.ensemble.strategies.auto import AUTO, resolve_auto
from zooens.errors import JobError
from zooens.pipeline.params import JobParams
from zooens.pipeline.records import ScoreRecord
from zooens.settings import get_settings
from zooens.utils import resolve_device
from zooens.zoo import get_weight_set

__all__ = [
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
    "requested_strategy",
    "resolved_strategies",
]

logger = logging.getLogger(__name__)

PULL = "pull"
EMBED = "embed"
FINETUNE = "finetune"
ENSEMBLE = "ensemble"
STAGES = (PULL, EMBED, FINETUNE, ENSEMBLE)
AUDIT_STRATEGY = "linear"
"""The cheapest strategy (a head on cached embeddings): `audit_ranking` runs it on the models beyond the top-K."""


@dataclass(frozen=True, order=True)
class UnitKey:
    """The key of one unit; `str(key)` is what the registry stores, `UnitKey.parse` reads it back."""

    kind: str
    model_name: str | None = None
    strategy: str | None = None
    lr: float | None = None
    steps: int | None = None

    @classmethod
    def pull(cls, model_name: str) -> UnitKey:
        return cls(PULL, model_name)

    @classmethod
    def embed(cls, model_name: str) -> UnitKey:
        return cls(EMBED, model_name)

    @classmethod
    def finetune(cls, model_name: str, strategy: str, lr: float, steps: int) -> UnitKey:
        return cls(FINETUNE, model_name, strategy, float(lr), int(steps))

    @classmethod
    def ensemble(cls) -> UnitKey:
        return cls(ENSEMBLE)

    def __str__(self) -> str:
        if self.kind in (PULL, EMBED):
            return f"{self.kind}:{self.model_name}"
        if self.kind == FINETUNE:
            return f"{FINETUNE}:{self.model_name}:{self.strategy}:lr={self.lr:g}:steps={self.steps}"
        return ENSEMBLE

    @classmethod
    def parse(cls, text: str) -> UnitKey:
        """The key a string spells; JobError if it is not a unit key."""
        kind, _, rest = text.partition(":")
        try:
            if kind in (PULL, EMBED) and rest:
                return cls(kind, rest)
            if kind == FINETUNE:
                model_name, strategy, lr, steps = rest.split(":")
                if not lr.startswith("lr=") or not steps.startswith("steps="):
                    raise ValueError(text)
                return cls.finetune(model_name, strategy, float(lr[3:]), int(steps[6:]))
            if kind == ENSEMBLE and not rest:
                return cls.ensemble()
        except ValueError:
            pass
        raise JobError(
            f"{text!r} is not a unit key; keys look like 'pull:<model>', 'embed:<model>', "
            "'finetune:<model>:<strategy>:lr=<lr>:steps=<steps>' or 'ensemble'."
        )

    @property
    def slug(self) -> str:
        """The key as a file name."""
        return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in str(self))


def rank_models(scores: list[ScoreRecord]) -> list[str]:
    """Model names best first: kNN accuracy, then val accuracy, then name."""
    ordered = sorted(scores, key=lambda r: (-r.knn_accuracy, -(r.val_accuracy or 0.0), r.model_name))
    return [r.model_name for r in ordered]


def resolved_strategies(params: JobParams, device: str | None = None) -> list[str]:
    """The job's strategies with `auto` resolved for `device`, each once, in order.

    Planning runs where the units run (the worker), so the choice matches the hardware the runs
    get; it is logged, and each run's hparams record `strategy_requested: auto`. `device` None:
    this process's (`ZOOENS_DEVICE`).
    """
    device = resolve_device(get_settings().device) if device is None else device
    out: list[str] = []
    for name in params.strategies:
        resolved = resolve_auto(device) if name == AUTO else name
        if name == AUTO:
            logger.info("strategy auto -> %s on this worker (%s)", resolved, device)
        if resolved not in out:
            out.append(resolved)
    return out


def requested_strategy(params: JobParams, strategy: str, device: str) -> str:
    """The strategy the user asked for that a run of `strategy` on `device` stands for: `auto` when
    only `auto` brought it into the sweep, else `strategy` itself."""
    if AUTO in params.strategies and strategy not in params.strategies and strategy == resolve_auto(device):
        return AUTO
    return strategy


def plan_finetune_units(
    ranked_models: list[str], params: JobParams, device: str | None = None, *, audit: bool = True
) -> list[UnitKey]:
    """The sweep over the top-K models of a ranking, in a deterministic order (`auto` resolved).

    A strategy that cannot fine-tune a model (`Strategy.supports`: kron on a CNN) plans no run of it on that
    model (logged); JobError if no run is left at all. A joint strategy (`Strategy.joint`: `concat`, one
    probe over the top-K's embeddings) is planned once,
    after the per-model runs, keyed by the best-ranked model; with fewer than two selected models it is
    left out (logged).

    With `params.audit_ranking` = N (and `audit`), the audit runs follow: `AUDIT_STRATEGY`'s sweep on
    the N models ranked after the top-K, and on the top-K too when the job's own strategies do not
    include it, so that every audited model is fine-tuned alike. The ensemble uses `audit=False`: it
    is built from the top-K's runs only, as without an audit.
    """
    keys: list[UnitKey] = []
    device = resolve_device(get_settings().device) if device is None else device
    strategies = resolved_strategies(params, device)
    top = ranked_models[: params.top_k]
    for model_name in top:
        for strategy in strategies:
            if get_strategy(strategy).joint:
                continue
            why = get_strategy(strategy).supports(model_name, params.options_for(strategy))
            if why is not None:  # submission warned (`checks.check_strategies`)
                logger.info("strategy %s skipped on %s: %s", strategy, model_name, why)
                continue
            for hp in params.sweep_for(strategy, device).grid():
                keys.append(UnitKey.finetune(model_name, strategy, hp["lr"], hp["steps"]))
    for strategy in strategies:
        if get_strategy(strategy).joint:
            if len(top) < 2:
                logger.info("strategy %s skipped: it needs at least two selected models (top_k %d)", strategy, len(top))
                continue
            for hp in params.sweep_for(strategy, device).grid():
                keys.append(UnitKey.finetune(top[0], strategy, hp["lr"], hp["steps"]))
    if top and not keys:
        raise JobError(
            f"None of the {len(top)} selected model{'s' if len(top) > 1 else ''} ({', '.join(top)}) can be fine-tuned "
            f"with {', '.join(strategies)} (the submission warned which entries cannot). Add a strategy every "
            "model takes, such as linear, or raise --top-k."
        )
    if audit and params.audit_ranking:
        for model_name in ranked_models[: params.top_k + params.audit_ranking]:
            for hp in params.sweep_for(AUDIT_STRATEGY, device).grid():
                key = UnitKey.finetune(model_name, AUDIT_STRATEGY, hp["lr"], hp["steps"])
                if key not in keys:
                    keys.append(key)
    return keys


def plan_pull_units(zoo_models: list[str], params: JobParams) -> list[UnitKey]:
    """With `params.pull`, one unit per model of the zoo whose weights come from the Hugging Face hub
    (a layer tap pulls its model's weights, once), in zoo order; none without `pull`. A unit whose
    weights are there by the time it runs finds them and fetches nothing."""
    if not params.pull:
        return []
    keys: list[UnitKey] = []
    for name in zoo_models:
        ws = get_weight_set(name)
        base = get_weight_set(ws.tap_of) if ws.tap_of else ws
        key = UnitKey.pull(base.name)
        if base.source.kind == "hub" and key not in keys:
            keys.append(key)
    return keys
