"""Strategy `aft`: adaptive feature transfer (Qiu et al. 2024).

A small downstream model (the run's model, all its weights) trains with cross-entropy plus
beta times a kernel-matching loss: the batch kernel of its features (cosine similarities)
should match the batch kernel of the selected zoo models' precomputed features, each teacher
feature scaled by a learned non-negative weight (softplus), so that the transfer keeps only
what helps. Teachers' features come from the embedding cache; the weights are not needed at
prediction time, so the saved update is the student alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from zooens.cancel import check_cancelled
from zooens.ensemble._registry import register_strategy
from zooens.ensemble.adapters import AdapterConfig
from zooens.ensemble.artifacts import Artifact
from zooens.ensemble.results import RunResult, build_run_result
from zooens.ensemble.specs import RunSpec, SweepConfig
from zooens.ensemble.strategies.base import ImageClassifier, Strategy, base_config, embedding_dim
from zooens.ensemble.training import (
    augment_batch,
    bit_schedule,
    default_warmup_steps,
    eval_transform,
    iterate_batches,
    predict_proba,
)
from zooens.errors import ConfigError
from zooens.selection.embed import embed_with_cache
from zooens.zoo import create_model, data_config

__all__ = ["AftConfig", "AftStrategy", "cosine_kernel", "kernel_matching_loss"]


@dataclass
class AftConfig(AdapterConfig):
    teachers: list[str] = field(default_factory=list, metadata={"help": "Zoo models whose features are transferred."})
    beta: float = field(default=1.0, metadata={"help": "Weight of the kernel-matching loss."})

    def validate(self) -> None:
        if not self.teachers:
            raise ConfigError("aft needs teachers: options {'teachers': [model names]} (jobs use their top-K models).")
        if self.beta < 0:
            raise ConfigError(f"beta must be non-negative, got {self.beta}.")


def cosine_kernel(x: torch.Tensor) -> torch.Tensor:
    x = F.normalize(x, dim=1)
    return x @ x.T


def kernel_matching_loss(student: torch.Tensor, teacher: torch.Tensor, log_weights: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the batch kernels; teacher features scaled by softplus weights."""
    return ((cosine_kernel(student) - cosine_kernel(teacher * F.softplus(log_weights))) ** 2).mean()


@register_strategy("aft")
class AftStrategy(Strategy):
    """Options: `teachers` (zoo model names; a job fills in its selected models when none are
    given) and `beta` (weight of the kernel-matching loss, default 1)."""

    needs_images: ClassVar[bool] = True
    default_sweep: ClassVar[SweepConfig] = SweepConfig(learning_rates=(0.003, 0.01), steps=(200,), batch_size=32)
    accepted_options: ClassVar[frozenset[str]] = frozenset({"teachers", "beta"})

    def check_options(self, options: dict[str, Any]) -> None:
        """`teachers` a list of model names (may be left out: a job fills it), `beta` >= 0."""
        super().check_options(options)
        teachers = options.get("teachers", [])
        if not isinstance(teachers, list) or not all(isinstance(t, str) for t in teachers):
            raise ConfigError(f"aft teachers must be a list of zoo model names, got {teachers!r}.")
        beta = options.get("beta", 1.0)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (beta >= 0 and math.isfinite(beta)):
            raise ConfigError(f"beta must be a non-negative number, got {beta!r}; e.g. 1.0.")

    def job_options(self, options: dict[str, Any], *, selected_models: list[str]) -> dict[str, Any]:
        """The job's selected models are the teachers unless the user named some."""
        if options.get("teachers"):
            return options
        return {**options, "teachers": list(selected_models)}

    def fit(self, spec: RunSpec, ds: Any, *, cache: Any, device: str = "cpu", progress: bool = True) -> RunResult:
        config = AftConfig(teachers=list(spec.options.get("teachers", [])), beta=float(spec.options.get("beta", 1.0)))
        data_cfg = dict(data_config(spec.model_name, resolution=spec.resolution))
        train = ds.split("train")
        teacher = np.concatenate(
            [embed_with_cache(t, ds, "train", cache=cache, resolution=spec.resolution, device=device,
                              progress=progress).embeddings for t in config.teachers], axis=1)
        teacher_t = torch.from_numpy(teacher).float()
        teacher_t = (teacher_t - teacher_t.mean(0)) / teacher_t.std(0).clamp(min=1e-6)
        backbone = create_model(spec.model_name, num_classes=0)
        head = nn.Linear(embedding_dim(backbone, data_cfg), len(ds.classes))
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        model = ImageClassifier(backbone, head).to(device)
        log_w = nn.Parameter(torch.full((teacher_t.shape[1],), math.log(math.e - 1)))  # softplus -> 1
        params = list(model.parameters())
        opt = torch.optim.SGD([{"params": params}, {"params": [log_w]}], lr=spec.lr, momentum=0.9)
        gen = torch.Generator().manual_seed(spec.seed)
        torch.manual_seed(spec.seed)
        transform = eval_transform(data_cfg)
        labels = torch.as_tensor(train.labels)
        warmup = default_warmup_steps(spec.steps)
        batches = iterate_batches(len(train), spec.batch_size, gen)
        model.train()
        for step in tqdm(range(spec.steps), desc=f"aft {spec.model_name}", disable=not progress, leave=False):
            check_cancelled()
            idx = next(batches)
            images = torch.stack([transform(train.image(int(i))) for i in idx]).to(device)
            images = augment_batch(images, spec.augmentation, gen)
            for g in opt.param_groups:
                g["lr"] = bit_schedule(step, spec.steps, spec.lr, warmup)
            feats = model.backbone(images)
            loss = F.cross_entropy(model.head(feats), labels[idx].to(device))
            loss = loss + config.beta * kernel_matching_loss(feats.float(), teacher_t[idx].to(device), log_w.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not torch.isfinite(loss):
                raise ConfigError(f"aft diverged (loss {float(loss)}); lower the learning rate (now {spec.lr}).")
        model.eval()
        val_proba = predict_proba(model, ds.split("val"), data_cfg, device=device)
        test_proba = predict_proba(model, ds.split("test"), data_cfg, device=device) if "test" in ds.splits else None
        tensors = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        cfg = base_config(spec, ds, data_cfg) | {"adapter": {"method": "aft", "config": config.to_dict()}}
        artifact = Artifact(config=cfg, tensors=tensors)
        return build_run_result(spec, ds, val_proba=val_proba, test_proba=test_proba, artifact=artifact,
                                updated_params=sum(p.numel() for p in params))

    def load(self, artifact: Artifact, *, device: str = "cpu", backbone: nn.Module | None = None) -> nn.Module:
        backbone = create_model(artifact.config["model"], num_classes=0, pretrained=False)
        head = nn.Linear(artifact.tensors["head.weight"].shape[1], len(artifact.config["classes"]))
        model = ImageClassifier(backbone, head)
        model.load_state_dict(artifact.tensors, strict=True)
        return model.eval().to(device)
