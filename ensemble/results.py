"""The outcome of one fine-tune run and the metrics computed from its probabilities."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from zooens.ensemble.artifacts import Artifact
from zooens.ensemble.specs import RunSpec

__all__ = ["RunResult", "build_run_result", "mean_cross_entropy"]


@dataclass
class RunResult:
    """The outcome of one run. Probabilities are float32 with columns in `ds.classes` order.

    The update's size in bytes is `artifact.nbytes` (the artifact holds only what the run changed);
    the run's record (`zooens.pipeline.records.RunRecord`) stores it."""

    model_name: str
    strategy: str
    hparams: dict[str, Any]
    val_ce: float
    val_acc: float
    test_acc: float | None
    seconds: float
    updated_params: int
    val_proba: np.ndarray
    test_proba: np.ndarray | None
    artifact: Artifact
    train_proba: np.ndarray | None = None
    """Held-out probabilities of the training split's rows, for a run that has them (a cross-fitted refit probe,
    `LinearStrategy`): each row scored by a model that did not train on it. None for the others."""

    def summary(self) -> dict[str, Any]:
        """The scalar facts, JSON-able (no probabilities, no tensors)."""
        blank = replace(self, val_proba=np.zeros(0), test_proba=None, train_proba=None, artifact=Artifact({}, {}))
        out = asdict(blank)
        for key in ("val_proba", "test_proba", "train_proba", "artifact"):
            out.pop(key)
        return out


def mean_cross_entropy(proba: np.ndarray, y: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-probability of the true classes; `proba` (n, C), `y` (n,) ints."""
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    picked = proba[np.arange(len(y)), y]
    return 0.0 - float(np.mean(np.log(np.clip(picked, eps, None))))


def build_run_result(
    spec: RunSpec,
    ds: Any,
    *,
    val_proba: np.ndarray,
    test_proba: np.ndarray | None,
    artifact: Artifact,
    updated_params: int,
    seconds: float = 0.0,
    train_proba: np.ndarray | None = None,
) -> RunResult:
    """A RunResult with the metrics computed from the probabilities against `ds`'s labels."""
    y_val = np.asarray(ds.split("val").labels)
    val_proba = np.asarray(val_proba, dtype=np.float32)
    test_acc = None
    if test_proba is not None:
        test_proba = np.asarray(test_proba, dtype=np.float32)
        y_test = np.asarray(ds.split("test").labels)
        test_acc = float(np.mean(test_proba.argmax(1) == y_test)) if len(y_test) else None
    return RunResult(
        model_name=spec.model_name,
        strategy=spec.strategy,
        hparams=spec.hparams,
        val_ce=mean_cross_entropy(val_proba, y_val),
        val_acc=float(np.mean(val_proba.argmax(1) == y_val)),
        test_acc=test_acc,
        seconds=float(seconds),
        updated_params=int(updated_params),
        val_proba=val_proba,
        test_proba=test_proba,
        artifact=artifact,
        train_proba=None if train_proba is None else np.asarray(train_proba, dtype=np.float32),
    )
