"""Dashboard pages, served by the API's FastAPI app at `/` and `/dashboard/...`.

Pages are Jinja2 templates from package data; most data comes from the `/api/v1` JSON
endpoints through a little vanilla JS. The zoo catalogue (~1,800 entries) is filtered and
paginated here, and dataset pages read the images to serve thumbnails. plotly.js is served
from the installed `plotly` package: no CDN.
"""
from __future__ import annotations

import io
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import plotly
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

from zooens.ensemble import strategy_names
from zooens.errors import NotFoundError, ZooensError
from zooens.selection.datasets import load_dataset
from zooens.service import registry
from zooens.service.db.session import session_scope
from zooens.settings import get_settings
from zooens.zoo import list_weight_sets, zoo_sets

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
PAGE_SIZES = (25, 50, 100, 200)
THUMBS_PER_CLASS = 12

router = APIRouter(include_in_schema=False, tags=["dashboard"])


def _static_url(name: str) -> str:
    return f"/dashboard/static/{name}"


_env = Environment(loader=PackageLoader("zooens.service.dashboard", "templates"), autoescape=select_autoescape())
_env.globals["static"] = _static_url
templates = Jinja2Templates(env=_env)


def _page(request: Request, name: str, active: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"active": active, **context}, status_code=status_code)


def _not_found(request: Request, message: str) -> HTMLResponse:
    return _page(request, "error.html", "", status_code=404, title="Not found", message=message)


# --------------------------------------------------------------------------------------
# Static files


@router.get("/dashboard/static/plotly.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/dashboard/static/{name}")
def static_file(name: str) -> FileResponse:
    path = STATIC_DIR / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise HTTPException(404, f"No static file {name!r}.")
    media = {".js": "text/javascript", ".css": "text/css"}.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})


# --------------------------------------------------------------------------------------
# Jobs


@router.get("/", response_class=HTMLResponse)
@router.get("/dashboard", response_class=HTMLResponse)
@router.get("/dashboard/jobs", response_class=HTMLResponse)
def jobs_page(request: Request) -> HTMLResponse:
    return _page(request, "jobs.html", "jobs")


@router.get("/dashboard/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: int) -> HTMLResponse:
    return _page(request, "job.html", "jobs", job_id=job_id, plotly_url=_static_url("plotly.min.js"))


@router.get("/dashboard/submit", response_class=HTMLResponse)
def submit_page(request: Request) -> HTMLResponse:
    try:

        strategies = strategy_names()
    except Exception:  # the form still works with the basic strategies
        logger.warning("could not list fine-tuning strategies", exc_info=True)
        strategies = ["full", "linear"]
    try:

        sets = list(zoo_sets())
    except Exception:
        logger.warning("could not list zoo sets", exc_info=True)
        sets = ["embedded", "user"]
    return _page(request, "submit.html", "submit", strategies=strategies, zoo_sets=sets + ["available"])


# --------------------------------------------------------------------------------------
# Zoo catalogue: filtered and paginated here


_FAMILY_PREFIXES = ("tf_", "tv_", "timm_", "test_")


def architecture_family(arch: str) -> str:
    """The family an architecture belongs to: `tf_efficientnet_lite0` -> `efficientnet`, `resnet50d` -> `resnet`."""
    name = arch.lower()
    for prefix in _FAMILY_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix):]
            break
    head = re.split(r"[_\-.]", name, maxsplit=1)[0]
    match = re.match(r"([a-z]+?(?:v\d+)?)(?:\d.*)?$", head)
    return match.group(1) if match else head


@dataclass(frozen=True)
class ZooRow:
    name: str
    arch: str
    family: str
    origin: str
    input_size: int | None
    num_params: int | None
    embed_dim: int | None
    weights_present: bool
    upstream_data: str | None


def _zoo_row(ws) -> ZooRow:
    size = getattr(getattr(ws, "input", None), "input_size", None)
    try:
        weights_present = bool(ws.weights_present)
    except Exception:  # a broken entry shows as unavailable rather than breaking the page
        weights_present = False
    return ZooRow(
        name=ws.name,
        arch=ws.arch,
        family=architecture_family(ws.arch),
        origin=ws.origin,
        input_size=int(size[-1]) if size else None,
        num_params=ws.num_params,
        embed_dim=ws.embed_dim,
        weights_present=weights_present,
        upstream_data=getattr(ws, "upstream_data", None),
    )


_zoo_lock = threading.Lock()
_zoo_cache: dict[str, Any] = {"key": None, "at": 0.0, "rows": []}
ZOO_CACHE_SECONDS = 30.0


def catalogue_rows() -> list[ZooRow]:
    """Every weight set as a row, cached briefly (user models added meanwhile show after the cache expires)."""

    user_file = get_settings().user_zoo_file
    key = (str(user_file), user_file.stat().st_mtime if user_file.exists() else None)
    with _zoo_lock:
        fresh = time.monotonic() - _zoo_cache["at"] < ZOO_CACHE_SECONDS
        if _zoo_cache["key"] == key and fresh:
            return _zoo_cache["rows"]
        rows = sorted((_zoo_row(ws) for ws in list_weight_sets()), key=lambda r: r.name)
        _zoo_cache.update(key=key, at=time.monotonic(), rows=rows)
        return rows


