"""zooens from Python: `fit` a dataset in-process on the registry (the embedded SQLite file in
ZOOENS_HOME by default), read the leaderboard, predict, and export the ensemble to one file.

`fit` is `zooens run` without a terminal: the same `JobParams` (one source of defaults), the same
`register_dataset`, `submit_job(claim_for=...)`, `run_job` and `job_report`. Arrays and in-memory
datasets are first written to ZOOENS_HOME/arrays/<fingerprint>.npz, because a job reloads its data
from its source (a worker may be another process) and checks it against the recorded fingerprint.
`export_ensemble` writes what `zooens export`, `FittedEnsemble.save` and the API's download serve.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from zooens.ensemble import Artifact, BaseModel, EnsemblePredictor, write_bundle
from zooens.ensemble.predictor import ImageInputs
from zooens.errors import ConfigError, DatasetError, JobError
from zooens.selection.datasets import ImageDataset, Split, load_dataset
from zooens.service import registry
from zooens.service.db.session import session_scope, upgrade_to_head
from zooens.service.jobs import (
    default_worker_id,
    parse_params,
    register_dataset,
    require_success,
    run_job,
    submit_job,
)
from zooens.service.reports import JobReport, job_report
from zooens.settings import get_settings
from zooens.zoo import create_model, get_weight_set, weights_sha256

log = logging.getLogger(__name__)

__all__ = ["FittedEnsemble", "ensemble_members", "export_ensemble", "fit", "job_ensemble_id"]

BaseWeights = Literal["embed", "reference"]
ArrayPair = tuple[np.ndarray, Sequence[int] | np.ndarray]


def _array_split(name: str, images: np.ndarray, labels: Sequence[int] | np.ndarray) -> Split:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DatasetError(
            f"{name} images must be uint8 of shape (N, H, W) or (N, H, W, 3), got {images.dtype}; "
            "convert them with np.uint8 (scale floats to 0-255 first)."
        )
    return Split(name, images, np.asarray(labels))


def _arrays_dataset(
    images: np.ndarray,
    labels: Any,
    val: ArrayPair | None,
    test: ArrayPair | None,
    classes: Sequence[str] | None,
    name: str,
) -> ImageDataset:
    if labels is None:
        raise DatasetError("Give the labels of the images: zooens.fit(images, labels) (one class index per image).")
    splits = {"train": _array_split("train", images, labels)}
    for split, pair in (("val", val), ("test", test)):
        if pair is not None:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise DatasetError(f"{split} must be a pair (images, labels).")
            splits[split] = _array_split(split, *pair)
    n_classes = int(max(sp.labels.max() for sp in splits.values() if len(sp))) + 1
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(n_classes)]
    return ImageDataset(name, names, splits)


def _stored_arrays(ds: ImageDataset) -> str:
    """Write an in-memory dataset to ZOOENS_HOME/arrays/<fingerprint>.npz (once) and return the path."""
    if not all(isinstance(sp.images, np.ndarray) for sp in ds.splits.values()):
        raise DatasetError(
            f"Dataset {ds.name!r} holds image files but its source {ds.source!r} does not load it "
            "again; give its folder, .npz or .csv to zooens.fit instead."
        )
    folder = get_settings().home / "arrays"
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / f"{ds.fingerprint[:32]}.npz").resolve()
    if not path.exists():
        arrays: dict[str, np.ndarray] = {"classes": np.array(ds.classes)}
        for split, sp in ds.splits.items():
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = sp.images, sp.labels
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    return str(path)


def _dataset(
    data: Any,
    labels: Any,
    val: ArrayPair | None,
    test: ArrayPair | None,
    classes: Sequence[str] | None,
    name: str | None,
) -> tuple[str, ImageDataset]:
    """(source the job reloads, the dataset) of what `fit` was given."""
    if isinstance(data, np.ndarray):
        ds = _arrays_dataset(data, labels, val, test, classes, name or "arrays")
        return _stored_arrays(ds), ds
    if labels is not None or val is not None or test is not None or classes is not None:
        raise DatasetError("labels, val, test and classes go with image arrays; a path or dataset brings its own.")
    if isinstance(data, ImageDataset):
        if data.source:
            try:
                again = load_dataset(data.source)
            except DatasetError:
                again = None
            if again is not None and again.fingerprint == data.fingerprint:
                return str(Path(data.source).resolve()) if Path(data.source).exists() else data.source, data
        return _stored_arrays(data), data
    if isinstance(data, (str, os.PathLike)):
        source = str(data)
        if Path(source).expanduser().exists():
            source = str(Path(source).expanduser().resolve())
        return source, load_dataset(source)
    raise DatasetError(
        f"zooens.fit takes a path, a built-in name, image arrays with labels or an ImageDataset, "
        f"not a {type(data).__name__}."
    )


def fit(
    data: str | os.PathLike | np.ndarray | ImageDataset,
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    zoo: str | list[str] = "embedded",
    val: ArrayPair | None = None,
    test: ArrayPair | None = None,
    classes: Sequence[str] | None = None,
    name: str | None = None,
    progress: bool = True,
    **params: Any,
) -> FittedEnsemble:
    """Rank the zoo on `data`, fine-tune the best models and build the greedy ensemble, in this process.

    data : an ImageFolder directory, a `.npz` or `.csv` file, a built-in name ("digits",
        "fashion-mnist"), an `ImageDataset`, or uint8 images of shape (N, H, W) or (N, H, W, 3)
        with `labels` (N class indices), optionally `val`/`test` as (images, labels) pairs and
        `classes` (the class names, by index).
    zoo : a zoo set ("embedded", "user", "available"), a glob ("convnext*") or model names.
    params : the job's parameters, as `zooens run` names them (`JobParams`: top_k, k, strategies,
        steps, learning_rates, resolution, ensemble_size, n_train, n_val, seed, strategy_options, ...),
        with the same defaults.

    The job is stored in the registry (ZOOENS_HOME, or ZOOENS_DATABASE_URL) like any other, so
    `zooens jobs show`, the dashboard and the API see it. JobError if it does not succeed.
    """
    if isinstance(params.get("strategies"), str):
        params["strategies"] = [s.strip() for s in params["strategies"].split(",") if s.strip()]
    job_params = parse_params(**params)
    source, ds = _dataset(data, labels, val, test, classes, name)
    upgrade_to_head()
    worker_id = default_worker_id("library")
    with session_scope() as s:
        ds_row = register_dataset(s, source, ds, name=name)
        job_id = submit_job(s, ds_row.id, zoo, job_params, claim_for=worker_id).id
    log.info("job %d: dataset %s, zoo %s", job_id, ds.name, zoo)
    status = run_job(job_id, worker_id=worker_id, progress=progress)
    require_success(status, job_id)
    return FittedEnsemble.from_job(job_id)


def job_ensemble_id(s: Session, job_id: int) -> int:
    """The id of a job's ensemble; JobError when the job has none (yet)."""
    job = registry.get_job(s, job_id)
    ens = registry.get_job_ensemble(s, job_id)
    if ens is None:
        raise JobError(
            f"Job {job_id} has no ensemble (it is {job.status}); wait for it to succeed, or "
            f"`zooens jobs show {job_id}` for why not."
        )
    return ens.id


