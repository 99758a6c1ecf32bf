from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile

from zooens.service import registry
from zooens.service.api.deps import (
    DatasetId,
    SessionDep,
    SettingsDep,
    TokenDep,
    read_access,
)
from zooens.service.api.schemas import DatasetPublic, DatasetRegister, Page
from zooens.service.uploads import ingest_upload, register_path

router = APIRouter(prefix="/datasets", tags=["datasets"])


def dataset_public(row) -> DatasetPublic:
    return DatasetPublic.model_validate(row)


@router.post("", response_model=DatasetPublic, status_code=201)
def upload_dataset(
    session: SessionDep,
    settings: SettingsDep,
    _: TokenDep,
    file: Annotated[UploadFile, File(description="A .zip of an ImageFolder tree (or of a CSV manifest and its images), or an .npz.")],
    name: Annotated[str | None, Form(max_length=200)] = None,
) -> DatasetPublic:
    """Upload a dataset. It is checked whole before anything is stored."""

    row = ingest_upload(session, file.file, file.filename or "", settings, name=name)
    return dataset_public(row)


@router.post("/register", response_model=DatasetPublic, status_code=201)
def register_dataset_path(body: DatasetRegister, session: SessionDep, settings: SettingsDep, _: TokenDep) -> DatasetPublic:
    """Register a dataset already on the server (only under ZOOENS_DATA_ROOTS)."""

    return dataset_public(register_path(session, body.path, settings, name=body.name))


@router.get("", response_model=Page[DatasetPublic], dependencies=[Depends(read_access)])
def list_datasets(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Page[DatasetPublic]:
    rows, count = registry.list_datasets(session, limit=limit, offset=offset)
    return Page(data=[dataset_public(r) for r in rows], count=count)


@router.get("/{dataset_id}", response_model=DatasetPublic, dependencies=[Depends(read_access)])
def show_dataset(dataset_id: DatasetId, session: SessionDep) -> DatasetPublic:
    """Classes, counts per class and split, fingerprint."""
    return dataset_public(registry.get_dataset(session, dataset_id))
