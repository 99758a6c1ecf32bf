from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, BinaryIO, Literal

from fastapi import APIRouter, Depends, File, UploadFile
from fastapi.responses import FileResponse
from PIL import Image
from starlette.background import BackgroundTask

from zooens.ensemble.bundle import BUNDLE_SUFFIX
from zooens.ensemble.predictor import EnsemblePredictor
from zooens.errors import DatasetError, TooLargeError
from zooens.selection.images import DECODE_ERRORS, check_pixels, open_image
from zooens.service import registry
from zooens.service.api.deps import EnsembleId, SessionDep, SettingsDep, read_access
from zooens.service.api.errors import COMMON_ERRORS, described, documented
from zooens.service.api.routes.datasets import client_file_name
from zooens.service.api.schemas import EnsemblePublic, Prediction, PredictionsPublic
from zooens.service.library import ensemble_members, ensemble_temperature, export_ensemble
from zooens.service.reports import ensemble_public

router = APIRouter(
    prefix="/ensembles", tags=["ensembles"], dependencies=[Depends(read_access)], responses=COMMON_ERRORS
)

_CACHE: OrderedDict[tuple, object] = OrderedDict()
_CACHE_SIZE = 4
_LOCK = threading.Lock()
PREDICT_MAX_SIDE = 1024
"""Longest side an image is decoded to for predict (see `predict`)."""


def _mtime_ns(path: str) -> int:
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        return -1  # gone: EnsemblePredictor says so when it loads


def predictor_for(session, ensemble_id: int):
    """Members loaded once per ensemble and kept (least recently used out).

    Keyed by the members' artifact folders (with their modification times) and weights, not the id
    alone: a deleted job's and ensemble's ids can be given again (SQLite reuses the largest rowid,
    and the new job writes its runs to the same folders), and a cached predictor must never answer
    for another ensemble."""
    members = ensemble_members(session, ensemble_id)
    temperature = ensemble_temperature(session, ensemble_id)
    key = (ensemble_id, temperature, tuple((str(path), _mtime_ns(path), float(weight)) for path, weight in members))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    predictor = EnsemblePredictor(members=members, temperature=temperature)
    with _LOCK:
        _CACHE[key] = predictor
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return predictor


def check_image_header(stream: BinaryIO, name: str) -> None:
    """Refuse an image from its header alone (no pixel decoded): not an image (422), too many pixels (413)."""
    stream.seek(0)
    try:
        with Image.open(stream) as img:
            check_pixels(img, name)
    except TooLargeError:
        raise
    except DECODE_ERRORS:
        raise DatasetError(f"{name} is not a readable image; send PNG, JPEG or another common format.") from None
    finally:
        stream.seek(0)


@router.get("/{ensemble_id}", response_model=EnsemblePublic, responses=described(404, "No such ensemble."))
def show_ensemble(ensemble_id: EnsembleId, session: SessionDep) -> EnsemblePublic:
    """The ensemble's members and weights, its cost, budget, calibration and front (as `GET /jobs/{id}/ensemble`)."""
    return ensemble_public(session, registry.get_ensemble(session, ensemble_id))


@router.get(
    "/{ensemble_id}/export",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/zip": {}}, "description": "The ensemble as one .zooens file."},
        **described(404, "No such ensemble."),
        **described(409, "The ensemble's job has no ensemble to export."),
    },
)
def export(
    ensemble_id: EnsembleId,
    session: SessionDep,
    settings: SettingsDep,
    weights: Literal["embed", "reference"] = "embed",
) -> FileResponse:
    """The ensemble as one `.zooens` file, the same `zooens export` writes: every member, the base weights
    (`weights=embed`, the default) or only their names and sha256 (`weights=reference`), preprocessing, class
    names, versions and checksums. Load it with `zooens.load(path)` or `zooens predict FILE IMAGES...`."""
    registry.get_ensemble(session, ensemble_id)  # 404 before any work
    folder = settings.home / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"ensemble-{ensemble_id}-", suffix=BUNDLE_SUFFIX, dir=folder)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            export_ensemble(session, ensemble_id, f, base_weights=weights)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return FileResponse(
        path,
        media_type="application/zip",
        filename=f"ensemble-{ensemble_id}{BUNDLE_SUFFIX}",
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


@router.post(
    "/{ensemble_id}/predict",
    response_model=PredictionsPublic,
    responses={**described(404, "No such ensemble."), **documented(409)},
)
def predict(
    ensemble_id: EnsembleId,
    session: SessionDep,
    settings: SettingsDep,
    files: Annotated[list[UploadFile], File(description="One or more images.")],
) -> PredictionsPublic:
    """Class probabilities of the ensemble for each image. Reading only: no token needed (unless
    ZOOENS_PROTECT_READS).

    Bounded before it costs: the body by ZOOENS_MAX_PREDICT_BYTES (the guard middleware, before it is read), the
    number of files by ZOOENS_MAX_PREDICT_FILES (before any image is decoded), each image's pixels by
    ZOOENS_MAX_IMAGE_PIXELS (from its header). Deliberately, each image is decoded reduced to at most
    PREDICT_MAX_SIDE pixels on its longer side (JPEGs at a reduced DCT scale): the members' own resolution is far
    below that, so the answer is the same while a large photo costs a fraction of its full decode. Images are
    decoded and scored one at a time, so at most one decoded image is held.
    """
    if not files:
        raise DatasetError("Send at least one image as multipart field 'files'.")
    if len(files) > settings.max_predict_files:
        raise TooLargeError(
            f"{len(files)} images in one request; at most {settings.max_predict_files} are allowed "
            "(ZOOENS_MAX_PREDICT_FILES): split the request."
        )
    names = [client_file_name(f.filename, fallback=f"image-{i}") for i, f in enumerate(files)]
    # headers only: a too large or unreadable image is refused before any work
    for f, name in zip(files, names, strict=False):
        check_image_header(f.file, name)
    ens = registry.get_ensemble(session, ensemble_id)
    job = registry.get_job(session, ens.job_id)
    classes = list(registry.get_dataset(session, job.dataset_id).classes)
    predictor = predictor_for(session, ensemble_id)
    out = []
    for f, name in zip(files, names, strict=False):
        f.file.seek(0)
        data = f.file.read(settings.max_predict_bytes + 1)
        image = open_image(data, max_side=PREDICT_MAX_SIDE, name=name)
        p = predictor.predict_proba([image])[0]
        del image, data
        out.append(
            Prediction(
                filename=name,
                label=classes[int(p.argmax())],
                probabilities={c: float(v) for c, v in zip(classes, p, strict=False)},
            )
        )
    return PredictionsPublic(ensemble_id=ensemble_id, classes=classes, data=out)
