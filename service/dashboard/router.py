"""Dashboard pages, served by the API's FastAPI app at `/` and `/dashboard/...`.

Pages are Jinja2 templates from package data; most data comes from the `/api/v1` JSON
endpoints through a little vanilla JS, all of it in static files (the Content-Security-Policy
allows no inline script or style). What the pages read on the server comes from the read side
the API uses too, `zooens.service.reports`: the zoo catalogue (~1,800 entries, one cache for
both), filtered and paginated here; a dataset's registry row (classes, counts) and its
thumbnails, made once and served from disk (no image is decoded in a request); each finished
job's stored ranking audit (`jobs.ranking_audit`). plotly.js is served from the installed
`plotly` package: no CDN.

With ZOOENS_PROTECT_READS, browsers sign in once (`POST /dashboard/session`): the token goes
into an HttpOnly, SameSite=Strict cookie that authorises reads (GET/HEAD) only; writes still
need the `Authorization: Bearer` header (the app's guard middleware). The token check and the
cookie's name are `zooens.service.auth`'s, shared with the API.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

import plotly
from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool

from zooens.ensemble import get_strategy, strategy_names
from zooens.errors import NotFoundError, ZooensError
from zooens.pipeline.params import JobParams
from zooens.service import reports
from zooens.service.auth import SESSION_COOKIE, token_is_valid
from zooens.service.thumbnails import THUMB_SIZE
from zooens.settings import get_settings
from zooens.zoo import zoo_sets

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
PAGE_SIZES = (25, 50, 100, 200)
MAX_ID = 2**31 - 1

router = APIRouter(include_in_schema=False, tags=["dashboard"])


def _static_url(name: str) -> str:
    return f"/dashboard/static/{name}"


def breakable(text: object) -> Markup:
    """A long identifier (a model name) that wraps at its separators, never mid-word, and at a `.` or `@` first:
    each dot-separated part is an inline block (it moves to the next line whole while it fits one), inside which
    `<wbr>` follows each `_`, `-`, `/` and `:` (a part wider than the cell wraps there). Escaped. The pages'
    `breakable` in common.js builds the same."""
    parts = [p for p in re.split(r"(?<=[.@])", str(text)) if p]
    return Markup("<wbr>").join(
        Markup('<span class="name-part">{}</span>').format(
            Markup("<wbr>").join(escape(piece) for piece in re.split(r"(?<=[_\-/:])", part) if piece)
        )
        for part in parts
    )


_env = Environment(loader=PackageLoader("zooens.service.dashboard", "templates"), autoescape=select_autoescape())
_env.globals["static"] = _static_url
_env.filters["breakable"] = breakable
templates = Jinja2Templates(env=_env)


def _page(request: Request, name: str, active: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context = {"active": active, "protect_reads": get_settings().protect_reads, **context}
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _not_found(request: Request, message: str) -> HTMLResponse:
    return _page(request, "error.html", "", status_code=404, title="Not found", message=message)


# --------------------------------------------------------------------------------------
# Static files


@router.get("/dashboard/static/plotly.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(PLOTLY_JS, media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})


@router.get("/dashboard/static/{name}")
def static_file(name: str) -> FileResponse:
    if "/" in name or "\\" in name or "\x00" in name or name.startswith(".") or not (STATIC_DIR / name).is_file():
        raise HTTPException(404, f"No static file {name[:100]!r}.")
    path = STATIC_DIR / name
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
def job_page(request: Request, job_id: Annotated[int, PathParam(ge=1, le=MAX_ID)]) -> HTMLResponse:
    return _page(request, "job.html", "jobs", job_id=job_id, plotly_url=_static_url("plotly.min.js"))


MAX_COMPARED = 8


@router.get("/dashboard/compare", response_class=HTMLResponse)
def compare_page(request: Request, jobs: Annotated[str, Query(max_length=200)] = "") -> HTMLResponse:
    """Two or more jobs side by side: their ensembles and rankings, read by the page from the jobs API."""
    parts = [p for p in re.split(r"[\s,]+", jobs) if p]
    ids = [int(p) for p in parts if p.isdigit() and 1 <= int(p) <= MAX_ID]
    ids = list(dict.fromkeys(ids))
    if len(ids) != len(parts) or not 2 <= len(ids) <= MAX_COMPARED:
        return _page(
            request,
            "error.html",
            "jobs",
            status_code=400,
            title="Nothing to compare",
            message=f"Compare takes 2 to {MAX_COMPARED} job ids, e.g. /dashboard/compare?jobs=1,2; "
            f"got {jobs[:80]!r}. Tick the jobs on the Jobs page.",
        )
    return _page(request, "compare.html", "jobs", job_ids=ids)


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
    return _page(
        request,
        "submit.html",
        "submit",
        strategies=ordered_strategies(strategies),
        zoo_sets=sets + ["available"],
        sweeps={name: strategy_default_sweep(name) for name in strategies},
        fields=submit_fields(),
    )


STRATEGY_ORDER = ("auto", "linear", "concat", "film", "patch", "lora", "kron", "aft", "full")
"""The Submit form's order of strategies: `auto` first, then from the cheapest (a head on frozen features) through
the adapters to training every weight; a strategy not listed here comes before `aft` and `full`, by name."""


def ordered_strategies(names: list[str]) -> list[str]:
    known = [n for n in STRATEGY_ORDER if n in names]
    others = sorted(n for n in names if n not in STRATEGY_ORDER)
    cut = next((i for i, n in enumerate(known) if n in ("aft", "full")), len(known))
    return known[:cut] + others + known[cut:]


@dataclass(frozen=True)
class FormField:
    """A `JobParams` field as the Submit form shows it: its name, default, description and (for a closed set of
    values) its choices."""

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()


SUBMIT_FIELDS = ("k", "n_train", "n_val", "augmentation", "preprocessing", "small_classes", "taps")


def submit_fields() -> dict[str, FormField]:
    """The Submit form's extra `JobParams` fields, read from the model itself: defaults, help and choices stay
    the API's."""
    out = {}
    for name in SUBMIT_FIELDS:
        info = JobParams.model_fields[name]
        choices: tuple[str, ...] = ()
        if get_origin(info.annotation) is Literal:
            choices = tuple(str(c) for c in get_args(info.annotation))
        out[name] = FormField(name, info.default, info.description or "", choices)
    return out


