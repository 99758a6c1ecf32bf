"""zooens from Python: `fit` a dataset in this process, read the leaderboard, predict, and save the
ensemble to one file.

`fit(..., record=True)` (the default) is `zooens run` without a terminal: the same `JobParams` (one
source of defaults) and the same `run_here`, so the job is in the registry (the embedded SQLite file
in ZOOENS_HOME by default) for `zooens jobs show`, the dashboard and the API. Arrays and in-memory
datasets are then first written to ZOOENS_HOME/arrays/<fingerprint>.npz, because a job reloads its
data from its source (a worker may be another process) and checks it against the recorded
fingerprint. `fit(..., record=False)` runs `zooens.pipeline.fit` in memory: no database, no files
but the embedding cache. `export_ensemble` writes what `zooens export` and the API's download serve.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from sqlalchemy.orm import Session

from zooens.errors import DatasetError, JobError
from zooens.pipeline import EnsembleFacts, EnsembleRecord, FittedEnsemble, RunRecord, parse_params, write_ensemble_file
from zooens.pipeline import fit as fit_in_memory
from zooens.pipeline.fitted import BaseWeights
from zooens.pipeline.records import EnsembleMemberRecord
from zooens.selection.datasets import ImageDataset, Split, class_order, load_csv_manifest, load_dataset
from zooens.service import registry
from zooens.service.db.session import session_scope
from zooens.service.jobs import require_success, run_here
from zooens.service.reports import job_report
from zooens.settings import get_settings

log = logging.getLogger(__name__)

__all__ = ["FittedEnsemble", "ensemble_members", "export_ensemble", "fit", "fitted_from_job", "job_ensemble_id"]

ArrayPair = tuple[np.ndarray, Sequence[int] | np.ndarray]


def _array_split(name: str, images: np.ndarray, labels: np.ndarray) -> Split:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DatasetError(
            f"{name} images must be uint8 of shape (N, H, W) or (N, H, W, 3), got {images.dtype}; "
            "convert them with np.uint8 (scale floats to 0-255 first)."
        )
    return Split(name, images, labels)


def _values(data: Any) -> list[Any]:
    """The items of a list, tuple, array or pandas Series (its values, whatever its index)."""
    return list(data.tolist() if hasattr(data, "tolist") else data)


def _column(data: Any, what: str) -> str:
    """How an error names `data`: a pandas column by its name."""
    name = getattr(data, "name", None)
    return f"column {name!r}" if isinstance(name, str) and name else what


def encode_split_labels(
    by_split: dict[str, Any], classes: Sequence[str] | None
) -> tuple[list[str], dict[str, np.ndarray]]:
    """(class names, class indices by split) of labels given as class indices or as class names (strings,
    or anything else, by its `str`), e.g. a pandas column. With `classes`, names map to their position in it
    and indices must fall below its length; without, indices name themselves ("0", "1", ...) and names are
    sorted as ImageFolder sorts folders. DatasetError naming the split and position of a bad label."""
    values = {split: _values(labels) for split, labels in by_split.items()}
    for split, items in values.items():
        for i, x in enumerate(items):
            if isinstance(x, (bool, np.bool_)) or x is None or (isinstance(x, float) and np.isnan(x)):
                raise DatasetError(
                    f"{_column(by_split[split], split)} label {i} is {x!r}; give a class name or index per image."
                )
    flat = [x for items in values.values() for x in items]
    if all(isinstance(x, (int, np.integer)) for x in flat):
        top = max((int(x) for x in flat), default=-1)
        if any(int(x) < 0 for x in flat):
            raise DatasetError("Class indices must be non-negative; give 0..n_classes-1 or the class names.")
        names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(top + 1)]
        if top >= len(names):
            raise DatasetError(f"A label is class index {top}, but `classes` names only {len(names)} classes.")
        return names, {split: np.asarray(items, dtype=np.int64) for split, items in values.items()}
    names = [str(c) for c in classes] if classes is not None else class_order(str(x) for x in flat)
    index = {c: i for i, c in enumerate(names)}
    out = {}
    for split, items in values.items():
        unknown = next(((i, x) for i, x in enumerate(items) if str(x) not in index), None)
        if unknown is not None:
            raise DatasetError(
                f"{_column(by_split[split], split)} label {unknown[0]} is {unknown[1]!r}, which is not one of the "
                f"classes given ({', '.join(names[:10])}{', ...' if len(names) > 10 else ''})."
            )
        out[split] = np.asarray([index[str(x)] for x in items], dtype=np.int64)
    return names, out


def _pairs(train: tuple[Any, Any], val: ArrayPair | None, test: ArrayPair | None) -> dict[str, tuple[Any, Any]]:
    """(images, labels) by split, for the splits given: train always, val and test when given as pairs."""
    out = {"train": train}
    for split, pair in (("val", val), ("test", test)):
        if pair is not None:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise DatasetError(f"{split} must be a pair (images, labels).")
            out[split] = (pair[0], pair[1])
    return out


def _arrays_dataset(
    images: np.ndarray,
    labels: Any,
    val: ArrayPair | None,
    test: ArrayPair | None,
    classes: Sequence[str] | None,
    name: str,
) -> ImageDataset:
    if labels is None:
        raise DatasetError(
            "Give the labels of the images: zooens.fit(images, labels) (a class name or index per image)."
        )
    pairs = _pairs((images, labels), val, test)
    names, coded = encode_split_labels({s: p[1] for s, p in pairs.items()}, classes)
    splits = {s: _array_split(s, p[0], coded[s]) for s, p in pairs.items()}
    return ImageDataset(name, names, splits)


def _is_paths(data: Any) -> bool:
    """A list, tuple or pandas Series of image paths (not a string, an array of pixels or a dataset)."""
    if isinstance(data, (str, os.PathLike, np.ndarray, ImageDataset, bytes)) or not hasattr(data, "__len__"):
        return False
    items = _values(data) if hasattr(data, "tolist") or isinstance(data, (list, tuple)) else None
    return bool(items) and all(isinstance(x, (str, os.PathLike)) for x in items)


def _paths_dataset(
    paths: Any,
    labels: Any,
    val: ArrayPair | None,
    test: ArrayPair | None,
    classes: Sequence[str] | None,
    name: str | None,
    folder: Path,
) -> ImageDataset:
    """Image files named by a list or a pandas column (`paths`, relative to the current directory) with
    their labels, as a CSV manifest in `folder` (`selection.datasets.load_csv_manifest`: every file checked),
    so that a recorded job reloads them from it."""
    if labels is None:
        raise DatasetError(f"Give the labels of the images in {_column(paths, 'the list')}: zooens.fit(paths, labels).")
    pairs = _pairs((paths, labels), val, test)
    files = {split: _values(pair[0]) for split, pair in pairs.items()}
    for split, pair in pairs.items():
        if len(files[split]) != len(_values(pair[1])):
            raise DatasetError(
                f"{split}: {len(files[split])} image paths in {_column(pair[0], 'the list')} but "
                f"{len(_values(pair[1]))} labels; give one label per image."
            )
    names, coded = encode_split_labels({s: p[1] for s, p in pairs.items()}, classes)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "split"])
    for split, pair in pairs.items():
        for i, (file, y) in enumerate(zip(files[split], coded[split], strict=True)):
            real = Path(file).expanduser().resolve()
            if not real.is_file():
                raise DatasetError(f"{_column(pair[0], split)} row {i}: {str(file)!r} is not a file.")
            if "\n" in str(real) or "\r" in str(real):
                raise DatasetError(f"{_column(pair[0], split)} row {i}: a path with a line break cannot be listed.")
            writer.writerow([str(real), names[int(y)], split])
    body = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / f"{hashlib.sha256(body.encode()).hexdigest()[:32]}.csv"
    if not manifest.exists():
        tmp = manifest.with_name(f".{manifest.name}.{os.getpid()}.tmp")
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, manifest)
    ds = load_csv_manifest(manifest, name=name or _list_name(paths))
    if ds.classes != names:  # the manifest orders the classes it sees by name
        raise DatasetError(
            f"With image files the classes are the labels' names in sorted order ({', '.join(ds.classes[:10])}); "
            f"`classes` asked for {', '.join(names[:10])}: leave `classes` out, or give every class an image."
        )
    return ds


def _list_name(paths: Any) -> str:
    name = getattr(paths, "name", None)
    return str(name) if isinstance(name, str) and name else "files"


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
    *,
    store: bool = True,
) -> tuple[str, ImageDataset]:
    """(source the job reloads, the dataset) of what `fit` was given; in-memory data is written to
    ZOOENS_HOME/arrays only with `store` (a recorded job reloads it from there)."""
    if isinstance(data, np.ndarray):
        ds = _arrays_dataset(data, labels, val, test, classes, name or "arrays")
        return (_stored_arrays(ds) if store else ""), ds
    if _is_paths(data):
        folder = get_settings().home / "manifests" if store else Path(tempfile.mkdtemp(prefix="zooens-files-"))
        try:
            ds = _paths_dataset(data, labels, val, test, classes, name, folder)
        finally:
            if not store:
                shutil.rmtree(folder, ignore_errors=True)
        return (str(ds.source) if store else ""), ds
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
        return (_stored_arrays(data) if store else ""), data
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
    record: bool = True,
    **params: Any,
) -> FittedEnsemble:
    """Rank the zoo on `data`, fine-tune the best models and build the greedy ensemble, in this process.

    data : an ImageFolder directory, a `.npz` or `.csv` file, a built-in name ("digits",
        "fashion-mnist"), an `ImageDataset`, or uint8 images of shape (N, H, W) or (N, H, W, 3)
        with `labels` (N class indices), optionally `val`/`test` as (images, labels) pairs and
        `classes` (the class names, by index).
    zoo : a zoo set ("embedded", "user", "available"), a glob ("convnext*") or model names.
    record : True (default): the job is stored in the registry (ZOOENS_HOME, or ZOOENS_DATABASE_URL)
        like any other, so `zooens jobs show`, the dashboard and the API see it. False: it runs in
        memory (`zooens.pipeline.fit`) and needs no database at all.
    params : the job's parameters, as `zooens run` names them (`JobParams`: top_k, k, strategies,
        steps, learning_rates, resolution, ensemble_size, n_train, n_val, seed, strategy_options, ...),
        with the same defaults.

    JobError if the job does not succeed.
    """
    if isinstance(params.get("strategies"), str):
        params["strategies"] = [s.strip() for s in params["strategies"].split(",") if s.strip()]
    job_params = parse_params(**params)
    source, ds = _dataset(data, labels, val, test, classes, name, store=record)
    if not record:
        return fit_in_memory(ds, job_params, zoo=zoo, progress=progress)
    job_id, status = run_here(source, ds, zoo, job_params, name=name, role="library", progress=progress)
    log.info("job %d: dataset %s, zoo %s: %s", job_id, ds.name, zoo, status)
    require_success(status, job_id)
    return fitted_from_job(job_id)


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


def ensemble_temperature(s: Session, ensemble_id: int) -> float:
    """The ensemble's temperature (fitted on the job's selection rows; 1.0 for one built before calibration), as
    `EnsemblePredictor(temperature=...)` takes it."""
    return registry.get_ensemble(s, ensemble_id).temperature or 1.0


def export_ensemble(
    s: Session, ensemble_id: int, target: str | Path | IO[bytes], *, base_weights: BaseWeights = "embed"
) -> None:
    """Write ensemble `ensemble_id` as one `.zooens` file (`zooens.pipeline.write_ensemble_file`)."""
    ens = registry.get_ensemble(s, ensemble_id)
    metadata = {
        "job_id": ens.job_id,
        "ensemble_id": ens.id,
        "val_ce": ens.val_ce,
        "val_acc": ens.val_acc,
        "test_acc": ens.test_acc,
        "temperature": ens.temperature,
        "test_nll": ens.test_nll,
        "test_ece": ens.test_ece,
    }
    write_ensemble_file(
        ensemble_members(s, ensemble_id),
        target,
        base_weights=base_weights,
        metadata=metadata,
        temperature=ens.temperature,
    )


def fitted_from_job(job_id: int) -> FittedEnsemble:
    """The ensemble of a finished job in the registry (one fitted earlier, or by `zooens run`), read
    back as the records the pipeline produced."""
    with session_scope() as s:
        ensemble_id = job_ensemble_id(s, job_id)
        job = registry.get_job(s, job_id)
        classes = list(registry.get_dataset(s, job.dataset_id).classes)
        report = job_report(s, job_id)
        rows = registry.list_finetune_runs(s, job_id)
        runs = [RunRecord.model_validate(r) for r in rows]
        by_id = {r.id: r for r in rows}
        ens = registry.get_ensemble(s, ensemble_id)  # members in selection order
        selected = (registry.done_units(s, job_id).get("ensemble") or {}).get("selected", [])
        record = EnsembleRecord(
            **EnsembleFacts.model_validate(ens).model_dump(),
            members=[EnsembleMemberRecord(unit_key=by_id[m.run_id].unit_key, weight=m.weight) for m in ens.members],
            selected=list(selected),
        )
        artifacts = [(by_id[m.run_id].artifact_path, m.weight) for m in ens.members]
    return FittedEnsemble(
        classes_=classes,
        ranking_=report.ranking,
        runs_=runs,
        ensemble_=record,
        members_=artifacts,
        ranking_audit_=report.job.ranking_audit,
        job_id=job_id,
        ensemble_id=ensemble_id,
        run_ids_={r.unit_key: r.id for r in rows},
        report_=report,
        device=get_settings().device,
    )
