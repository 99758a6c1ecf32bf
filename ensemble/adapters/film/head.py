"""The Naive Bayes head of FiT: class-conditional Gaussians over backbone features.

Covariance of class c, by mode:
- "qda":       e1 * Sigma_c + e2 * Sigma_task + e3 * I
- "lda":       e2 * Sigma_task + e3 * I (shared by the classes)
- "prototype": no covariance; the score is minus the squared distance to the class mean.
Sigma_c is the unbiased covariance of class c; Sigma_task is the pooled within-class
covariance (class covariances weighted by class frequency, biased), the choice that makes
"lda" scikit-learn's LinearDiscriminantAnalysis. The mixing weights e = softplus(rho) are
learned, or fixed. Logits include the log class priors.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class NaiveBayesHead(nn.Module):
    def __init__(self, mode: str = "qda", *, init: tuple[float, float, float] = (0.5, 0.5, 1.0), learn: bool = True) -> None:
        super().__init__()
        self.mode = mode
        rho = torch.tensor([math.log(math.expm1(max(v, 1e-6))) for v in init])
        self.rho = nn.Parameter(rho, requires_grad=learn)

    @property
    def mixing(self) -> torch.Tensor:
        return F.softplus(self.rho)

    def set_mixing(self, e1: float, e2: float, e3: float) -> None:
        with torch.no_grad():
            self.rho.copy_(torch.tensor([math.log(math.expm1(max(v, 1e-12))) if v > 0 else -30.0 for v in (e1, e2, e3)]))

    def fit_stats(self, features: torch.Tensor, labels: torch.Tensor, n_classes: int) -> dict[str, torch.Tensor]:
        """Class means, class covariances, pooled covariance and priors of context features."""
        d = features.shape[1]
        means, covs, counts = [], [], []
        for c in range(n_classes):
            fc = features[labels == c]
            n = fc.shape[0]
            counts.append(n)
            mu = fc.mean(0) if n else features.new_zeros(d)
            means.append(mu)
            centred = fc - mu
            covs.append(centred.T @ centred / max(n - 1, 1) if n > 1 else features.new_zeros(d, d))
        counts_t = torch.tensor(counts, dtype=features.dtype, device=features.device)
        priors = counts_t / counts_t.sum()
        covs_t = torch.stack(covs)
        biased = covs_t * ((counts_t - 1).clamp(min=0) / counts_t.clamp(min=1))[:, None, None]
        pooled = (priors[:, None, None] * biased).sum(0)
        return {"means": torch.stack(means), "covs": covs_t, "pooled": pooled, "priors": priors}

    def logits(self, features: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        means, priors = stats["means"], stats["priors"]
        log_prior = torch.log(priors.clamp(min=1e-12))
        if self.mode == "prototype":
            return -torch.cdist(features, means) ** 2
        e1, e2, e3 = self.mixing
        d = features.shape[1]
        eye = torch.eye(d, dtype=features.dtype, device=features.device)
        diff = features[None, :, :] - means[:, None, :]  # (C, N, D)
        if self.mode == "lda":  # one shared covariance: one factorisation
            chol = torch.linalg.cholesky(e2 * stats["pooled"] + e3 * eye + 1e-6 * eye)
            flat = diff.reshape(-1, d).T  # (D, C*N)
            maha = (torch.linalg.solve_triangular(chol, flat, upper=False) ** 2).sum(0).reshape(len(means), -1)
            logdet = (2 * torch.log(torch.diagonal(chol)).sum()).expand(len(means))
        else:
            sigma = e1 * stats["covs"] + e2 * stats["pooled"] + e3 * eye
            chol = torch.linalg.cholesky(sigma + 1e-6 * eye)
            sol = torch.linalg.solve_triangular(chol, diff.transpose(1, 2), upper=False)  # (C, D, N)
            maha = (sol**2).sum(1)  # (C, N)
            logdet = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
        return (-0.5 * (maha + logdet[:, None]) + log_prior[:, None]).T
