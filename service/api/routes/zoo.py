"""The zoo catalogue over HTTP: every weight set (embedded, user, timm's ~1,800 pretrained tags) with the facts users
choose by (upstream category, size, GFLOPs, ImageNet top-1), filtered and paged; and pulls of missing weights from
the Hugging Face hub, run in the background of the server for a token holder.

The rows are the read side's cached catalogue (`zooens.service.reports.catalogue`, shared with the dashboard's Zoo
page; the app warms it at start-up so that no request pays for it). Pulls are tracked by `zooens.service.pulls`.
"""

from __future__ import annotations

import fnmatch
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from zooens.errors import ConfigError, NotFoundError
from zooens.service import pulls
from zooens.service.api.deps import TokenDep, read_access
from zooens.service.api.errors import COMMON_ERRORS, described, documented
from zooens.service.api.schemas import (
    MAX_PULL_ENTRIES,
    Page,
    PullPublic,
    WeightSetPublic,
    ZooPullCreate,
    ZooSetsPublic,
)
from zooens.service.reports import catalogue, weight_set_public
from zooens.zoo import UPSTREAM_CATEGORIES, get_weight_set, resolve_zoo
from zooens.zoo import zoo_sets as sets

router = APIRouter(prefix="/zoo", tags=["zoo"], dependencies=[Depends(read_access)], responses=COMMON_ERRORS)

MAX_PARAMS_MILLIONS = 1_000_000.0
"""The largest parameter bound accepted, in millions (far above any model)."""

MAX_PULL_MODELS = MAX_PULL_ENTRIES
"""At most this many models in one pull, once names, globs and sets are expanded."""


def set_members(name: str) -> set[str]:
    """The weight-set names of the zoo set `name` (a member given as a bare architecture counts as its weight
    set); ConfigError (422) naming the sets for an unknown one."""
    known = sets()
    if name not in known:
        raise ConfigError(f"Unknown zoo set {name!r}; choose among {', '.join(sorted(known))}.")
    out: set[str] = set()
    for member in known[name]:
        out.add(member)
        try:
            out.add(get_weight_set(member).name)
        except Exception:  # noqa: BLE001  a member that does not resolve matches by its own name only
            pass
    return out


def filter_rows(
    rows: list[WeightSetPublic] | tuple[WeightSetPublic, ...],
    *,
    pattern: str | None = None,
    available: bool = False,
    upstream: str | None = None,
    min_params: float | None = None,
    max_params: float | None = None,
    zoo_set: str | None = None,
) -> list[WeightSetPublic]:
    """The rows passing every filter given (order kept). A parameter bound (millions) drops rows whose count is
    unknown."""
    if upstream is not None and upstream not in UPSTREAM_CATEGORIES:
        raise ConfigError(f"Unknown upstream category {upstream!r}; choose among {', '.join(UPSTREAM_CATEGORIES)}.")
    if min_params is not None and max_params is not None and min_params > max_params:
        raise ConfigError(f"min_params ({min_params:g} M) is above max_params ({max_params:g} M).")
    members = set_members(zoo_set) if zoo_set else None
    glob = pattern.lower() if pattern else None
    out = []
    for r in rows:
        if glob and not fnmatch.fnmatchcase(r.name.lower(), glob):
            continue
        if available and not r.weights_present:
            continue
        if upstream is not None and r.upstream != upstream:
            continue
        if min_params is not None and (r.num_params is None or r.num_params < min_params * 1e6):
            continue
        if max_params is not None and (r.num_params is None or r.num_params > max_params * 1e6):
            continue
        if members is not None and r.name not in members:
            continue
        out.append(r)
    return out


_PARAMS_DOC = "Parameters of the embedder, in millions ({}); rows whose count is unknown are left out."


