"""Strategy `aft`: adaptive feature transfer (Qiu, Han, Maddix, Zhang, Wang and Wilson, ICML 2024,
"Transferring Knowledge from Large Foundation Models to Small Downstream Models", arXiv 2406.07337).

A small downstream model, the *student* (all its weights train), learns the task with
cross-entropy plus beta times the paper's kernel regulariser (the kernel formulation of AFT in the
paper's method section, as the authors implement it: `KernelPrior` with its default diagonal
weights, `prior.py` of github.com/amazon-science/adaptive-feature-transfer):

    L(theta, s) = CE(theta) + beta * R(theta, s)
    R(theta, s) = || K(phi_theta(X_B)) - K(sigma(s) * psi(X_B)) ||_F / B

on each mini-batch X_B of B images, where
  * phi_theta(x) (D_s values) are the student's pooled features and psi(x) (D_t values) the
    frozen pre-trained features of the top-K zoo models (the *teachers*), concatenated;
  * sigma(s), the logistic sigmoid of the learned vector s (D_t values, zero at start, so every
    weight starts at 1/2), weights each pre-trained feature: the transfer keeps only what helps;
  * K(Z) = Z_bar Z_bar^T is the linear kernel of the features centred over the batch
    (Z - mean_B Z) and then scaled to unit length per example (each row divided by its norm);
  * ||.||_F / B is the root of the mean squared kernel difference (the authors compute
    `sqrt(mean((K_s - K_t)**2) + 1e-8)`; the 1e-8 keeps the gradient finite at R = 0).
The kernel of centred, unit-length features is unchanged when a student's features are the
teacher's up to an orthogonal map and a positive scale, so the student is asked to carry the
(weighted) information of the teachers' features, not their coordinates.

Authors' settings kept as defaults: Adam without weight decay for the student and a separate
learning rate for s (`scale_lr`, 1e-2, their `prior_lr`), the learning rate cosine-annealed to
zero over the run, beta = 10 (their README's AFT command, `--prec=10`), no augmentation
(their `run.py` refuses augmentation for AFT). The teachers' features are precomputed once
(unflipped ones from the embedding cache).

Augmentation (`RunSpec.augmentation`): `none` as the authors; `flip` is honoured exactly:
the teachers' features are computed for the original and for the mirrored image, and each
example of a batch gets the features of the view the student sees. `crop` and `crop_flip`
are refused (a ConfigError): a random crop would need the teachers' forward passes on every
crop, which is what precomputing the features avoids, and the authors train AFT without it.

Which model is the student (the rule; `student` and `teachers` options override it):
  * `job_options` fills `teachers` with the job's top-K models; given the job's zoo
    (`zoo_models=`), it fills `student` with the model of the zoo that has the fewest
    parameters among those that are not teachers, so the student is smaller and never its
    own teacher (the paper transfers from large models into a small one).
  * Without a `student` option the run's model is the student, and it is removed from its
    teachers: a model is never regularised towards its own features. With no teacher left
    the run is refused, saying how to give one.

Deviations, and why:
  * The cosine schedule is per step (the authors anneal per epoch); with VTAB-1k-sized sets an
    epoch is a handful of steps, so the two differ little, and a step count is what a run gives.
  * The student starts from its zoo weights, as the authors' README command does
    (`--init_model` = the downstream model), but with a zero-initialised linear head (theirs is
    timm's random head): a zero head leaves the first steps to the regulariser and the
    cross-entropy gradient of a uniform prediction.
  * The teacher features carry no per-teacher normalisation (the authors concatenate them raw);
    the centring and unit-length scaling of the concatenation inside the kernel is all there is.
  * `updated_params` counts the student's parameters; s is discarded after training (it is not
    needed to predict), so the artifact holds the student only and `load` rebuilds it alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn
from tqdm.auto import tqdm

from zooens.cancel import check_cancelled
from zooens.ensemble._registry import register_strategy
from zooens.ensemble.adapters import AdapterConfig
from zooens.ensemble.artifacts import Artifact
from zooens.ensemble.results import RunResult, build_run_result
from zooens.ensemble.specs import MAX_LEARNING_RATE, RunSpec, SweepConfig
from zooens.ensemble.strategies.base import ImageClassifier, Strategy, base_config, embedding_dim
from zooens.ensemble.training import eval_transform, iterate_batches, predict_proba
from zooens.errors import ConfigError
from zooens.selection.embed import embed_split, embed_with_cache
from zooens.utils import resolve_device
from zooens.zoo import create_model, data_config, describe

__all__ = [
    "AftConfig",
    "AftStrategy",
    "aft_penalty",
    "centred_unit_features",
    "feature_weights",
    "linear_kernel",
    "smallest_model",
]

DEFAULT_BETA = 10.0
"""The authors' README runs AFT with `--prec=10` (the paper's beta)."""
DEFAULT_SCALE_LR = 1e-2
"""Learning rate of the feature weights' logits s: the authors' `prior_lr` default."""
KERNEL_EPS = 1e-8
"""Added under the square root of the mean squared kernel difference, as the authors do."""
NORM_EPS = 1e-8
"""Added to each example's norm before dividing by it (a constant example stays zero)."""
AUGMENTATIONS_SUPPORTED = ("none", "flip")


