"""The zoo catalogue over HTTP: every weight set (embedded, user, timm's ~1,800 pretrained tags), filtered and paged.

The rows are the read side's cached catalogue (`zooens.service.reports.catalogue`, shared with the dashboard's Zoo
page; the app warms it at start-up so that no request pays for it).
"""

from __future__ import annotations

import fnmatch
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from zooens.service.api.deps import read_access
from zooens.service.api.schemas import Page, WeightSetPublic, ZooSetsPublic
from zooens.service.reports import catalogue, weight_set_public
from zooens.zoo import get_weight_set
from zooens.zoo import zoo_sets as sets

router = APIRouter(prefix="/zoo", tags=["zoo"], dependencies=[Depends(read_access)])


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
