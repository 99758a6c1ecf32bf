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
