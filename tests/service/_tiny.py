"""Tiny real timm models with random weights, registered as user models, for pipeline tests."""

from __future__ import annotations

from pathlib import Path

TINY_ARCHS = {
    "tiny-effnet": "test_efficientnet",
    "tiny-resnet": "test_resnet",
    "tiny-convnext": "test_convnext",
}


def register_tiny_zoo(directory: Path, names: list[str] | None = None) -> list[str]:
    from zooens.zoo.testing import register_random_model

    names = names or list(TINY_ARCHS)
    for name in names:
        register_random_model(name, TINY_ARCHS[name], directory)
    return names


TINY_FIT = dict(
    zoo="user",
    top_k=1,
    strategies="linear",
    steps=[5],
    resolution=32,
    n_train=100,
    n_val=40,
    max_test=20,
    progress=False,
)
"""The smallest recorded job a test can fit on digits (with one tiny model registered): seconds."""


def fit_tiny(**over):
    """`zooens.fit("digits", **TINY_FIT)` with `over` replacing some of its arguments."""
    import zooens

    return zooens.fit("digits", **{**TINY_FIT, **over})
