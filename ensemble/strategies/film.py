"""`film`: FiT (Shysheya et al. 2022) as a fine-tuning strategy: FiLM layers placed one per block of
a frozen backbone (`adapters.film.placement`), a Naive Bayes head (`lda` by default), episodic
training with Adam (`adapters.film.episodes`), and at test time the head configured on every
training example.

The defaults are the authors' (`run_fit.py`): Adam at a constant 0.0035, 400 iterations, tasks of
100 context examples (the run's `batch_size`). `updated_params` counts the FiLM parameters and the
head's mixing weights; the artifact holds those, and the training features and labels the head is
configured from (the head's statistics are recomputed from them on load).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from zooens.ensemble._registry import register_strategy
from zooens.ensemble.adapters import FiTClassifier, NaiveBayesHead, apply_tensors
from zooens.ensemble.adapters.film import train_episodic
from zooens.ensemble.artifacts import Artifact
from zooens.ensemble.results import RunResult, build_run_result
from zooens.ensemble.specs import RunSpec, SweepConfig
from zooens.ensemble.strategies.adapters import AdapterStrategy
from zooens.ensemble.strategies.base import base_config
from zooens.ensemble.training import predict_logits, predict_proba
from zooens.utils import resolve_device
from zooens.zoo import data_config

__all__ = ["FIT_SWEEP", "FilmStrategy"]

FIT_SWEEP = SweepConfig(learning_rates=(0.0035,), steps=(400,), batch_size=100)
"""The authors' settings: Adam lr 0.0035, 400 iterations, task size 100."""


@register_strategy("film")
class FilmStrategy(AdapterStrategy):
    """FiT: FiLM layers on a frozen backbone with an automatically configured Naive Bayes head."""

    method = "film"
    default_sweep: ClassVar[SweepConfig] = FIT_SWEEP

    def build(self, spec: RunSpec, n_classes: int, data_cfg: dict[str, Any]) -> tuple[nn.Module, list[nn.Parameter]]:
        backbone, config, params, keys = self._backbone(spec.model_name, spec.options)
        head = NaiveBayesHead(config.head)
        model = FiTClassifier(backbone, head, n_classes)
        head_params = list(head.parameters())
        head_keys = [f"head.{name}" for name, _ in head.named_parameters()]
        model._adapter = (config, ["backbone." + k for k in keys] + head_keys + ["context_features", "context_labels"])
        return model, params + head_params

    def fit(self, spec: RunSpec, ds: Any, *, cache: Any, device: str = "cpu", progress: bool = True) -> RunResult:
        """Episodic training on `ds.split("train")`, then the head on all of it; scored on val (and test)."""
        device = resolve_device(device)
        data_cfg = dict(data_config(spec.model_name, resolution=spec.resolution, preprocessing=spec.preprocessing))
        model, params = self.build(spec, len(ds.classes), data_cfg)
        options = dict(spec.options)
        config = model._adapter[0]
        train_episodic(
            model,
            params,
            ds.split("train"),
            data_cfg,
            lr=spec.lr,
            steps=spec.steps,
            task_size=spec.batch_size,
            seed=spec.seed,
            max_target_size=config.max_target_size,
            weight_decay=float(options.get("weight_decay", 0.0)),
            augmentation=spec.augmentation,
            device=device,
            progress=progress,
        )
        self.after_training(model, spec, ds, data_cfg, device)
        eval_batch = int(options.get("eval_batch_size", 64))
        val_proba = predict_proba(model, ds.split("val"), data_cfg, batch_size=eval_batch, device=device)
        test_proba = None
        if "test" in ds.splits:
            test_proba = predict_proba(model, ds.split("test"), data_cfg, batch_size=eval_batch, device=device)
        artifact = Artifact(
            config=base_config(spec, ds, data_cfg) | self.artifact_config(model, spec),
            tensors=self.artifact_tensors(model, spec),
        )
        return build_run_result(
            spec,
            ds,
            val_proba=val_proba,
            test_proba=test_proba,
            artifact=artifact,
            updated_params=sum(p.numel() for p in params),
        )

    def after_training(self, model: nn.Module, spec: RunSpec, ds: Any, data_cfg: dict[str, Any], device: str) -> None:
        """The head's context at test time: every training example's features (unaugmented), as FiT."""
        train = ds.split("train")
        raw = predict_logits(model.backbone, train, data_cfg, batch_size=64, device=device)
        features = torch.from_numpy(np.asarray(raw, dtype=np.float32))
        model.set_context(features.to(device), torch.as_tensor(train.labels, device=device))

    def load(self, artifact: Artifact, *, device: str = "cpu", backbone: nn.Module | None = None) -> nn.Module:
        backbone, config, _, _ = self._backbone(artifact.config["model"], artifact.config["adapter"]["config"])
        model = FiTClassifier(backbone, NaiveBayesHead(config.head), len(artifact.config["classes"]))
        model.set_context(artifact.tensors["context_features"], artifact.tensors["context_labels"])
        apply_tensors(model, artifact.tensors)
        model._stats = None
        return model.eval().to(device)
