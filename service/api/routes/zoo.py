"""The zoo catalogue over HTTP: every weight set (embedded, user, timm's ~1,800 pretrained tags), filtered and paged.

The catalogue's public rows are built once per process and kept (`catalogue()`), shared with the dashboard's Zoo
page; `warm_catalogue()` builds them in a background thread at start-up so that no request pays for it.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated

import torch
from fastapi import APIRouter, Depends, Query
from huggingface_hub import constants as hf_constants

from zooens.service.api.deps import read_access
from zooens.service.api.schemas import Page, WeightSetPublic, ZooSetsPublic
from zooens.settings import get_settings
from zooens.zoo import get_weight_set, list_weight_sets
from zooens.zoo import zoo_sets as sets

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/zoo", tags=["zoo"], dependencies=[Depends(read_access)])

CATALOGUE_MAX_AGE_SECONDS = 300.0
"""After this, the rows are rebuilt in the background (weights may have appeared in a cache meanwhile) while the
old ones are still served."""


def public_facts(facts: dict) -> dict:
    """A weight set's facts without server paths: a local weight file is named, not located."""
    source = dict(facts.get("source") or {})
    if source.get("kind") == "file" and source.get("path"):
        source["path"] = PurePath(source["path"]).name
    return {**facts, "source": source} if "source" in facts else facts


def weight_set_public(ws) -> WeightSetPublic:
    facts = public_facts(ws.to_dict())  # computes weights_present (file-system look-ups) once
    size = getattr(ws.input, "input_size", None)
    return WeightSetPublic(
        name=ws.name,
        arch=ws.arch,
        tag=ws.tag,
        origin=ws.origin,
        weights_present=bool(facts["weights_present"]),
        input_size=list(size) if size else None,
        embed_dim=ws.embed_dim,
        num_params=ws.num_params,
        license=ws.license,
        upstream_data=ws.upstream_data,
        facts=facts,
    )


@dataclass(frozen=True)
class _Snapshot:
    key: tuple
    built_at: float
    rows: tuple[WeightSetPublic, ...]


_lock = threading.Lock()
_refreshing = threading.Event()
_snapshot: _Snapshot | None = None


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _freshness_key() -> tuple:
    """What invalidates the rows: the user zoo file, and the weight caches that `weights_present` looks in
    (a download adds a folder to them, which changes their modification time)."""
    user_file = get_settings().user_zoo_file
    user_mtime = _mtime(user_file)
    user_key = (str(user_file), user_mtime) if user_mtime is not None else None  # no file: no user models
    return (user_key, _mtime(Path(hf_constants.HF_HUB_CACHE)), _mtime(Path(torch.hub.get_dir()) / "checkpoints"))


def _build(key: tuple) -> _Snapshot:
    start = time.perf_counter()
    rows = tuple(weight_set_public(ws) for ws in list_weight_sets())
    logger.info("zoo catalogue: %d weight sets in %.2f s", len(rows), time.perf_counter() - start)
    return _Snapshot(key=key, built_at=time.monotonic(), rows=rows)


def _refresh(key: tuple) -> None:
    global _snapshot
    try:
        fresh = _build(key)
        with _lock:
            _snapshot = fresh
    except Exception:  # a failed refresh keeps the old rows; the next call tries again
        logger.warning("could not refresh the zoo catalogue", exc_info=True)
    finally:
        _refreshing.clear()


def catalogue() -> tuple[WeightSetPublic, ...]:
    """Every weight set's public row, sorted by name: built once, rebuilt when the user zoo or a weight cache
    changes; after CATALOGUE_MAX_AGE_SECONDS the old rows are served while new ones are built in the background."""
    global _snapshot
    key = _freshness_key()
    snap = _snapshot
    if snap is None or snap.key != key:
        with _lock:
            snap = _snapshot
            if snap is None or snap.key != key:
                snap = _snapshot = _build(key)
    elif time.monotonic() - snap.built_at > CATALOGUE_MAX_AGE_SECONDS and not _refreshing.is_set():
        _refreshing.set()
        threading.Thread(target=_refresh, args=(key,), name="zoo-catalogue-refresh", daemon=True).start()
    return snap.rows


def warm_catalogue() -> threading.Thread:
    """Build the rows in a background thread (at start-up), so that the first request finds them ready.

    The app joins the thread at shut-down: a thread outliving its app could read the settings of whatever
    environment comes next (as in a test suite) and cache them."""

    def run() -> None:
        try:
            catalogue()
        except Exception:
            logger.warning("could not build the zoo catalogue at start-up", exc_info=True)

    thread = threading.Thread(target=run, name="zoo-catalogue-warm", daemon=True)
    thread.start()
    return thread


@router.get("", response_model=Page[WeightSetPublic])
def list_zoo(
    filter: Annotated[str | None, Query(max_length=200, description="A glob over names, e.g. 'convnext*'.")] = None,
    available: Annotated[bool, Query(description="Only weight sets whose weights are on this machine.")] = False,
    limit: Annotated[int, Query(ge=1, le=2000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Page[WeightSetPublic]:
    """The catalogue (embedded, user and timm's pretrained tags), filtered and paginated."""

    rows: list[WeightSetPublic] | tuple[WeightSetPublic, ...] = catalogue()
    if filter:
        pattern = filter.lower()
        rows = [r for r in rows if fnmatch.fnmatchcase(r.name.lower(), pattern)]
    if available:
        rows = [r for r in rows if r.weights_present]
    return Page(data=list(rows[offset : offset + limit]), count=len(rows))


@router.get("/sets", response_model=ZooSetsPublic)
def zoo_sets() -> ZooSetsPublic:
    """Named zoo sets and their members."""

    return ZooSetsPublic(sets=sets())


@router.get("/{name}", response_model=WeightSetPublic)
def show_model(name: str) -> WeightSetPublic:
    """One weight set with its facts (source, checksum, preprocessing, licence)."""

    return weight_set_public(get_weight_set(name[:300]))