def filter_zoo(
    rows: list[ZooRow],
    *,
    q: str = "",
    family: str = "",
    origin: str = "",
    input_size: int | None = None,
    min_params_m: float | None = None,
    max_params_m: float | None = None,
    weights: str = "",
) -> list[ZooRow]:
    """Rows matching every given filter; `q` matches name or architecture, case-insensitive."""
    terms = q.lower().split()
    out = []
    for r in rows:
        if terms and not all(t in r.name.lower() for t in terms):
            continue
        if family and r.family != family:
            continue
        if origin and r.origin != origin:
            continue
        if input_size is not None and r.input_size != input_size:
            continue
        if min_params_m is not None and (r.num_params is None or r.num_params < min_params_m * 1e6):
            continue
        if max_params_m is not None and (r.num_params is None or r.num_params > max_params_m * 1e6):
            continue
        if weights == "yes" and not r.weights_present:
            continue
        if weights == "no" and r.weights_present:
            continue
        out.append(r)
    return out


def _optional_number(text: str | None, kind=float):
    if text is None or text.strip() == "":
        return None
    try:
        return kind(text)
    except ValueError:
        return None


@router.get("/dashboard/zoo", response_class=HTMLResponse)
def zoo_page(
    request: Request,
    q: str = "",
    family: str = "",
    origin: str = "",
    input_size: str | None = None,
    min_params: str | None = None,
    max_params: str | None = None,
    weights: str = "",
    page: int = Query(1, ge=1),
    per_page: int = Query(50),
) -> HTMLResponse:
    rows = catalogue_rows()
    per_page = per_page if per_page in PAGE_SIZES else 50
    size = _optional_number(input_size, int)
    lo, hi = _optional_number(min_params), _optional_number(max_params)
    matched = filter_zoo(rows, q=q, family=family, origin=origin, input_size=size,
                         min_params_m=lo, max_params_m=hi, weights=weights)
    pages = max(1, math.ceil(len(matched) / per_page))
    page = min(page, pages)
    shown = matched[(page - 1) * per_page: page * per_page]
    filters = {"q": q, "family": family, "origin": origin, "input_size": input_size or "",
               "min_params": min_params or "", "max_params": max_params or "", "weights": weights,
               "per_page": per_page}
    return _page(
        request, "zoo.html", "zoo",
        rows=shown, total=len(rows), matched=len(matched), page=page, pages=pages, filters=filters,
        families=sorted({r.family for r in rows}), origins=sorted({r.origin for r in rows}),
        input_sizes=sorted({r.input_size for r in rows if r.input_size}), page_sizes=PAGE_SIZES,
        available=sum(r.weights_present for r in rows), sized=sum(r.num_params is not None for r in rows),
    )


# --------------------------------------------------------------------------------------
# Datasets: counts per split and class, thumbnails


@router.get("/dashboard/datasets", response_class=HTMLResponse)
def datasets_page(request: Request) -> HTMLResponse:
    return _page(request, "datasets.html", "datasets")


def _dataset_row(dataset_id: int) -> dict[str, Any]:
    with session_scope() as s:
        row = registry.get_dataset(s, dataset_id)
        return {"id": row.id, "name": row.name, "source": row.source, "fingerprint": row.fingerprint,
                "created_at": getattr(row, "created_at", None)}


@lru_cache(maxsize=8)
def _load(source: str, fingerprint: str):
    """The dataset as stored (fingerprint in the key: a source replaced on disk is read again)."""

    return load_dataset(source)


def load_registered_dataset(dataset_id: int):
    row = _dataset_row(dataset_id)
    return row, _load(row["source"], row["fingerprint"])


@router.get("/dashboard/datasets/{dataset_id}", response_class=HTMLResponse)
def dataset_page(request: Request, dataset_id: int, split: str | None = None) -> HTMLResponse:
    try:
        row, ds = load_registered_dataset(dataset_id)
    except NotFoundError as exc:
        return _not_found(request, str(exc))
    except ZooensError as exc:
        return _page(request, "error.html", "datasets", status_code=422, title="Dataset unreadable", message=str(exc))
    n_classes = len(ds.classes)
    split_names = sorted(ds.splits, key=lambda s: ({"train": 0, "val": 1, "test": 2}.get(s, 3), s))
    counts: dict[str, list[int]] = {}
    samples: dict[str, list[list[int]]] = {}
    for name in split_names:
        labels = np.asarray(ds.split(name).labels)
        counts[name] = np.bincount(labels, minlength=n_classes).tolist()
        samples[name] = [np.flatnonzero(labels == c)[:THUMBS_PER_CLASS].tolist() for c in range(n_classes)]
    sample_split = split if split in split_names else ("train" if "train" in split_names else split_names[0])
    return _page(
        request, "dataset.html", "datasets",
        dataset=row, classes=list(ds.classes), splits=split_names, counts=counts,
        totals={s: sum(c) for s, c in counts.items()}, sample_split=sample_split, samples=samples[sample_split],
    )


@router.get("/dashboard/datasets/{dataset_id}/images/{split}/{index}.png")
def dataset_thumbnail(dataset_id: int, split: str, index: int, size: int = Query(64, ge=8, le=512)) -> Response:
    """A PNG thumbnail of image `index` of a split (nearest-neighbour when enlarging small images)."""

    try:
        _, ds = load_registered_dataset(dataset_id)
        part = ds.split(split)
    except NotFoundError as exc:
        raise HTTPException(404, str(exc)) from exc
    except ZooensError as exc:
        raise HTTPException(404, str(exc)) from exc
    if not 0 <= index < len(part):
        raise HTTPException(404, f"Split {split!r} of dataset {dataset_id} has {len(part)} images; no index {index}.")
    img = part.image(index).convert("RGB")
    scale = size / max(img.size)
    resample = Image.NEAREST if scale >= 1 else Image.LANCZOS
    img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})