def strategy_default_sweep(name: str) -> dict[str, str]:
    """A strategy's own default learning rates and steps as the form shows them ("" when it has none to show:
    'auto' takes the default of the strategy it picks on the worker's device)."""
    if name == "auto":
        return {"learning_rates": "", "steps": ""}
    try:
        sweep = get_strategy(name).default_sweep
    except Exception:  # the form still works; the placeholder says "strategy default"
        logger.warning("could not read the default sweep of strategy %r", name, exc_info=True)
        return {"learning_rates": "", "steps": ""}
    return {
        "learning_rates": ", ".join(f"{v:g}" for v in sweep.learning_rates),
        "steps": ", ".join(str(v) for v in sweep.steps),
    }


# --------------------------------------------------------------------------------------
# Ranking audits across jobs: how well kNN and LogME predicted the fine-tuned order


AUDIT_PREDICTORS = ("knn", "logme", "imagenet_top1", "num_params")
PREDICTOR_LABELS = {
    "knn": "kNN",
    "logme": "LogME",
    "imagenet_top1": "ImageNet top-1 (static prior)",
    "num_params": "parameter count (static prior)",
}
SHORT_PREDICTOR_LABELS = {"knn": "kNN", "logme": "LogME", "imagenet_top1": "top-1 prior", "num_params": "size prior"}
DATA_PREDICTORS = ("knn", "logme")
"""Predictors that look at the job's data."""
STATIC_PRIORS = ("imagenet_top1", "num_params")
"""Predictors that only read the catalogue: the same order for every dataset."""
AUDIT_FIGURES = ("spearman", "kendall", "regret")
MAX_AUDITED_JOBS = 1000


def _figure(predictor: dict[str, Any] | None, figure: str) -> tuple[float | None, str | None]:
    """One figure of a predictor's audit (`selection.audit.PredictorAudit.to_dict`) and why it is missing."""
    if predictor is None:
        return None, "no audit for this predictor"
    if figure == "regret":
        return predictor.get("regret"), predictor.get("regret_reason")
    corr = predictor.get(figure) or {}
    return corr.get("value"), corr.get("reason")


def compare_predictors(a: dict[str, Any] | None, b: dict[str, Any] | None) -> int:
    """1 when audit `a` ordered the fine-tuned models better than `b`, -1 when `b` did, 0 when no figure tells them
    apart: the higher Spearman rho, then the higher Kendall tau, then the lower regret (equal within 1e-9 or
    undefined: the next figure). The job page's `comparePredictors` applies the same rule."""
    if a is None or b is None:
        return 0
    for figure, sign in (("spearman", 1), ("kendall", 1), ("regret", -1)):
        x, y = _figure(a, figure)[0], _figure(b, figure)[0]
        if x is None or y is None or abs(x - y) <= 1e-9:
            continue
        return 1 if (x - y) * sign > 0 else -1
    return 0