def ensemble_members(s: Session, ensemble_id: int) -> list[tuple[str, float]]:
    """(artifact directory, weight) of each member, as `EnsemblePredictor` takes them."""
    ens = registry.get_ensemble(s, ensemble_id)
    return [(registry.get_finetune_run(s, m.run_id).artifact_path, m.weight) for m in ens.members]


def export_ensemble(
    s: Session, ensemble_id: int, target: str | Path | IO[bytes], *, base_weights: BaseWeights = "embed"
) -> None:
    """Write ensemble `ensemble_id` as one `.zooens` file (`zooens.ensemble.bundle`): each member's saved
    run, and per base model its weights (`embed`) or only its name, architecture and sha256 (`reference`)."""
    if base_weights not in ("embed", "reference"):
        raise ConfigError(f"base_weights must be 'embed' or 'reference', got {base_weights!r}.")
    ens = registry.get_ensemble(s, ensemble_id)
    members = [(Artifact.load(path), weight) for path, weight in ensemble_members(s, ensemble_id)]
    bases = {}
    for model in sorted({a.config["model"] for a, _ in members}):
        state = None
        if base_weights == "embed":
            state = {k: v.detach().contiguous() for k, v in create_model(model, num_classes=0).state_dict().items()}
        bases[model] = BaseModel(
            name=model, arch=get_weight_set(model).arch, weights_sha256=weights_sha256(model), state=state
        )
    write_bundle(
        target,
        members,
        bases,
        metadata={
            "job_id": ens.job_id,
            "ensemble_id": ens.id,
            "val_ce": ens.val_ce,
            "val_acc": ens.val_acc,
            "test_acc": ens.test_acc,
        },
    )