@dataclass
class AftConfig(AdapterConfig):
    """What a run of `aft` used, saved with its artifact."""

    teachers: list[str] = field(default_factory=list, metadata={"help": "Zoo models whose features are transferred."})
    student: str = field(default="", metadata={"help": "The model that trains (the run's model when empty)."})
    beta: float = field(default=DEFAULT_BETA, metadata={"help": "Weight of the kernel regulariser (paper's beta)."})
    scale_lr: float = field(default=DEFAULT_SCALE_LR, metadata={"help": "Adam learning rate of the feature weights."})

    def validate(self) -> None:
        if not self.teachers:
            raise ConfigError(
                "aft needs at least one teacher other than the student: give options {'teachers': [model names]} "
                "(a job uses its top-K models; with top_k 1 the only selected model is the student itself, so raise "
                "top_k or name a smaller 'student')."
            )
        if self.student in self.teachers:
            raise ConfigError(
                f"aft's student {self.student!r} cannot be one of its own teachers {self.teachers}; "
                "drop it from 'teachers' or name another 'student'."
            )
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ConfigError(f"beta must be a non-negative number, got {self.beta}; the authors use 10.")
        if not (0 < self.scale_lr <= MAX_LEARNING_RATE):
            raise ConfigError(
                f"scale_lr must be a positive number at most {MAX_LEARNING_RATE:g}, got {self.scale_lr}; "
                "the authors use 0.01."
            )


