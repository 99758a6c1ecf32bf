"""How good was the ranking? Each predictor's ranking (kNN, LogME) against the fine-tuned order.

For the models a job fine-tuned, `audit_ranking` compares each predictor's scores with the best
fine-tuned validation accuracy of each model: Spearman's rho and Kendall's tau-b (both handle
ties: average ranks for Spearman, the tau-b correction for Kendall, as `scipy.stats.spearmanr`
and `kendalltau` do), and the regret of trusting the predictor's top-K: the best fine-tuned
accuracy over all audited models minus the best among the predictor's top-K of them. A figure
that cannot be computed (fewer than two models, a constant ranking) is NaN with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from zooens.errors import ConfigError, DatasetError

__all__ = [
    "Correlation",
    "PredictorAudit",
    "RankingAudit",
    "audit_ranking",
    "best_accuracy_per_model",
    "kendall_tau_b",
    "rank_average",
    "spearman_rho",
]


@dataclass(frozen=True)
class Correlation:
    """A correlation coefficient, or NaN with the reason it has none."""

    value: float
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"value": None if math.isnan(self.value) else self.value, "reason": self.reason}


def rank_average(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of `x`, ties sharing the mean of the ranks they span."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + 1 + end) / 2.0
            start = end
    return ranks


def _check_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, Correlation | None]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise DatasetError(f"Correlations need two 1-D arrays of one length, got shapes {x.shape} and {y.shape}.")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise DatasetError("Correlations need finite values; drop the models without a score first.")
    if len(x) < 2:
        return x, y, Correlation(math.nan, f"only {len(x)} model(s): a correlation needs at least two")
    for name, v in (("predictor", x), ("fine-tuned accuracy", y)):
        if np.all(v == v[0]):
            return x, y, Correlation(math.nan, f"the {name} is the same for every model: no order to compare")
    return x, y, None


def spearman_rho(x: np.ndarray, y: np.ndarray) -> Correlation:
    """Spearman's rank correlation: Pearson's correlation of the average ranks."""
    x, y, undefined = _check_pair(x, y)
    if undefined:
        return undefined
    rx, ry = rank_average(x), rank_average(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return Correlation(float(np.clip(rx @ ry / math.sqrt((rx @ rx) * (ry @ ry)), -1.0, 1.0)))


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> Correlation:
    """Kendall's tau-b: (concordant - discordant) / sqrt((n0 - ties in x) (n0 - ties in y)), over pairs."""
    x, y, undefined = _check_pair(x, y)
    if undefined:
        return undefined
    iu = np.triu_indices(len(x), k=1)
    sx = np.sign(x[:, None] - x[None, :])[iu]
    sy = np.sign(y[:, None] - y[None, :])[iu]
    pairs_x, pairs_y = np.count_nonzero(sx), np.count_nonzero(sy)  # pairs not tied in x, in y
    return Correlation(float(np.clip((sx * sy).sum() / math.sqrt(pairs_x * pairs_y), -1.0, 1.0)))


@dataclass(frozen=True)
class PredictorAudit:
    """One predictor's ranking of the audited models against their fine-tuned accuracy.

    predictor : its name (`knn`, `logme`). models : the models it scored, best predicted first
        (ties by name). n : their number. spearman, kendall : the correlations.
    top_k : K. top_k_models : the predictor's first K models. best_in_top_k : the best fine-tuned
        accuracy among them. best_overall : the best over all n. regret : best_overall -
        best_in_top_k (0: the top-K held the best model); NaN with `regret_reason` when n is 0.
    """

    predictor: str
    models: tuple[str, ...]
    n: int
    spearman: Correlation
    kendall: Correlation
    top_k: int
    top_k_models: tuple[str, ...]
    best_in_top_k: float
    best_overall: float
    regret: float
    regret_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {
            "predictor": self.predictor,
            "models": list(self.models),
            "n": self.n,
            "spearman": self.spearman.to_dict(),
            "kendall": self.kendall.to_dict(),
            "top_k": self.top_k,
            "top_k_models": list(self.top_k_models),
            "best_in_top_k": num(self.best_in_top_k),
            "best_overall": num(self.best_overall),
            "regret": num(self.regret),
            "regret_reason": self.regret_reason,
        }


