"""One table over every adapter and model kind: identity at init, only adapter parameters change,
finite outputs, save/load round trip; and the Naive Bayes head against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from zooens.ensemble.adapters import inject, load_adapter, make_config, save_adapter, tensor_bytes
from zooens.ensemble.adapters.base import get_adapter
from zooens.ensemble.adapters.film.head import NaiveBayesHead

CASES = [
    ("patch", "test_efficientnet", {}),
    ("patch", "test_vit", {"depthwise": True}),
    ("patch", "test_efficientnet", {"depthwise": True, "biases": True}),
    ("film", "test_resnet", {}),
    ("film", "test_vit", {}),
    ("lora", "test_efficientnet", {"rank": 2}),
    ("lora", "test_vit", {"rank": 2}),
    ("kron", "test_vit", {"n_kron": 8, "rank": 1}),
    ("kron", "test_vit", {}),
]
RES = 64


def _model(arch: str) -> nn.Module:
    torch.manual_seed(0)
    kwargs = {"img_size": RES} if "vit" in arch else {}
    return timm.create_model(arch, num_classes=0, pretrained=False, **kwargs).eval()


def _x(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, RES, RES, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method, arch, options", CASES, ids=[f"{m}-{a}" for m, a, _ in CASES])
def test_adapter_contract(method, arch, options, tmp_path):
    base = _model(arch)
    x = _x()
    with torch.no_grad():
        before = base(x)
    model = _model(arch)
    config = make_config(method, options)
    params = inject(model, method, config)
    assert params and all(p.requires_grad for p in params)
    trainable = {id(p) for p in params}
    assert all(not p.requires_grad for p in model.parameters() if id(p) not in trainable)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=0, atol=1e-5)  # identity at init

    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if id(p) not in trainable}
    adapter_before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.05)
    # adapters train with normalisation statistics frozen (eval mode), as their strategies do
    for _ in range(3):
        out = model(x)
        loss = (out - 1.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"{n} changed but is not an adapter parameter"
    assert any(not torch.equal(a, p) for a, p in zip(adapter_before, params, strict=False)), "nothing trained"
    with torch.no_grad():
        after = model(x)
    assert torch.isfinite(after).all() and not torch.allclose(after, before)

    keys = get_adapter(method).saved_keys(model, config, params)
    saved = save_adapter(model, method, config, keys, tmp_path / "adapter")
    fresh, _ = load_adapter(_model(arch), saved)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), after, rtol=0, atol=1e-6)
    from safetensors.torch import load_file

    on_disk = load_file(str(saved / "adapter.safetensors"))
    assert set(on_disk) == set(keys)
    assert tensor_bytes(on_disk) == sum(p.numel() * p.element_size() for p in params)
    n_model = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in params) < 0.5 * n_model


def test_kron_refuses_a_cnn():
    from zooens.errors import ConfigError

    with pytest.raises(ConfigError, match="Vision Transformers"):
        inject(_model("test_resnet"), "kron", make_config("kron", {}))


def _features(seed=0, n=150, d=5, classes=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    A = rng.normal(size=(classes, d, d)) * 0.6
    X = rng.normal(size=(classes, d))[y] * 1.5 + np.einsum("nij,nj->ni", A[y], rng.normal(size=(n, d)))
    return X, y


def _nb_predict(mode, mixing, X, y, Xq):
    head = NaiveBayesHead(mode)
    if mixing is not None:
        head.set_mixing(*mixing)
    Xt, yt = torch.tensor(X, dtype=torch.float64), torch.tensor(y)
    stats = head.fit_stats(Xt, yt, int(y.max()) + 1)
    head = head.double()
    return head.logits(torch.tensor(Xq, dtype=torch.float64), stats).argmax(1).numpy()


@pytest.mark.parametrize("reg", [0.0, 0.3])
def test_nb_qda_matches_scikit_learn(reg):
    from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis

    X, y = _features()
    Xq, _ = _features(seed=1)
    ref = QuadraticDiscriminantAnalysis(reg_param=reg).fit(X, y).predict(Xq)
    ours = _nb_predict("qda", (1 - reg, 0.0, reg), X, y, Xq)
    assert (ours == ref).mean() == 1.0


def test_nb_prototype_matches_nearest_centroid():
    from sklearn.neighbors import NearestCentroid

    X, y = _features(seed=4)
    Xq, _ = _features(seed=5)
    counts = np.bincount(y)
    # equal priors make the prototype head exactly the nearest centroid
    keep = np.concatenate([np.nonzero(y == c)[0][: counts.min()] for c in range(3)])
    ref = NearestCentroid().fit(X[keep], y[keep]).predict(Xq)
    ours = _nb_predict("prototype", None, X[keep], y[keep], Xq)
    assert (ours == ref).all()
