from __future__ import annotations

import io
import threading
from collections import OrderedDict
from typing import Annotated

from fastapi import APIRouter, Depends, File, UploadFile
from PIL import Image, UnidentifiedImageError

from zooens.ensemble.predictor import EnsemblePredictor
from zooens.errors import DatasetError, TooLargeError
from zooens.service import registry
from zooens.service.api.deps import EnsembleId, SessionDep, read_access
from zooens.service.api.schemas import EnsemblePublic, Prediction, PredictionsPublic
from zooens.service.reports import ensemble_view

router = APIRouter(prefix="/ensembles", tags=["ensembles"], dependencies=[Depends(read_access)])

_CACHE: "OrderedDict[int, object]" = OrderedDict()
_CACHE_SIZE = 4
_LOCK = threading.Lock()
MAX_IMAGES = 64
MAX_IMAGE_BYTES = 20 * 1024 * 1024


def predictor_for(session, ensemble_id: int):
    """Members loaded once per ensemble and kept (least recently used out)."""

    with _LOCK:
        if ensemble_id in _CACHE:
            _CACHE.move_to_end(ensemble_id)
            return _CACHE[ensemble_id]
    ens = registry.get_ensemble(session, ensemble_id)
    members = [(registry.get_finetune_run(session, m.run_id).artifact_path, m.weight) for m in ens.members]
    predictor = EnsemblePredictor(members=members)
    with _LOCK:
        _CACHE[ensemble_id] = predictor
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return predictor


@router.get("/{ensemble_id}", response_model=EnsemblePublic)
def show_ensemble(ensemble_id: EnsembleId, session: SessionDep) -> EnsemblePublic:
    ens = registry.get_ensemble(session, ensemble_id)
    return EnsemblePublic(**ensemble_view(session, ens.job_id))


@router.post("/{ensemble_id}/predict", response_model=PredictionsPublic)
def predict(
    ensemble_id: EnsembleId,
    session: SessionDep,
    files: Annotated[list[UploadFile], File(description="One or more images.")],
) -> PredictionsPublic:
    """Class probabilities of the ensemble for each image. Reading only: no token needed."""
    ens = registry.get_ensemble(session, ensemble_id)
    job = registry.get_job(session, ens.job_id)
    classes = list(registry.get_dataset(session, job.dataset_id).classes)
    if not files:
        raise DatasetError("Send at least one image as multipart field 'files'.")
    if len(files) > MAX_IMAGES:
        raise TooLargeError(f"At most {MAX_IMAGES} images per request; split the request.")
    images, names = [], []
    for f in files:
        data = f.file.read(MAX_IMAGE_BYTES + 1)
        if len(data) > MAX_IMAGE_BYTES:
            raise TooLargeError(f"{f.filename} is larger than {MAX_IMAGE_BYTES:,} bytes.")
        try:
            with Image.open(io.BytesIO(data)) as img:
                images.append(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError):
            raise DatasetError(f"{f.filename!r} is not a readable image; send PNG, JPEG or another common format.") from None
        names.append(f.filename or f"image-{len(names)}")
    proba = predictor_for(session, ensemble_id).predict_proba(images)
    out = [
        Prediction(filename=n, label=classes[int(p.argmax())], probabilities={c: float(v) for c, v in zip(classes, p)})
        for n, p in zip(names, proba)
    ]
    return PredictionsPublic(ensemble_id=ensemble_id, classes=classes, data=out)
