from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from zooens.service.api.deps import read_access
from zooens.service.api.schemas import Page, WeightSetPublic, ZooSetsPublic
from zooens.zoo import get_weight_set, list_weight_sets
from zooens.zoo import zoo_sets as sets

router = APIRouter(prefix="/zoo", tags=["zoo"], dependencies=[Depends(read_access)])


def weight_set_public(ws) -> WeightSetPublic:
    facts = ws.to_dict()
    size = getattr(ws.input, "input_size", None)
    return WeightSetPublic(
        name=ws.name, arch=ws.arch, tag=ws.tag, origin=ws.origin, weights_present=bool(ws.weights_present),
        input_size=list(size) if size else None, embed_dim=ws.embed_dim, num_params=ws.num_params,
        license=ws.license, upstream_data=ws.upstream_data, facts=facts,
    )


@router.get("", response_model=Page[WeightSetPublic])
def list_zoo(
    filter: Annotated[str | None, Query(max_length=200, description="A glob over names, e.g. 'convnext*'.")] = None,
    available: Annotated[bool, Query(description="Only weight sets whose weights are on this machine.")] = False,
    limit: Annotated[int, Query(ge=1, le=2000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Page[WeightSetPublic]:
    """The catalogue (embedded, user and timm's pretrained tags), filtered and paginated."""

    rows = list_weight_sets(filter, available_only=available)
    return Page(data=[weight_set_public(ws) for ws in rows[offset : offset + limit]], count=len(rows))


@router.get("/sets", response_model=ZooSetsPublic)
def zoo_sets() -> ZooSetsPublic:
    """Named zoo sets and their members."""

    return ZooSetsPublic(sets=sets())


@router.get("/{name}", response_model=WeightSetPublic)
def show_model(name: str) -> WeightSetPublic:
    """One weight set with its facts (source, checksum, preprocessing, licence)."""

    return weight_set_public(get_weight_set(name))
