"""Class probabilities for new images from a weighted ensemble of saved fine-tune runs."""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from zooens.ensemble._registry import get_strategy
from zooens.ensemble.artifacts import Artifact
from zooens.ensemble.strategies.linear import LinearProbeModule
from zooens.ensemble.training import eval_transform
from zooens.errors import ConfigError
from zooens.utils import resolve_device
from zooens.zoo import create_model

log = logging.getLogger(__name__)

__all__ = ["EnsemblePredictor"]


class EnsemblePredictor:
    """A weighted average of members' softmax outputs, each with its own preprocessing.

    Parameters
    ----------
    members : (artifact directory, weight) pairs, as saved by `Artifact.save`; weights are
        non-negative and are normalised to sum to 1.
    device : where the members run ("cpu", "cuda", "auto").

    Every artifact is loaded once, here. Members that share a frozen backbone (strategy
    `linear`) share one instance per model name, and its features are computed once per
    image batch.

    Attributes: `classes` (list[str]), `weights` (ndarray (n_members,)), `members`
    (list of (module, data config, weight)).
    """

    def __init__(self, members: Sequence[tuple[Path | str, float]], *, device: str = "cpu") -> None:
        if not members:
            raise ConfigError("An ensemble needs at least one member: give [(artifact_dir, weight), ...].")
        weights = np.asarray([float(w) for _, w in members], dtype=np.float64)
        if not np.all(np.isfinite(weights)) or weights.min() < 0 or weights.sum() <= 0:
            raise ConfigError(f"Member weights must be non-negative with a positive sum, got {weights.tolist()}.")
        self.device = resolve_device(device)
        self.weights = weights / weights.sum()
        self._backbones: dict[str, nn.Module] = {}
        self.members: list[tuple[nn.Module, dict[str, Any], float]] = []
        self.classes: list[str] | None = None
        for (path, _), weight in zip(members, self.weights):
            artifact = Artifact.load(path)
            if self.classes is None:
                self.classes = list(artifact.config["classes"])
            elif list(artifact.config["classes"]) != self.classes:
                raise ConfigError(
                    f"Member {path} was trained on classes {artifact.config['classes']}, others on {self.classes}; "
                    "ensemble only runs fitted on the same dataset."
                )
            strategy = get_strategy(artifact.config["strategy"])
            backbone = self._backbone(artifact.config["model"]) if strategy.shares_backbone else None
            module = strategy.load(artifact, device=self.device, backbone=backbone)
            self.members.append((module, strategy.data_config(artifact), float(weight)))
        log.info("Loaded an ensemble of %d members (%d shared backbones)", len(self.members), len(self._backbones))

    def _backbone(self, model_name: str) -> nn.Module:
        if model_name not in self._backbones:
            self._backbones[model_name] = create_model(model_name, num_classes=0).eval().to(self.device)
        return self._backbones[model_name]

    @torch.inference_mode()
    def predict_proba(self, images: Sequence[Image.Image], *, batch_size: int = 64) -> np.ndarray:
        """Probabilities of shape (n_images, n_classes), float32, columns in `classes` order."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
        images = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        n_classes = len(self.classes or [])
        out = np.zeros((len(images), n_classes), dtype=np.float64)
        transforms: dict[str, Any] = {}
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            inputs: dict[str, torch.Tensor] = {}
            features: dict[tuple[int, str], torch.Tensor] = {}
            for module, data_cfg, weight in self.members:
                key = json.dumps(data_cfg, sort_keys=True, default=list)
                if key not in inputs:
                    if key not in transforms:
                        transforms[key] = eval_transform(data_cfg)
                    inputs[key] = torch.stack([transforms[key](im) for im in batch]).to(self.device)
                if isinstance(module, LinearProbeModule) and module.backbone is not None:
                    fkey = (id(module.backbone), key)
                    if fkey not in features:
                        features[fkey] = module.backbone(inputs[key])
                    logits = module.head(module.norm(features[fkey].float()))
                else:
                    logits = module(inputs[key])
                proba = torch.softmax(logits.double(), dim=1).cpu().numpy()
                out[start : start + len(batch)] += weight * proba
        return out.astype(np.float32)