def better_predictor(predictors: dict[str, Any]) -> str | None:
    """Which of kNN and LogME ordered the fine-tuned models better (`compare_predictors`); None when no figure
    tells them apart. The job page's `betterPredictor` applies the same rule."""
    knn, logme = predictors.get("knn"), predictors.get("logme")
    if knn is None or logme is None:
        return None
    verdict = compare_predictors(knn, logme)
    return None if verdict == 0 else ("knn" if verdict > 0 else "logme")


def _best_of(predictors: dict[str, Any], names: tuple[str, ...]) -> str | None:
    """The best of `names` among the audited predictors (the first on a tie), None when none is audited."""
    best = None
    for name in names:
        if predictors.get(name) is None:
            continue
        if best is None or compare_predictors(predictors[name], predictors[best]) > 0:
            best = name
    return best


def data_versus_prior(predictors: dict[str, Any]) -> dict[str, str | None] | None:
    """Whether looking at the data beat the static priors: the best of kNN and LogME against the best of the
    ImageNet top-1 and parameter-count priors, by `compare_predictors`. {"data": name, "prior": name, "winner":
    "data" | "prior" | None (neither)}; None when the audit lacks either side. The job page's `dataVersusPrior`
    applies the same rule."""
    data, prior = _best_of(predictors, DATA_PREDICTORS), _best_of(predictors, STATIC_PRIORS)
    if data is None or prior is None:
        return None
    verdict = compare_predictors(predictors[data], predictors[prior])
    return {"data": data, "prior": prior, "winner": None if verdict == 0 else ("data" if verdict > 0 else "prior")}


@dataclass(frozen=True)
class AuditRow:
    """One finished job's ranking audit as the summary page shows it."""

    job_id: int
    dataset_id: int
    dataset: str | None
    audited_models: int
    figures: dict[str, dict[str, tuple[float | None, str | None]]]  # predictor -> figure -> (value, reason)
    better: str | None
    versus_prior: dict[str, str | None] | None = None  # `data_versus_prior`


def audit_row(job_id: int, dataset_id: int, dataset: str | None, audit: dict[str, Any]) -> AuditRow:
    predictors = audit.get("predictors") or {}
    audited = audit.get("audited_models")
    if audited is None:
        audited = len(audit.get("finetuned_accuracy") or {})
    return AuditRow(
        job_id=job_id,
        dataset_id=dataset_id,
        dataset=dataset,
        audited_models=int(audited),
        figures={p: {f: _figure(predictors.get(p), f) for f in AUDIT_FIGURES} for p in AUDIT_PREDICTORS},
        better=better_predictor(predictors),
        versus_prior=data_versus_prior(predictors),
    )


def audit_means(rows: list[AuditRow]) -> dict[str, dict[str, tuple[float | None, int]]]:
    """predictor -> figure -> (mean over the jobs where it is defined, how many jobs that is)."""
    out: dict[str, dict[str, tuple[float | None, int]]] = {}
    for p in AUDIT_PREDICTORS:
        out[p] = {}
        for f in AUDIT_FIGURES:
            values = [r.figures[p][f][0] for r in rows if r.figures[p][f][0] is not None]
            out[p][f] = (sum(values) / len(values) if values else None, len(values))
    return out


@router.get("/dashboard/audit", response_class=HTMLResponse)
def audit_page(request: Request) -> HTMLResponse:
    """Every finished job's ranking audit (the newest `MAX_AUDITED_JOBS` jobs), read from the registry, and the
    mean of each figure over them."""
    audits, total = reports.ranking_audits(MAX_AUDITED_JOBS)
    rows = [audit_row(a.job_id, a.dataset_id, a.dataset, a.audit) for a in audits]
    wins = {p: sum(r.better == p for r in rows) for p in DATA_PREDICTORS}
    compared = [r.versus_prior for r in rows if r.versus_prior is not None]
    prior_wins = {w: sum(v["winner"] == w for v in compared) for w in ("data", "prior")}
    return _page(
        request,
        "audit.html",
        "audit",
        rows=rows,
        means=audit_means(rows),
        wins=wins,
        prior_wins=prior_wins,
        prior_compared=len(compared),
        predictors=PREDICTOR_LABELS,
        short_labels=SHORT_PREDICTOR_LABELS,
        data_predictors=DATA_PREDICTORS,
        figures=AUDIT_FIGURES,
        truncated=total > MAX_AUDITED_JOBS,
        limit=MAX_AUDITED_JOBS,
    )


# --------------------------------------------------------------------------------------
# Zoo catalogue: filtered and paginated here


_FAMILY_PREFIXES = ("tf_", "tv_", "timm_", "test_")


