"""The Naive Bayes head of FiT (Shysheya et al. 2022, Sec. 3, Eq. 2): class-conditional Gaussians
over backbone features, configured in closed form from a context set.

For context features {x_i} with labels {y_i} (N examples, C classes, D dimensions):

- class means ``mu_c = mean{x_i : y_i = c}``;
- ``Sigma_class_c``: the unbiased covariance of class c's features (zero for a class with one
  example, where the authors' code falls back on a rank-one matrix built across feature dimensions,
  which estimates nothing about the class: our choice, stated here);
- ``Sigma_task``: the unbiased covariance of *all* N context features around their overall mean
  (FiT's task covariance, ``torch.cov`` of the whole context set in the authors' code) - not the
  pooled within-class covariance, which it contains plus the spread of the class means;
- covariance per mode: ``qda``: ``Sigma_c = e1 Sigma_class_c + e2 Sigma_task + e3 I``;
  ``lda`` (FiT's default): ``Sigma = e2 Sigma_task + e3 I``, shared; ``prototype``: no covariance,
  the score is minus the squared Euclidean distance to the class mean (ProtoNets, no prior).

The mixing weights are learned scalars activated by a ReLU, ``e = relu(w)``, initialised as in the
authors' ``naive_bayes.py``: qda ``w = (0.5, 0.5, 1.0)``, lda ``w = (1.0, 1.0)`` for (e2, e3).
The logit of class c is ``log pi_c + log N(x; mu_c, Sigma_c)`` with ``pi_c = N_c / N`` (Bayes' rule of
the paper's generative classifier; the authors' code scores ``log N`` alone, i.e. uniform priors,
which agree when the context is balanced). A jitter of ``1e-6 I`` keeps the Cholesky factor defined
should training drive e3 to zero (the ReLU allows it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zooens.errors import ConfigError

__all__ = ["HEAD_MODES", "INITIAL_WEIGHTS", "NaiveBayesHead"]

HEAD_MODES = ("lda", "qda", "prototype")
INITIAL_WEIGHTS: dict[str, tuple[float, ...]] = {"qda": (0.5, 0.5, 1.0), "lda": (1.0, 1.0)}
"""The authors' initial raw weights: qda (class, task, identity), lda (task, identity)."""

JITTER = 1e-6


class NaiveBayesHead(nn.Module):
    """FiT's Gaussian head; `fit_stats` configures it from context features, `logits` scores targets.

    Parameters
    ----------
    mode : "lda" (default, as FiT), "qda" or "prototype".
    learn : whether the mixing weights train (FiT learns them).
    """

    def __init__(self, mode: str = "lda", *, learn: bool = True) -> None:
        super().__init__()
        if mode not in HEAD_MODES:
            raise ConfigError(
                f"The FiT head must be one of {', '.join(HEAD_MODES)}, got {mode!r}; FiT's default is 'lda'."
            )
        self.mode = mode
        if mode in INITIAL_WEIGHTS:
            self.cov_weights = nn.Parameter(torch.tensor(INITIAL_WEIGHTS[mode]), requires_grad=learn)

    @property
    def mixing(self) -> torch.Tensor:
        """(e1, e2, e3) after the ReLU; e1 is 0 for lda, all are 0 for prototype."""
        if self.mode == "prototype":
            return torch.zeros(3)
        e = torch.relu(self.cov_weights)
        return e if self.mode == "qda" else torch.cat([e.new_zeros(1), e])

    def set_mixing(self, e1: float, e2: float, e3: float) -> None:
        """Fix the activated weights (non-negative); lda has no class-covariance weight (e1 must be 0)."""
        if min(e1, e2, e3) < 0:
            raise ConfigError(f"Mixing weights are non-negative (they pass a ReLU), got {(e1, e2, e3)}.")
        if self.mode == "prototype":
            raise ConfigError("The prototype head has no covariance to mix; use 'lda' or 'qda'.")
        if self.mode == "lda" and e1 != 0:
            raise ConfigError(f"The lda head has no class covariance; e1 must be 0, got {e1}. Use 'qda' to mix it.")
        values = (e1, e2, e3) if self.mode == "qda" else (e2, e3)
        with torch.no_grad():
            self.cov_weights.copy_(torch.tensor(values, dtype=self.cov_weights.dtype))

    def fit_stats(self, features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> dict[str, torch.Tensor]:
        """Class means, class covariances (qda), task covariance and priors of context features.

        features : (N, D); labels : (N,) in [0, n_classes). Differentiable in `features`.
        """
        features = features.float()
        n, d = features.shape
        onehot = torch.nn.functional.one_hot(labels.long(), n_classes).to(features.dtype)  # (N, C)
        counts = onehot.sum(0)
        means = (onehot.T @ features) / counts.clamp(min=1)[:, None]
        stats = {"means": means, "priors": counts / max(n, 1)}
        if self.mode == "prototype":
            return stats
        centred = features - features.mean(0, keepdim=True)
        stats["task_cov"] = centred.T @ centred / max(n - 1, 1)
        if self.mode == "qda":
            covs = []
            for c in range(n_classes):
                fc = features[labels == c]
                if len(fc) > 1:
                    dc = fc - fc.mean(0, keepdim=True)
                    covs.append(dc.T @ dc / (len(fc) - 1))
                else:
                    covs.append(features.new_zeros(d, d))
            stats["class_covs"] = torch.stack(covs)
        return stats

    def logits(self, features: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        """log pi_c + log N(x; mu_c, Sigma_c) for each target: (M, D) -> (M, C)."""
        features = features.float()
        means = stats["means"]
        if self.mode == "prototype":
            return -(torch.cdist(features, means) ** 2)  # ProtoNets, as the authors' code: no prior
        log_prior = torch.log(stats["priors"].clamp(min=1e-12))
        d = features.shape[1]
        e1, e2, e3 = self.mixing.to(features.device)
        eye = torch.eye(d, dtype=features.dtype, device=features.device)
        diff = features[None, :, :] - means[:, None, :]  # (C, M, D)
        const = d * math.log(2 * math.pi)
        if self.mode == "lda":
            chol = torch.linalg.cholesky(e2 * stats["task_cov"] + (e3 + JITTER) * eye)
            flat = diff.reshape(-1, d).T  # (D, C*M)
            maha = (torch.linalg.solve_triangular(chol, flat, upper=False) ** 2).sum(0).reshape(len(means), -1)
            logdet = (2 * torch.log(torch.diagonal(chol)).sum()).expand(len(means))
        else:
            sigma = e1 * stats["class_covs"] + e2 * stats["task_cov"] + (e3 + JITTER) * eye
            chol = torch.linalg.cholesky(sigma)
            sol = torch.linalg.solve_triangular(chol, diff.transpose(1, 2), upper=False)  # (C, D, M)
            maha = (sol**2).sum(1)
            logdet = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
        return (log_prior[:, None] - 0.5 * (maha + logdet[:, None] + const)).T