@dataclass(frozen=True)
class RankingAudit:
    """Every predictor's audit over the fine-tuned models.

    finetuned_accuracy : model -> best fine-tuned validation accuracy, for every audited model.
    predictors : predictor name -> its `PredictorAudit`, in the order the scores were given.
    skipped : predictor name -> models it has no finite score for (left out of its audit).
    """

    finetuned_accuracy: dict[str, float]
    predictors: dict[str, PredictorAudit]
    skipped: dict[str, tuple[str, ...]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "finetuned_accuracy": dict(self.finetuned_accuracy),
            "predictors": {name: a.to_dict() for name, a in self.predictors.items()},
            "skipped": {name: list(models) for name, models in self.skipped.items()},
        }


def _finite(value: Any) -> bool:
    return (
        value is not None
        and not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and math.isfinite(value)
    )


def best_accuracy_per_model(runs: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Each model's best fine-tuned validation accuracy over its runs: (model_name, val_acc) pairs."""
    best: dict[str, float] = {}
    for model, acc in runs:
        if not _finite(acc):
            raise DatasetError(f"Run of {model!r} has no finite validation accuracy ({acc!r}).")
        best[model] = max(best.get(model, -math.inf), float(acc))
    return best


def audit_ranking(
    finetuned_accuracy: Mapping[str, float], scores: Mapping[str, Mapping[str, float | None]], *, top_k: int
) -> RankingAudit:
    """Audit each predictor in `scores` against `finetuned_accuracy`.

    finetuned_accuracy : model -> best fine-tuned val accuracy (`best_accuracy_per_model`), for the
        models fine-tuned (the job's top-K and any extra audited models).
    scores : predictor name -> (model -> score, higher predicted better), e.g.
        {"knn": {...}, "logme": {...}}. A model with no finite score for a predictor (LogME may
        fail) is left out of that predictor's audit and listed in `skipped`.
    top_k : K of the regret: the predictor's first K of the audited models (ties by name, as the
        ranking table breaks them). K at least the number of models gives regret 0.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ConfigError(f"top_k must be a positive integer, got {top_k!r}; e.g. 3.")
    accuracy: dict[str, float] = {}
    for model, acc in finetuned_accuracy.items():
        if not _finite(acc):
            raise DatasetError(f"Model {model!r} has no finite fine-tuned accuracy ({acc!r}).")
        accuracy[model] = float(acc)
    audits: dict[str, PredictorAudit] = {}
    skipped: dict[str, tuple[str, ...]] = {}
    for predictor, by_model in scores.items():
        models = [m for m in accuracy if _finite(by_model.get(m))]
        missing = tuple(sorted(set(accuracy) - set(models)))
        if missing:
            skipped[predictor] = missing
        models.sort(key=lambda m: (-float(by_model[m]), m))  # type: ignore[arg-type]
        pred = np.asarray([float(by_model[m]) for m in models])  # type: ignore[arg-type]
        acc = np.asarray([accuracy[m] for m in models])
        top = tuple(models[:top_k])
        if models:
            best_top, best_all, reason = max(accuracy[m] for m in top), float(acc.max()), None
        else:
            best_top, best_all, reason = math.nan, math.nan, "no fine-tuned model has a score from this predictor"
        audits[predictor] = PredictorAudit(
            predictor=predictor,
            models=tuple(models),
            n=len(models),
            spearman=spearman_rho(pred, acc),
            kendall=kendall_tau_b(pred, acc),
            top_k=int(top_k),
            top_k_models=top,
            best_in_top_k=best_top,
            best_overall=best_all,
            regret=best_all - best_top,
            regret_reason=reason,
        )
    return RankingAudit(finetuned_accuracy=accuracy, predictors=audits, skipped=skipped)