def architecture_family(arch: str) -> str:
    """The family an architecture belongs to: `tf_efficientnet_lite0` -> `efficientnet`, `resnet50d` -> `resnet`."""
    name = arch.lower()
    for prefix in _FAMILY_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix) :]
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
    upstream: str | None = None
    gflops: float | None = None
    imagenet_top1: float | None = None


def _zoo_row(ws: reports.WeightSetPublic) -> ZooRow:
    """A page row from the catalogue's public row of a weight set (the API's answer too)."""
    size = ws.input_size
    return ZooRow(
        name=ws.name,
        arch=ws.arch,
        family=architecture_family(ws.arch),
        origin=ws.origin,
        input_size=int(size[-1]) if size else None,
        num_params=ws.num_params,
        embed_dim=ws.embed_dim,
        weights_present=bool(ws.weights_present),
        upstream_data=ws.upstream_data,
        upstream=ws.upstream,
        gflops=ws.gflops,
        imagenet_top1=ws.imagenet_top1,
    )


_zoo_lock = threading.Lock()
_zoo_cache: dict[str, Any] = {"source": None, "rows": []}


def catalogue_rows() -> list[ZooRow]:
    """Every weight set as a page row, derived once from the read side's cached catalogue (the API's too: one
    cache for both)."""

    public = reports.catalogue()
    with _zoo_lock:
        if _zoo_cache["source"] is not public:
            _zoo_cache.update(source=public, rows=sorted((_zoo_row(ws) for ws in public), key=lambda r: r.name))
        return _zoo_cache["rows"]


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
    upstream: str = "",
    members: set[str] | None = None,
) -> list[ZooRow]:
    """Rows matching every given filter; `q` matches name or architecture, case-insensitive; `members`: the names
    of a zoo set."""
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
        if upstream and r.upstream != upstream:
            continue
        if members is not None and r.name not in members:
            continue
        out.append(r)
    return out


def _optional_number(text: str | None, kind=float):
    if text is None or text.strip() == "":
        return None
    try:
        value = kind(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


MAX_PULL_MODELS = 64
"""The API's limit on models per pull: the Pull-all button offers at most this many."""


def _set_members(name: str, sets: dict[str, list[str]], rows: list[ZooRow]) -> set[str] | None:
    """The catalogue names of zoo set `name` (None: no such set); a member given as a bare architecture counts as
    the weight set of that architecture the catalogue lists first."""
    if name not in sets:
        return None
    names = {r.name for r in rows}
    out = set()
    for member in sets[name]:
        if member in names:
            out.add(member)
        else:
            out.update(r.name for r in rows if r.arch == member and r.name.startswith(member + "."))
    return out


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
    upstream: Annotated[str, Query(max_length=40)] = "",
    zoo_set: Annotated[str, Query(alias="set", max_length=100)] = "",
    page: int = Query(1, ge=1, le=MAX_ID),
    per_page: int = Query(50, ge=1, le=MAX_ID),
) -> HTMLResponse:
    rows = catalogue_rows()
    per_page = per_page if per_page in PAGE_SIZES else 50
    size = _optional_number(input_size, int)
    lo, hi = _optional_number(min_params), _optional_number(max_params)
    try:
        sets = dict(zoo_sets())
    except Exception:
        logger.warning("could not list zoo sets", exc_info=True)
        sets = {}
    members = _set_members(zoo_set, sets, rows) if zoo_set else None
    matched = filter_zoo(
        rows,
        q=q,
        family=family,
        origin=origin,
        input_size=size,
        min_params_m=lo,
        max_params_m=hi,
        weights=weights,
        upstream=upstream,
        members=members if zoo_set else None,
    )
    if zoo_set and members is None:
        matched = []  # an unknown set matches nothing (the select offers only known ones)
    missing = [r.name for r in matched if not r.weights_present and r.origin == "catalogue"]
    pages = max(1, math.ceil(len(matched) / per_page))
    page = min(page, pages)
    shown = matched[(page - 1) * per_page : page * per_page]
    filters = {
        "q": q,
        "family": family,
        "origin": origin,
        "input_size": input_size or "",
        "min_params": min_params or "",
        "max_params": max_params or "",
        "weights": weights,
        "upstream": upstream,
        "set": zoo_set,
        "per_page": per_page,
    }
    return _page(
        request,
        "zoo.html",
        "zoo",
        rows=shown,
        total=len(rows),
        matched=len(matched),
        page=page,
        pages=pages,
        filters=filters,
        families=sorted({r.family for r in rows}),
        origins=sorted({r.origin for r in rows}),
        input_sizes=sorted({r.input_size for r in rows if r.input_size}),
        page_sizes=PAGE_SIZES,
        available=sum(r.weights_present for r in rows),
        sized=sum(r.num_params is not None for r in rows),
        upstreams=sorted({r.upstream for r in rows if r.upstream}),
        zoo_sets=sorted(sets),
        missing=missing,
        max_pull=MAX_PULL_MODELS,
    )


