"""Datasets: upload, register a server-side path, list, show (ids, names, counts; never server paths) and delete."""

from __future__ import annotations

import unicodedata
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile

from zooens.errors import DatasetError
from zooens.service import lifecycle, registry
from zooens.service.api.deps import (
    DatasetId,
    SessionDep,
    SettingsDep,
    TokenDep,
    read_access,
)
from zooens.service.api.errors import COMMON_ERRORS, described, documented
from zooens.service.api.schemas import DatasetPublic, DatasetRegister, Page, no_control_characters
from zooens.service.uploads import register_path, store_upload

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=COMMON_ERRORS)

MAX_NAME = 200


def dataset_public(row) -> DatasetPublic:
    return DatasetPublic.model_validate(row)


def client_file_name(filename: str | None, fallback: str = "upload") -> str:
    """A client's file name made safe to show, log and store: its last path component, without control
    characters, NFC-normalised, at most MAX_NAME characters (the suffix kept, which says the format)."""
    text = unicodedata.normalize("NFC", filename or "")
    text = "".join(c for c in text if ord(c) >= 32 and ord(c) != 127 and unicodedata.category(c) != "Cs")
    text = PureWindowsPath(PurePosixPath(text).name).name.strip() or fallback
    if len(text) > MAX_NAME:
        suffix = PurePosixPath(text).suffix[:16]
        text = text[: MAX_NAME - len(suffix)] + suffix
    return text


@router.post(
    "",
    response_model=DatasetPublic,
    status_code=201,
    responses={
        200: {"model": DatasetPublic, "description": "The same content was uploaded before: its dataset, unchanged"},
        **documented(409),
    },
)
def upload_dataset(
    session: SessionDep,
    settings: SettingsDep,
    _: TokenDep,
    response: Response,
    file: Annotated[
        UploadFile, File(description="A .zip of an ImageFolder tree (or of a CSV manifest and its images), or an .npz.")
    ],
    name: Annotated[str | None, Form(min_length=1, max_length=MAX_NAME)] = None,
) -> DatasetPublic:
    """Upload a dataset. It is checked whole before anything is stored; the body is bounded by
    ZOOENS_MAX_UPLOAD_BYTES before it is read (the guard middleware). Content uploaded before
    (the same fingerprint) answers 200 with the existing dataset instead of storing a copy."""

    if name is not None:
        try:
            no_control_characters(name)
        except ValueError as exc:
            raise DatasetError(f"The dataset name {exc}.") from None
    filename = client_file_name(file.filename)
    row, created = store_upload(
        session, file.file, filename, settings, name=name or PurePosixPath(filename).stem[:MAX_NAME]
    )
    if not created:
        response.status_code = 200
    return dataset_public(row)


@router.post(
    "/register",
    response_model=DatasetPublic,
    status_code=201,
    responses={
        **documented(409),
        **described(422, "The path is not under one of the server's data roots, or is not a readable dataset."),
    },
)
def register_dataset_path(
    body: DatasetRegister, session: SessionDep, settings: SettingsDep, _: TokenDep
) -> DatasetPublic:
    """Register a dataset already on the server (only under ZOOENS_DATA_ROOTS). Refusals name the path as it was
    sent, never the server's data roots or where a link leads."""
    return dataset_public(register_path(session, body.path, settings, name=body.name))


@router.get("", response_model=Page[DatasetPublic], dependencies=[Depends(read_access)])
def list_datasets(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Page[DatasetPublic]:
    rows, count = registry.list_datasets(session, limit=limit, offset=offset)
    return Page(data=[dataset_public(r) for r in rows], count=count)


@router.get(
    "/{dataset_id}",
    response_model=DatasetPublic,
    dependencies=[Depends(read_access)],
    responses=described(404, "No such dataset."),
)
def show_dataset(dataset_id: DatasetId, session: SessionDep) -> DatasetPublic:
    """Classes, counts per class and split, fingerprint."""
    return dataset_public(registry.get_dataset(session, dataset_id))


@router.delete(
    "/{dataset_id}",
    status_code=204,
    response_class=Response,
    responses={
        **described(404, "No such dataset."),
        **described(409, "A job uses it (unfinished, or finished without with_jobs)."),
    },
)
def delete_dataset(
    dataset_id: DatasetId,
    session: SessionDep,
    settings: SettingsDep,
    _: TokenDep,
    with_jobs: Annotated[bool, Query(description="Delete its finished jobs (and their files) with it.")] = False,
) -> Response:
    """Delete a dataset, its stored upload and its thumbnails. 409 while a queued or running job uses it,
    or while finished jobs do unless `with_jobs=true`."""
    lifecycle.delete_dataset(session, dataset_id, settings, with_jobs=with_jobs)
    return Response(status_code=204)
