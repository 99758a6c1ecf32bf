"""Class probabilities for new images from a weighted ensemble of saved fine-tune runs."""

from __future__ import annotations

import html
import json
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from zooens.ensemble._registry import get_strategy
from zooens.ensemble.artifacts import Artifact
from zooens.ensemble.bundle import Bundle, read_bundle
from zooens.ensemble.calibration import apply_temperature, calibration_metrics
from zooens.ensemble.strategies.concat import ConcatProbeModule
from zooens.ensemble.strategies.linear import LinearProbeModule
from zooens.ensemble.training import eval_transform
from zooens.errors import ConfigError, MissingWeightsError, UnknownModelError
from zooens.selection.images import image_from_array, open_image, to_rgb
from zooens.utils import resolve_device
from zooens.zoo import create_model, provided_models, weights_sha256

log = logging.getLogger(__name__)

__all__ = ["EnsemblePredictor", "ImageInputs", "as_images", "encode_labels", "evaluate"]

ImageInputs = Sequence[Image.Image | str | os.PathLike | np.ndarray] | np.ndarray
"""What predict accepts: PIL images, image paths, (H, W[, 3]) uint8 arrays, or one (N, H, W[, 3]) array."""


def as_images(images: ImageInputs) -> list[Image.Image]:
    """PIL images of `images` (see `ImageInputs`); paths are decoded with `open_image`."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        images = [images]
    elif isinstance(images, np.ndarray):
        if images.ndim == 4 or (images.ndim == 3 and images.shape[-1] not in (3, 4)):
            images = list(images)  # a stack of (H, W, C) or (H, W) images
        elif images.ndim in (2, 3):
            images = [images]
        else:
            raise ConfigError(
                f"An image array must have shape (H, W), (H, W, 3) or a batch of those, got {images.shape}."
            )
    out = []
    for item in images:
        if isinstance(item, Image.Image):
            out.append(item)
        elif isinstance(item, np.ndarray):
            try:
                out.append(image_from_array(item))
            except ValueError as exc:
                raise ConfigError(f"Cannot read an image from this array: {exc}.") from None
        elif isinstance(item, (str, os.PathLike)):
            out.append(open_image(item))
        else:
            raise ConfigError(
                f"Cannot read an image from a {type(item).__name__}; give a path, a PIL image or a uint8 array."
            )
    return out


class _BatchViews:
    """One image batch as each preprocessing sees it, and each frozen backbone's embeddings of it, each
    computed once however many members read it (`linear` runs and `concat` probes of one model)."""

    def __init__(self, batch: list[Image.Image], transforms: dict[str, Any], device: Any) -> None:
        self.batch, self.transforms, self.device = batch, transforms, device
        self._inputs: dict[str, torch.Tensor] = {}
        self._features: dict[tuple[int, str], torch.Tensor] = {}

    @staticmethod
    def _key(cfg: dict[str, Any]) -> str:
        return json.dumps(cfg, sort_keys=True, default=list)

    def inputs(self, cfg: dict[str, Any]) -> torch.Tensor:
        key = self._key(cfg)
        if key not in self._inputs:
            if key not in self.transforms:
                self.transforms[key] = eval_transform(cfg)
            self._inputs[key] = torch.stack([self.transforms[key](im) for im in self.batch]).to(self.device)
        return self._inputs[key]

    def features(self, backbone: nn.Module, cfg: dict[str, Any]) -> torch.Tensor:
        fkey = (id(backbone), self._key(cfg))
        if fkey not in self._features:
            self._features[fkey] = backbone(self.inputs(cfg)).float()
        return self._features[fkey]


class EnsemblePredictor:
    """A weighted average of members' softmax outputs, each with its own preprocessing.

    Parameters
    ----------
    members : (artifact directory or `Artifact`, weight) pairs, as saved by `Artifact.save`;
        weights are non-negative and are normalised to sum to 1.
    device : where the members run ("cpu", "cuda", "auto").
    backbones : embedders by model name for the members whose strategy shares its backbone
        (`linear`); by default `zoo.create_model` builds them (a `.zooens` file brings its own,
        see `from_bundle`).
    temperature : the ensemble's temperature T (`ensemble.calibration`, fitted by the job on its selection rows):
        probabilities are softmax(log p / T) of the members' average p; 1.0 leaves them as averaged.

    Every artifact is loaded once, here. Members that share a frozen backbone (strategy
    `linear`) share one instance per model name, and its features are computed once per
    image batch.

    Attributes: `classes` (list[str]), `weights` (ndarray (n_members,)), `members`
    (list of (module, data config, weight)), `member_info` (list of (model, strategy, weight)),
    `temperature` (float), `metadata` (what a `.zooens` file says of its job: val_acc, test_acc, ...).
    """

    def __init__(
        self,
        members: Sequence[tuple[Path | str | Artifact, float]],
        *,
        device: str = "cpu",
        backbones: Mapping[str, nn.Module] | None = None,
        temperature: float | None = 1.0,
    ) -> None:
        temperature = 1.0 if temperature is None else temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < np.inf:
            raise ConfigError(f"temperature must be a finite positive number, got {temperature!r}.")
        self.temperature = float(temperature)
        if not members:
            raise ConfigError("An ensemble needs at least one member: give [(artifact_dir, weight), ...].")
        weights = np.asarray([float(w) for _, w in members], dtype=np.float64)
        if not np.all(np.isfinite(weights)) or weights.min() < 0 or weights.sum() <= 0:
            raise ConfigError(f"Member weights must be non-negative with a positive sum, got {weights.tolist()}.")
        self.device = resolve_device(device)
        self.weights = weights / weights.sum()
        self._backbones: dict[str, nn.Module] = {
            name: module.eval().to(self.device) for name, module in (backbones or {}).items()
        }
        self.members: list[tuple[nn.Module, dict[str, Any], float]] = []
        self.member_info: list[tuple[str, str, float]] = []  # (model, strategy, weight) of each member
        self.metadata: dict[str, Any] = {}  # what the file says of the job (val_acc, test_acc, ...), if any
        self.classes: list[str] | None = None
        for (path, _), weight in zip(members, self.weights, strict=False):
            artifact = path if isinstance(path, Artifact) else Artifact.load(path)
            if self.classes is None:
                self.classes = list(artifact.config["classes"])
            elif list(artifact.config["classes"]) != self.classes:
                raise ConfigError(
                    f"Member {path} was trained on classes {artifact.config['classes']}, others on {self.classes}; "
                    "ensemble only runs fitted on the same dataset."
                )
            strategy = get_strategy(artifact.config["strategy"])
            backbone: nn.Module | None = None
            if strategy.shares_backbone:
                models = artifact.models
                backbone = (
                    self._backbone(models[0]) if len(models) == 1 else nn.ModuleList(self._backbone(m) for m in models)
                )
            try:
                module = strategy.load(artifact, device=self.device, backbone=backbone)
            except (UnknownModelError, MissingWeightsError) as exc:
                raise ConfigError(
                    f"Member {artifact.config['model']!r} (strategy {strategy.name!r}) rebuilds its network from the "
                    f"zoo, which cannot provide it here: {exc}"
                ) from None
            self.members.append((module, strategy.data_config(artifact), float(weight)))
            self.member_info.append((str(artifact.config["model"]), strategy.name, float(weight)))
        log.info("Loaded an ensemble of %d members (%d shared backbones)", len(self.members), len(self._backbones))

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu") -> EnsemblePredictor:
        """The predictor of a `.zooens` file, verified (`ensemble.bundle.read_bundle`) and rebuilt."""
        return cls.from_bundle(read_bundle(path), device=device)

    @classmethod
    def from_bundle(cls, bundle: Bundle, *, device: str = "cpu") -> EnsemblePredictor:
        """The predictor of a `.zooens` file (`ensemble.bundle.read_bundle`): every member rebuilds its
        network from the file's own base weights and architectures (`zoo.provided_models`), so it needs
        no zoo; with base weights stored as references, the zoo's are used after their sha256 is checked
        against the file's."""
        backbones = {}
        for name, base in bundle.base_models.items():
            if base.state is not None:
                backbones[name] = base.build()
                continue
            local = weights_sha256(name)
            if local != base.weights_sha256:
                raise ConfigError(
                    f"The zoo's weights of {name!r} have sha256 {local[:12]}, the file was written with "
                    f"{base.weights_sha256[:12]}; add the right weights or export with them embedded."
                )
            backbones[name] = create_model(name, num_classes=0)
        provided = {name: (base.arch, base.state) for name, base in bundle.base_models.items()}
        with provided_models(provided):
            predictor = cls(bundle.members, device=device, backbones=backbones, temperature=bundle.temperature)
        if predictor.classes != bundle.classes:
            raise ConfigError("The members' classes differ from the file's class list; the file is inconsistent.")
        predictor.metadata = dict(bundle.metadata or {})
        return predictor

    def _backbone(self, model_name: str) -> nn.Module:
        if model_name not in self._backbones:
            self._backbones[model_name] = create_model(model_name, num_classes=0).eval().to(self.device)
        return self._backbones[model_name]

    def predict(self, images: ImageInputs, *, batch_size: int = 64) -> list[str]:
        """The most probable class name of each image (inputs as `predict_proba`)."""
        proba = self.predict_proba(images, batch_size=batch_size)
        return [self.classes[i] for i in proba.argmax(axis=1)] if len(proba) else []

    @torch.inference_mode()
    def predict_proba(self, images: ImageInputs, *, batch_size: int = 64, calibrated: bool = True) -> np.ndarray:
        """Probabilities of shape (n_images, n_classes), float32, columns in `classes` order.

        `images`: PIL images, image files (paths, decoded by `selection.images.open_image`: EXIF
        orientation, 16-bit and transparency handled), uint8 arrays of shape (H, W) or (H, W, 3), or a
        uint8 array of shape (N, H, W) or (N, H, W, 3). With `calibrated` (the default) the ensemble's
        temperature is applied to the members' weighted average; without, the average itself.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
        images = [to_rgb(im) for im in as_images(images)]
        n_classes = len(self.classes or [])
        out = np.zeros((len(images), n_classes), dtype=np.float64)
        transforms: dict[str, Any] = {}
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            views = _BatchViews(batch, transforms, self.device)
            for module, data_cfg, weight in self.members:
                if isinstance(module, LinearProbeModule) and module.backbone is not None:
                    logits = module.head(module.norm(views.features(module.backbone, data_cfg)))
                elif isinstance(module, ConcatProbeModule):
                    parts = zip(module.backbones, module.data_configs, strict=True)
                    logits = module.logits([views.features(b, cfg) for b, cfg in parts])
                else:
                    logits = module(views.inputs(data_cfg))
                proba = torch.softmax(logits.double(), dim=1).cpu().numpy()
                out[start : start + len(batch)] += weight * proba
        if calibrated and self.temperature != 1.0 and len(out):
            out = apply_temperature(out, self.temperature)
        return out.astype(np.float32)

    def score(self, images: ImageInputs, labels: Any, *, batch_size: int = 64) -> dict[str, float]:
        """How the ensemble does on labelled images: `evaluate` of its calibrated probabilities (accuracy,
        NLL, Brier score, ECE over 15 bins, and n). `labels`: class names or class indices, one per image."""
        y = encode_labels(labels, self.classes or [])
        proba = self.predict_proba(images, batch_size=batch_size)
        if len(proba) != len(y):
            raise ConfigError(f"{len(proba)} images but {len(y)} labels; give one label per image.")
        return evaluate(proba, y)

    def __repr__(self) -> str:
        strategies = Counter(strategy for _, strategy, _ in self.member_info)
        kinds = ", ".join(f"{name}: {n}" for name, n in sorted(strategies.items()))
        return (
            f"EnsemblePredictor(members={len(self.members)} ({kinds}), classes={len(self.classes or [])}, "
            f"temperature={self.temperature:.3g}, device={str(self.device)!r})"
        )

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(model)}</td><td>{html.escape(strategy)}</td><td>{weight:.3f}</td></tr>"
            for model, strategy, weight in self.member_info
        )
        facts = {k: self.metadata.get(k) for k in ("val_acc", "test_acc", "test_nll", "test_ece")}
        shown = ", ".join(f"{k} {v:.3f}" for k, v in facts.items() if isinstance(v, (int, float)))
        classes = ", ".join(html.escape(c) for c in (self.classes or [])[:20])
        more = f" and {len(self.classes or []) - 20} more" if len(self.classes or []) > 20 else ""
        return (
            f"<div class='zooens-predictor'><strong>zooens ensemble</strong>: {len(self.members)} members, "
            f"{len(self.classes or [])} classes ({classes}{more}), temperature {self.temperature:.3g}"
            f"{'; ' + shown if shown else ''}"
            "<table><thead><tr><th>model</th><th>strategy</th><th>weight</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>"
        )


def encode_labels(labels: Any, classes: Sequence[str]) -> np.ndarray:
    """Class indices of `labels` (a sequence, array or pandas Series): class names from `classes`, or
    integer indices below `len(classes)`. ConfigError naming the first unknown label otherwise."""
    values = list(labels.tolist() if hasattr(labels, "tolist") else labels)
    index = {str(c): i for i, c in enumerate(classes)}
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        if isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"Label {i} is {value!r}; give class names ({', '.join(classes[:5])}, ...) or indices.")
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if not 0 <= int(value) < len(classes):
                raise ConfigError(f"Label {i} is class index {value}, but there are {len(classes)} classes.")
            out[i] = int(value)
        elif str(value) in index:
            out[i] = index[str(value)]
        else:
            raise ConfigError(
                f"Label {i} is {value!r}, which is not one of the classes ({', '.join(classes[:10])}"
                f"{', ...' if len(classes) > 10 else ''}); give class names or indices."
            )
    return out


def evaluate(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """accuracy, nll, brier and ece (15 equal-width bins: `ensemble.calibration`) of probabilities `proba`
    against class indices `y`, and n."""
    if len(y) == 0:
        raise ConfigError("Nothing to score: give at least one labelled image.")
    metrics = calibration_metrics(proba, y).to_dict()
    return {"n": int(len(y)), "accuracy": float(np.mean(np.asarray(proba).argmax(1) == y)), **metrics}
