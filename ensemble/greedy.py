"""Greedy ensemble selection with replacement (Caruana et al., ICML 2004).

Starting from an empty ensemble, each step adds the candidate (possibly one already in)
whose addition gives the lowest validation cross-entropy of the averaged probabilities.
The ensemble kept is the best prefix of that path, so it is never worse on validation
than the best single candidate (the first step's choice).
"""
from __future__ import annotations

import logging

import numpy as np

from zooens.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

__all__ = ["GreedyEnsembleSelector"]

_EPS = 1e-12


class GreedyEnsembleSelector:
    """Forward selection with replacement over candidates' class probabilities.

    Parameters
    ----------
    max_size : number of greedy steps (members counted with repeats), at least 1.
    tol : two losses within `tol` count as equal. Equal candidates are resolved in favour
        of one already in the ensemble, then the lowest index; among prefixes the
        shortest within `tol` of the best is kept.

    Attributes
    ----------
    selected_ : list[int], the candidate added at each step (length `max_size`, repeats allowed).
    best_size_ : int, length of the kept prefix of `selected_`.
    weights_ : ndarray of shape (n_candidates,), times chosen in the prefix / `best_size_`.
    loss_curve_ : ndarray of shape (max_size,), cross-entropy after each step.
    val_loss_ : float, cross-entropy of the kept ensemble (`loss_curve_[best_size_ - 1]`).
    classes_ : ndarray of shape (n_classes,), the class indices 0..n_classes-1.
    n_candidates_ : int.
    """

    def __init__(self, *, max_size: int = 10, tol: float = 1e-12) -> None:
        self.max_size = max_size
        self.tol = tol

    def fit(self, P: np.ndarray, y: np.ndarray) -> "GreedyEnsembleSelector":
        """Select members.

        P : array-like of shape (n_candidates, n_samples, n_classes), each candidate's
            validation probabilities; y : int labels of shape (n_samples,) in [0, n_classes).
        """
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, (int, np.integer)) or self.max_size < 1:
            raise ConfigError(f"max_size must be a positive integer, got {self.max_size!r}; e.g. 10.")
        if not (self.tol >= 0 and np.isfinite(self.tol)):
            raise ConfigError(f"tol must be a non-negative number, got {self.tol!r}; e.g. 1e-12.")
        P = self._check_P(P)
        y = np.asarray(y)
        n_candidates, n_samples, n_classes = P.shape
        if y.shape != (n_samples,):
            raise DatasetError(f"y must have shape ({n_samples},) to match P, got {y.shape}.")
        if n_samples == 0:
            raise DatasetError("The validation set is empty; the ensemble needs at least one labelled sample.")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
            raise DatasetError(f"y must hold integer labels in [0, {n_classes}), got {y.dtype} in [{y.min()}, {y.max()}].")

        true_proba = P[:, np.arange(n_samples), y].astype(np.float64)  # (n_candidates, n_samples)
        running = np.zeros(n_samples, dtype=np.float64)
        counts = np.zeros(n_candidates, dtype=np.int64)
        selected: list[int] = []
        curve: list[float] = []
        for step in range(1, int(self.max_size) + 1):
            losses = -np.mean(np.log(np.clip((running + true_proba) / step, _EPS, None)), axis=1)
            near = np.flatnonzero(losses <= losses.min() + self.tol)
            chosen_near = near[counts[near] > 0]
            pick = int(chosen_near[0] if len(chosen_near) else near[0])
            running += true_proba[pick]
            counts[pick] += 1
            selected.append(pick)
            curve.append(float(losses[pick]))

        loss_curve = np.asarray(curve)
        best = int(np.flatnonzero(loss_curve <= loss_curve.min() + self.tol)[0]) + 1
        kept = np.bincount(np.asarray(selected[:best]), minlength=n_candidates)
        self.selected_ = selected
        self.best_size_ = best
        self.weights_ = kept / best
        self.loss_curve_ = loss_curve
        self.val_loss_ = float(loss_curve[best - 1])
        self.classes_ = np.arange(n_classes)
        self.n_candidates_ = n_candidates
        log.info("Greedy ensemble: %d members (%d distinct) of %d candidates, val CE %.4f (best single %.4f)",
                 best, int(np.count_nonzero(kept)), n_candidates, self.val_loss_, loss_curve[0])
        return self

    def predict_proba(self, P: np.ndarray) -> np.ndarray:
        """Weighted average of the candidates' probabilities.

        P : array-like of shape (n_candidates, n_samples, n_classes), candidates in the
        order used in `fit`. Returns float32 of shape (n_samples, n_classes).
        """
        if not hasattr(self, "weights_"):
            raise ConfigError("This GreedyEnsembleSelector is not fitted yet; call fit(P, y) first.")
        P = self._check_P(P)
        if P.shape[0] != self.n_candidates_ or P.shape[2] != len(self.classes_):
            raise DatasetError(
                f"P must have shape ({self.n_candidates_}, n_samples, {len(self.classes_)}) as in fit, got {P.shape}."
            )
        return np.tensordot(self.weights_, P.astype(np.float64), axes=1).astype(np.float32)

    @staticmethod
    def _check_P(P: np.ndarray) -> np.ndarray:
        P = np.asarray(P)
        if P.ndim != 3 or P.shape[0] == 0 or P.shape[2] == 0:
            raise DatasetError(
                f"P must have shape (n_candidates, n_samples, n_classes) with at least one candidate, got {P.shape}; "
                "stack each run's val_proba with np.stack."
            )
        if not np.all(np.isfinite(P)) or P.min() < 0:
            raise DatasetError("P must hold finite, non-negative probabilities.")
        return P