@router.get(
    "",
    response_model=Page[WeightSetPublic],
    responses=described(422, "A filter value is out of range or unknown (category, zoo set)."),
)
def list_zoo(
    filter: Annotated[str | None, Query(max_length=200, description="A glob over names, e.g. 'convnext*'.")] = None,
    available: Annotated[bool, Query(description="Only weight sets whose weights are on this machine.")] = False,
    upstream: Annotated[
        str | None,
        Query(max_length=40, description="Upstream category: " + ", ".join(UPSTREAM_CATEGORIES) + "."),
    ] = None,
    min_params: Annotated[
        float | None, Query(ge=0, le=MAX_PARAMS_MILLIONS, allow_inf_nan=False, description=_PARAMS_DOC.format("≥"))
    ] = None,
    max_params: Annotated[
        float | None, Query(ge=0, le=MAX_PARAMS_MILLIONS, allow_inf_nan=False, description=_PARAMS_DOC.format("≤"))
    ] = None,
    set: Annotated[
        str | None, Query(max_length=100, description="A zoo set's name (see /zoo/sets), e.g. 'diverse-small'.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Page[WeightSetPublic]:
    """The catalogue (embedded, user and timm's pretrained tags) with its facts, filtered and paginated."""

    rows = filter_rows(
        catalogue(),
        pattern=filter,
        available=available,
        upstream=upstream,
        min_params=min_params,
        max_params=max_params,
        zoo_set=set,
    )
    return Page(data=list(rows[offset : offset + limit]), count=len(rows))


@router.get("/sets", response_model=ZooSetsPublic)
def zoo_sets() -> ZooSetsPublic:
    """Named zoo sets and their members."""

    return ZooSetsPublic(sets=sets())


def _pull_public(record: pulls.ServerPull) -> PullPublic:
    return PullPublic.model_validate(record.to_dict())


@router.post(
    "/pull",
    response_model=PullPublic,
    status_code=202,
    responses={
        202: {"description": "The pull started (or a running pull already fetches every model asked for)."},
        **described(404, "A name, glob or set matches no weight set."),
        **described(422, "The body is invalid, or names more than the limit of models."),
        **described(
            503, "The server is offline (HF_HUB_OFFLINE) or cannot reach the hub, or the database cannot be reached."
        ),
        **documented(507),
    },
)
def start_pull(body: ZooPullCreate, _: TokenDep) -> PullPublic:
    """Fetch the missing weights of these models from the Hugging Face hub in the server's background; answers
    202 with the pull, whose progress `GET /zoo/pulls/{id}` reports. Weights already here count as present. A model
    already being pulled is not fetched twice: when that is every model asked for, the running pull is returned."""
    names: dict[str, None] = {}
    for entry in body.models:
        for ws in resolve_zoo(entry.strip()):
            if ws.is_tap:
                continue  # a layer tap has its model's weights: pull the model
            names[ws.name] = None
            if len(names) > MAX_PULL_MODELS:
                raise ConfigError(
                    f"{', '.join(body.models)[:200]} expands to more than {MAX_PULL_MODELS} models; pull at most "
                    f"{MAX_PULL_MODELS} at a time (name them, or use a narrower pattern)."
                )
    if not names:
        raise ConfigError("These entries name no weight set with weights of its own to pull.")
    record, _started = pulls.start_pull(list(names))  # OfflineError: 503 (`service/api/errors.py`)
    return _pull_public(record)


@router.get(
    "/pulls/{pull_id}",
    response_model=PullPublic,
    responses=described(404, "No such pull in this server (it may have restarted)."),
)
def show_pull(pull_id: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]) -> PullPublic:
    """A pull's status (running, succeeded, failed), bytes fetched per file and, once done, each model's outcome."""
    record = pulls.get_pull(pull_id)
    if record is None:
        raise NotFoundError(f"No pull {pull_id!r} in this server; pulls are kept in memory until it restarts.")
    return _pull_public(record)


@router.get("/{name}", response_model=WeightSetPublic, responses=described(404, "No such weight set."))
def show_model(name: str) -> WeightSetPublic:
    """One weight set with its facts (source, checksum, preprocessing, licence, upstream, size, GFLOPs, top-1)."""

    return weight_set_public(get_weight_set(name[:300]))