# --------------------------------------------------------------------------------------
# Datasets: counts per split and class, thumbnails


@router.get("/dashboard/datasets", response_class=HTMLResponse)
def datasets_page(request: Request) -> HTMLResponse:
    return _page(request, "datasets.html", "datasets")


@router.get("/dashboard/datasets/{dataset_id}", response_class=HTMLResponse)
def dataset_page(
    request: Request,
    dataset_id: Annotated[int, PathParam(ge=1, le=MAX_ID)],
    split: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    """Classes and counts from the registry row; thumbnails made once (at registration, or here for a dataset
    registered before thumbnails existed) and then only linked: no dataset is loaded per view."""
    try:
        dataset = reports.dataset_facts(dataset_id)
    except NotFoundError as exc:
        return _not_found(request, str(exc))
    classes: list[str] = [str(c) for c in dataset.classes]
    split_names = reports.split_names(dataset.counts)
    counts = {s: [int((dataset.counts.get(s) or {}).get(c, 0)) for c in classes] for s in split_names}
    samples: dict[str, list[list[int]]] = {}
    try:
        samples = reports.dataset_samples(dataset)
    except ZooensError as exc:  # the page still shows the counts; the thumbnails say why they are missing
        logger.warning("no thumbnails for dataset %d: %s", dataset_id, exc)
    sample_split = (
        split
        if split in split_names
        else ("train" if "train" in split_names else (split_names[0] if split_names else ""))
    )
    shown = samples.get(sample_split) or [[] for _ in classes]
    return _page(
        request,
        "dataset.html",
        "datasets",
        dataset=dataset,
        classes=classes,
        splits=split_names,
        counts=counts,
        totals={s: sum(c) for s, c in counts.items()},
        sample_split=sample_split,
        samples=shown,
        thumb_size=THUMB_SIZE,
    )


@router.get("/dashboard/datasets/{dataset_id}/images/{split}/{index}.png")
def dataset_thumbnail(
    dataset_id: Annotated[int, PathParam(ge=1, le=MAX_ID)],
    split: Annotated[str, PathParam(max_length=64)],
    index: Annotated[int, PathParam(ge=0, le=MAX_ID)],
) -> Response:
    """A thumbnail made at registration, served from disk as it is (no decoding per request; CSS scales it)."""

    try:
        path = reports.thumbnail_path(dataset_id, split, index)
    except NotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})


# --------------------------------------------------------------------------------------
# Sign-in (ZOOENS_PROTECT_READS): a read-only session cookie for page navigation and images


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, no host, no `//`): an open redirect would help phishing."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/dashboard/jobs"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/dashboard/jobs"
    return target


def _signin_response(request: Request, message: str, status_code: int, next_url: str) -> HTMLResponse:
    return _page(
        request,
        "signin.html",
        "",
        status_code=status_code,
        title="Sign in",
        message=message,
        next_url=_safe_next(next_url),
    )


async def unauthorised_page(scope: dict[str, Any], message: str) -> HTMLResponse:
    """The guard middleware's answer to a page or image request without a valid token: 401 and the sign-in form."""
    request = Request(scope)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = _signin_response(request, message, 401, target)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


@router.get("/dashboard/session", response_class=HTMLResponse)
def signin_page(request: Request, next: str = Query("/dashboard/jobs", max_length=2000)) -> HTMLResponse:
    return _signin_response(request, "", 200, next)


@router.post("/dashboard/session", response_class=HTMLResponse)
async def sign_in(
    request: Request,
    token: Annotated[str, Form(max_length=512)],
    next: Annotated[str, Form(max_length=2000)] = "/dashboard/jobs",
) -> Response:
    """Check the token and keep it in an HttpOnly, SameSite=Strict cookie (Secure over https) that authorises
    page and image reads only; the guard never accepts the cookie for a write."""
    plain = token.strip()
    if not plain or not await run_in_threadpool(token_is_valid, plain):
        return _signin_response(
            request, "The API token is unknown or revoked; create one with `zooens tokens create NAME`.", 401, next
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE, plain, httponly=True, samesite="strict", path="/", secure=request.url.scheme == "https"
    )
    return response


@router.post("/dashboard/session/end")
def sign_out(request: Request) -> Response:
    """Forget the session cookie."""
    response = RedirectResponse("/dashboard/session", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return response
