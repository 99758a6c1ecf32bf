"""FiT's Naive Bayes head against a Gaussian classifier written here from the paper's equations
(Shysheya et al. 2022, Eq. 2 and Sec. 3): class means, Sigma_c = e1 Sigma_class + e2 Sigma_task + e3 I
with Sigma_task the covariance of *all* context features, and Bayes' rule with the class frequencies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zooens.ensemble.adapters.film import NaiveBayesHead
from zooens.errors import ConfigError


def _features(seed: int, n: int = 90, d: int = 6, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    y[:classes] = np.arange(classes)  # every class present
    mix = rng.normal(size=(classes, d, d)) * 0.5
    x = rng.normal(size=(classes, d))[y] * 2.0 + np.einsum("nij,nj->ni", mix[y], rng.normal(size=(n, d)))
    return x, y


def _reference_log_posterior(x, y, xq, mode, e1, e2, e3):
    """log p(y = c | x*) of the Gaussian classifier with FiT's covariance, in numpy."""
    classes = np.unique(y)
    d = x.shape[1]
    task = np.cov(x, rowvar=False, ddof=1)  # all context features around their overall mean
    scores = []
    for c in classes:
        xc = x[y == c]
        mu = xc.mean(0)
        cls = np.cov(xc, rowvar=False, ddof=1) if len(xc) > 1 else np.zeros((d, d))
        sigma = (e1 * cls if mode == "qda" else 0) + e2 * task + e3 * np.eye(d)
        diff = xq - mu
        maha = np.einsum("nd,nd->n", diff, np.linalg.solve(sigma, diff.T).T)
        _, logdet = np.linalg.slogdet(sigma)
        log_prior = np.log(len(xc) / len(x))
        scores.append(log_prior - 0.5 * (maha + logdet + d * np.log(2 * np.pi)))
    scores = np.stack(scores, 1)
    return scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)


def _ours(x, y, xq, mode, mixing):
    head = NaiveBayesHead(mode)
    if mixing is not None:
        head.set_mixing(*mixing)
    stats = head.fit_stats(torch.tensor(x, dtype=torch.float32), torch.tensor(y), int(y.max()) + 1)
    logits = head.logits(torch.tensor(xq, dtype=torch.float32), stats)
    return torch.log_softmax(logits.double(), 1).detach().numpy(), logits.detach().numpy()


@pytest.mark.parametrize(
    "mode, mixing",
    [
        ("lda", (0.0, 1.0, 1.0)),
        ("lda", (0.0, 0.7, 0.2)),
        ("qda", (0.5, 0.5, 1.0)),
        ("qda", (0.9, 0.3, 0.05)),
    ],
)
def test_head_with_fixed_mixing_equals_the_gaussian_classifier(mode, mixing):
    x, y = _features(0)
    xq, _ = _features(1, n=40)
    ref = _reference_log_posterior(x, y, xq, mode, *mixing)
    ours, _ = _ours(x, y, xq, mode, mixing)
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-4)


def test_logits_are_the_full_log_joint():
    """Not only the posterior: each logit is log pi_c + log N(x; mu_c, Sigma_c)."""
    from scipy.stats import multivariate_normal

    x, y = _features(2)
    xq, _ = _features(3, n=5)
    _, logits = _ours(x, y, xq, "lda", (0.0, 0.8, 0.5))
    sigma = 0.8 * np.cov(x, rowvar=False) + 0.5 * np.eye(x.shape[1])
    for c in range(3):
        expected = np.log(np.mean(y == c)) + multivariate_normal(x[y == c].mean(0), sigma).logpdf(xq)
        np.testing.assert_allclose(logits[:, c], expected, rtol=1e-4, atol=1e-3)


def test_task_covariance_is_of_all_context_features_not_the_pooled_within_class():
    x, y = _features(4)
    stats = NaiveBayesHead("lda").fit_stats(torch.tensor(x, dtype=torch.float32), torch.tensor(y), 3)
    np.testing.assert_allclose(stats["task_cov"].numpy(), np.cov(x, rowvar=False), rtol=1e-4, atol=1e-4)
    pooled = sum(np.cov(x[y == c], rowvar=False, bias=True) * np.mean(y == c) for c in range(3))
    assert np.abs(stats["task_cov"].numpy() - pooled).max() > 1.0  # the class means' spread is in it


def test_mixing_weights_start_and_activate_as_fits_code():
    """Raw weights qda (0.5, 0.5, 1.0), lda (1.0, 1.0), passed through a ReLU; lda is FiT's default."""
    assert NaiveBayesHead().mode == "lda"
    torch.testing.assert_close(NaiveBayesHead("qda").mixing, torch.tensor([0.5, 0.5, 1.0]))
    torch.testing.assert_close(NaiveBayesHead("lda").mixing, torch.tensor([0.0, 1.0, 1.0]))
    head = NaiveBayesHead("qda")
    with torch.no_grad():
        head.cov_weights.copy_(torch.tensor([-0.3, 0.2, 1.5]))
    torch.testing.assert_close(head.mixing, torch.tensor([0.0, 0.2, 1.5]))
    assert [n for n, _ in NaiveBayesHead("lda").named_parameters()] == ["cov_weights"]
    assert list(NaiveBayesHead("prototype").parameters()) == []


def test_mixing_weights_get_gradients():
    x, y = _features(5)
    head = NaiveBayesHead("qda")
    feats = torch.tensor(x, dtype=torch.float32)
    stats = head.fit_stats(feats[:60], torch.tensor(y[:60]), 3)
    loss = torch.nn.functional.cross_entropy(head.logits(feats[60:], stats), torch.tensor(y[60:]))
    loss.backward()
    assert (head.cov_weights.grad.abs() > 0).all()


def test_prototype_head_is_minus_the_squared_distance():
    x, y = _features(6)
    xq, _ = _features(7, n=4)
    _, logits = _ours(x, y, xq, "prototype", None)
    means = np.stack([x[y == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(logits, -((xq[:, None] - means[None]) ** 2).sum(-1), rtol=1e-4, atol=1e-3)


def test_bad_head_settings_are_refused():
    with pytest.raises(ConfigError, match="'lda'"):
        NaiveBayesHead("svm")
    with pytest.raises(ConfigError, match="e1 must be 0"):
        NaiveBayesHead("lda").set_mixing(0.5, 1.0, 1.0)
    with pytest.raises(ConfigError, match="non-negative"):
        NaiveBayesHead("qda").set_mixing(-1.0, 1.0, 1.0)