@dataclass
class FittedEnsemble:
    """A finished job's ensemble: its leaderboard, ranking and predictions, and `save` to one file.

    Attributes: `job_id`, `ensemble_id`, `classes_` (class names; `predict_proba` columns follow
    them) and `report_` (the job's `JobReport`, as `zooens run --json` prints it).
    """

    job_id: int
    ensemble_id: int
    classes_: list[str]
    report_: JobReport
    _predictor: EnsemblePredictor | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_job(cls, job_id: int) -> FittedEnsemble:
        """The ensemble of a finished job in the registry (also one fitted earlier, or by `zooens run`)."""
        with session_scope() as s:
            ensemble_id = job_ensemble_id(s, job_id)
            job = registry.get_job(s, job_id)
            classes = list(registry.get_dataset(s, job.dataset_id).classes)
            report = job_report(s, job_id)
        return cls(job_id=job_id, ensemble_id=ensemble_id, classes_=classes, report_=report)

    def leaderboard(self) -> pd.DataFrame:
        """One row for the ensemble, then one per fine-tune run, best validation cross-entropy first:
        model, strategy, val_ce, val_acc, test_acc (NaN without a test split), ensemble weight, seconds,
        updated parameters and hyper-parameters."""
        ens = self.report_.ensemble
        weights = {m.run_id: m.weight for m in ens.members} if ens else {}
        rows = (
            [
                {
                    "model": "ensemble",
                    "strategy": "greedy",
                    "val_ce": ens.val_ce,
                    "val_acc": ens.val_acc,
                    "test_acc": ens.test_acc,
                    "weight": 1.0,
                    "seconds": np.nan,
                    "updated_params": sum(m.updated_params for m in ens.members),
                    "run_id": pd.NA,
                    "hparams": {"size": ens.size},
                }
            ]
            if ens
            else []
        )
        for run in sorted(self.report_.runs, key=lambda r: (r.val_ce, r.id)):
            rows.append(
                {
                    "model": run.model_name,
                    "strategy": run.strategy,
                    "val_ce": run.val_ce,
                    "val_acc": run.val_acc,
                    "test_acc": run.test_acc,
                    "weight": weights.get(run.id, 0.0),
                    "seconds": run.seconds,
                    "updated_params": run.updated_params,
                    "run_id": run.id,
                    "hparams": run.hparams,
                }
            )
        frame = pd.DataFrame(rows)
        return frame.astype({"test_acc": float, "val_acc": float}) if len(frame) else frame

    def ranking(self) -> pd.DataFrame:
        """The zoo ranking: one row per model, best kNN accuracy first (as `zooens jobs show`)."""
        return pd.DataFrame([row.model_dump() for row in self.report_.ranking])

    @property
    def predictor(self) -> EnsemblePredictor:
        """The ensemble's members, loaded once (the same predictor the API serves)."""
        if self._predictor is None:
            with session_scope() as s:
                members = ensemble_members(s, self.ensemble_id)
            self._predictor = EnsemblePredictor(members, device=get_settings().device)
        return self._predictor

    def predict_proba(self, images: ImageInputs, *, batch_size: int = 64) -> np.ndarray:
        """Probabilities of shape (n_images, n_classes), columns in `classes_` order; `images` are paths,
        PIL images or uint8 arrays (see `zooens.ensemble.predictor.ImageInputs`)."""
        return self.predictor.predict_proba(images, batch_size=batch_size)

    def predict(self, images: ImageInputs, *, batch_size: int = 64) -> list[str]:
        """The most probable class name of each image."""
        return self.predictor.predict(images, batch_size=batch_size)

    def save(self, path: str | os.PathLike, *, base_weights: BaseWeights = "embed") -> Path:
        """Write the ensemble as one `.zooens` file (`zooens.load` reads it back, no registry needed)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with session_scope() as s:
                export_ensemble(s, self.ensemble_id, tmp, base_weights=base_weights)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def __repr__(self) -> str:
        ens = self.report_.ensemble
        score = f", val_acc={ens.val_acc:.3f}" if ens and ens.val_acc is not None else ""
        return (
            f"FittedEnsemble(job_id={self.job_id}, ensemble_id={self.ensemble_id}, "
            f"members={ens.size if ens else 0}, classes={len(self.classes_)}{score})"
        )