def centred_unit_features(features: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Features (B, D) centred over the batch, then each row scaled to unit Euclidean length."""
    centred = features - features.mean(dim=0, keepdim=True)
    return centred / (centred.norm(dim=1, keepdim=True) + eps)


def linear_kernel(features: torch.Tensor) -> torch.Tensor:
    """The (B, B) kernel of centred, unit-length features: cosine similarities about the batch mean."""
    z = centred_unit_features(features)
    return z @ z.T


def feature_weights(logits: torch.Tensor) -> torch.Tensor:
    """The paper's per-feature weights sigma(s) in (0, 1): s = 0 gives 1/2 for every feature."""
    return torch.sigmoid(logits)


def aft_penalty(student: torch.Tensor, teacher: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """R = sqrt(mean_ij (K_s - K_t)_ij^2 + 1e-8) = ||K_s - K_t||_F / B (up to the 1e-8).

    student : (B, D_s) features of the downstream model; teacher : (B, D_t) pre-trained features;
    logits : (D_t,) the learned s, the teacher's features weighted by sigma(s) before the kernel.
    """
    if student.ndim != 2 or teacher.ndim != 2 or student.shape[0] != teacher.shape[0]:
        raise ConfigError(
            f"aft needs student and teacher features of shape (B, D) for the same B, got "
            f"{tuple(student.shape)} and {tuple(teacher.shape)}."
        )
    if logits.shape != (teacher.shape[1],):
        raise ConfigError(
            f"aft needs one weight logit per teacher feature ({teacher.shape[1]}), got {tuple(logits.shape)}."
        )
    diff = linear_kernel(student) - linear_kernel(teacher * feature_weights(logits))
    return torch.sqrt(diff.pow(2).mean() + KERNEL_EPS)


def _num_params(name: str) -> int:
    """Parameters of a zoo model's embedder: the recorded count, else counted on an unloaded copy."""
    ws = describe(name)
    if ws.num_params:
        return int(ws.num_params)
    return sum(p.numel() for p in create_model(ws, num_classes=0, pretrained=False).parameters())


def smallest_model(candidates: list[str], *, exclude: list[str]) -> str | None:
    """The candidate with the fewest parameters that is not excluded (ties: the first given); None if none."""
    pool = [c for c in dict.fromkeys(candidates) if c not in set(exclude)]
    if not pool:
        return None
    return min(pool, key=_num_params)


def _concatenated(parts: list[np.ndarray]) -> torch.Tensor:
    """The teachers' features side by side, (N, sum of their widths), float32."""
    return torch.from_numpy(np.concatenate(parts, axis=1)).float()


class _MirroredSplit:
    """A split whose images are mirrored left-right (same labels): the `flip` view for the teachers."""

    def __init__(self, split: Any) -> None:
        self.split = split
        self.labels = split.labels

    def __len__(self) -> int:
        return len(self.split)

    def image(self, i: int) -> Image.Image:
        return ImageOps.mirror(self.split.image(i))


@register_strategy("aft")
class AftStrategy(Strategy):
    """Options: `teachers` (zoo model names; a job fills its top-K), `student` (the model that
    trains; a job given its zoo fills the smallest non-teacher, else the run's model), `beta`
    (weight of the regulariser, default 10) and `scale_lr` (learning rate of the feature weights,
    default 0.01). The sweep's learning rate is Adam's for the student (the authors use 1e-4)."""

    needs_images: ClassVar[bool] = True
    default_sweep: ClassVar[SweepConfig] = SweepConfig(learning_rates=(1e-4, 3e-4), steps=(500,), batch_size=64)
    accepted_options: ClassVar[frozenset[str]] = frozenset({"teachers", "student", "beta", "scale_lr"})

    def check_options(self, options: dict[str, Any]) -> None:
        """`teachers` a list of names (may be left out: a job fills it), `student` a name, `beta` >= 0,
        `scale_lr` > 0; the student may not be among the teachers."""
        super().check_options(options)
        teachers = options.get("teachers", [])
        if not isinstance(teachers, list) or not all(isinstance(t, str) and t for t in teachers):
            raise ConfigError(f"aft teachers must be a list of zoo model names, got {teachers!r}.")
        student = options.get("student", "")
        if not isinstance(student, str):
            raise ConfigError(f"aft student must be a zoo model name, got {student!r}.")
        if student and student in teachers:
            raise ConfigError(f"aft's student {student!r} cannot be one of its own teachers; drop it from 'teachers'.")
        for name, default in (("beta", DEFAULT_BETA), ("scale_lr", DEFAULT_SCALE_LR)):
            value = options.get(name, default)
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not numeric or not math.isfinite(value) or value < 0 or (name == "scale_lr" and value == 0):
                kind = "non-negative" if name == "beta" else "positive"
                raise ConfigError(f"{name} must be a {kind} number, got {value!r}; the authors use {default}.")
            if name == "scale_lr" and value > MAX_LEARNING_RATE:
                raise ConfigError(
                    f"scale_lr must be at most {MAX_LEARNING_RATE:g} (a learning rate, in (0, {MAX_LEARNING_RATE:g}]), "
                    f"got {value!r}; the authors use {default}."
                )

    def check_job(self, options: dict[str, Any], *, top_k: int, zoo_size: int) -> None:
        """A job's aft run trains each selected model as the student of the other selected ones (unless
        `teachers` or `student` is given): with one selected model (top_k 1, or a zoo of one) no run has a
        teacher, so the job is refused at submission instead of failing at its aft units after the others."""
        if options.get("teachers") or options.get("student"):
            return
        selected = min(top_k, zoo_size)
        if selected < 2:
            why = f"top_k is {top_k}" if top_k < 2 else f"the zoo holds {zoo_size} model"
            raise ConfigError(
                f"aft needs at least one teacher other than the student, and a job's teachers are its other "
                f"top-K models: {why}, so the only selected model would be its own teacher. Raise --top-k to 2 "
                "or more (with a zoo of 2 models or more), give teachers (-o aft.teachers='[\"NAME\"]'), "
                "or drop aft from --strategies."
            )

    def job_options(
        self, options: dict[str, Any], *, selected_models: list[str], zoo_models: list[str] | None = None
    ) -> dict[str, Any]:
        """Teachers: the job's selected (top-K) models unless the user named some. Student: unless
        named, and when the job's zoo is given, its smallest model (by parameters) that is not a teacher."""
        out = dict(options)
        if not out.get("teachers"):
            out["teachers"] = [m for m in selected_models if m != out.get("student")]
        if not out.get("student") and zoo_models:
            student = smallest_model(list(zoo_models), exclude=out["teachers"])
            if student is not None:
                out["student"] = student
        return out

    def config_for(self, spec: RunSpec) -> AftConfig:
        """The run's config: the student (option or the run's model) and its teachers, never itself."""
        student = str(spec.options.get("student") or spec.model_name)
        teachers = [t for t in dict.fromkeys(spec.options.get("teachers", [])) if t != student]
        return AftConfig(
            teachers=teachers,
            student=student,
            beta=float(spec.options.get("beta", DEFAULT_BETA)),
            scale_lr=float(spec.options.get("scale_lr", DEFAULT_SCALE_LR)),
        )

    def teacher_features(
        self, config: AftConfig, spec: RunSpec, ds: Any, *, cache: Any, device: str, progress: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teachers' concatenated features of the training images (N, D_t), and of their mirror
        images when the run flips (else None)."""
        plain, mirrored = [], []
        train = ds.split("train")
        for name in config.teachers:
            plain.append(
                embed_with_cache(
                    name,
                    ds,
                    "train",
                    cache=cache,
                    resolution=spec.resolution,
                    preprocessing=spec.preprocessing,
                    device=device,
                    progress=progress,
                ).embeddings
            )
            if spec.augmentation == "flip":
                model = create_model(name, num_classes=0)
                cfg = dict(data_config(name, resolution=spec.resolution, preprocessing=spec.preprocessing))
                mirrored.append(
                    embed_split(
                        model, cfg, _MirroredSplit(train), device=device, progress=progress, desc=f"{name} mirrored"
                    )
                )
        return _concatenated(plain), (_concatenated(mirrored) if mirrored else None)

    def fit(
        self,
        spec: RunSpec,
        ds: Any,
        *,
        cache: Any,
        device: str = "cpu",
        progress: bool = True,
        on_step: Callable[[int, float, float], None] | None = None,
    ) -> RunResult:
        """Train the student on `ds.split("train")`, score it on val (and test when present).

        `on_step(step, cross_entropy, penalty)` is called after each step (logging, tests).
        """
        if spec.augmentation not in AUGMENTATIONS_SUPPORTED:
            raise ConfigError(
                f"aft supports augmentation 'none' or 'flip', got {spec.augmentation!r}: the teachers' features are "
                "computed once per image (and per mirror image for 'flip'), so a random crop would have no "
                "matching teacher features; the authors train AFT without augmentation. Use 'none' or 'flip'."
            )
        config = self.config_for(spec)
        device = resolve_device(device)
        spec = replace(spec, model_name=config.student)
        data_cfg = dict(data_config(config.student, resolution=spec.resolution, preprocessing=spec.preprocessing))
        train = ds.split("train")
        teacher, teacher_mirrored = self.teacher_features(
            config, spec, ds, cache=cache, device=device, progress=progress
        )
        backbone = create_model(config.student, num_classes=0)
        head = nn.Linear(embedding_dim(backbone, data_cfg), len(ds.classes))
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        model = ImageClassifier(backbone, head).to(device)
        logits = nn.Parameter(torch.zeros(teacher.shape[1], device=device))
        params = list(model.parameters())
        optimizer = torch.optim.Adam(
            [{"params": params, "lr": spec.lr, "weight_decay": 0.0}, {"params": [logits], "lr": config.scale_lr}]
        )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.steps)
        generator = torch.Generator().manual_seed(spec.seed)
        torch.manual_seed(spec.seed)
        transform = eval_transform(data_cfg)
        labels = torch.as_tensor(train.labels, dtype=torch.long)
        batches = iterate_batches(len(train), spec.batch_size, generator)
        on_cuda = device.startswith("cuda")
        model.train()
        bar = tqdm(range(spec.steps), desc=f"aft {config.student}", disable=not progress, leave=False)
        for step in bar:
            check_cancelled()
            idx = next(batches)
            images = torch.stack([transform(train.image(int(i))) for i in idx])
            target = teacher[idx]
            if teacher_mirrored is not None:
                flip = torch.rand(len(idx), generator=generator) < 0.5
                images[flip] = images[flip].flip(-1)
                target = torch.where(flip[:, None], teacher_mirrored[idx], target)
            images, target = images.to(device), target.to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
                feats = model.backbone(images)
                ce = F.cross_entropy(model.head(feats).float(), labels[idx].to(device))
            penalty = aft_penalty(feats.float(), target, logits)
            loss = ce + config.beta * penalty
            if not torch.isfinite(loss):
                raise ConfigError(f"aft diverged (loss {float(loss)}); lower the learning rate (now {spec.lr}).")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
            if on_step is not None:
                on_step(step, float(ce.detach()), float(penalty.detach()))
        model.eval()
        val_proba = predict_proba(model, ds.split("val"), data_cfg, device=device)
        test_proba = predict_proba(model, ds.split("test"), data_cfg, device=device) if "test" in ds.splits else None
        tensors = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        cfg = base_config(spec, ds, data_cfg) | {"adapter": {"method": "aft", "config": config.to_dict()}}
        artifact = Artifact(config=cfg, tensors=tensors)
        return build_run_result(
            spec,
            ds,
            val_proba=val_proba,
            test_proba=test_proba,
            artifact=artifact,
            updated_params=sum(p.numel() for p in params),
        )

    def load(self, artifact: Artifact, *, device: str = "cpu", backbone: nn.Module | None = None) -> nn.Module:
        """The student with its head, rebuilt from the saved tensors alone (no zoo weights read)."""
        backbone = create_model(artifact.config["model"], num_classes=0, pretrained=False)
        head = nn.Linear(artifact.tensors["head.weight"].shape[1], len(artifact.config["classes"]))
        model = ImageClassifier(backbone, head)
        model.load_state_dict(artifact.tensors, strict=True)
        return model.eval().to(device)
