"""Embedding a split with a zoo model: decoded once per preprocessing, batched, cached on disk.

The pipeline, and why:

- **Decode once per geometry.** Images are decoded and resized to uint8 once per (dataset,
  split, geometry of the eval transform) and shared by every model with that geometry
  (`zooens.selection.decoded`); `ToTensor` and `Normalize` run on the device, per batch, giving
  exactly timm's float inputs. A zoo of N models with one config decodes the data once.
- **Decoding overlaps the forward pass.** A cold split is decoded in a DataLoader with
  `resolve_num_workers` processes (`Settings.num_workers`, 'auto': all but one core on a CUDA
  host; none on a CPU-only host, where a worker takes a core from the forward pass: measured with
  bench/embed_throughput.py on the 2-core reference machine, decoding being paid once per zoo);
  on CUDA batches are pinned and copied `non_blocking`, outputs stay on the device until the end,
  so the host queues the next batch while the GPU runs.
- **bf16 autocast on CUDA, channels-last, inference mode.** The batch size on CUDA comes from the
  free GPU memory, on the CPU from the input size (`batch_size_for`: small batches, whose activations
  stay in the caches).
- **On a CPU, a frozen TorchScript copy** of the model embeds datasets of at least
  `Settings.embed_freeze_min_images` images (`frozen_model`: batch norm folded, ops fused; 1.3-1.8x
  the eager model's speed for EfficientNet-Lite at 112 px, checked against the eager model before use,
  eager when it does not trace). The embeddings then differ from the eager model's by float rounding
  (~1e-6 relative), which no ranking, probe or ensemble can see; the choice depends only on the
  dataset's size and the setting, so the same inputs give the same embeddings.
- **A built model is kept** for the next split of the same model (`built_model`: an LRU of
  `Settings.embed_model_cache_size` models keyed by weight-set name, weights checksum and
  `pretrained`), so embedding train, val and test builds the model once. These models are for
  inference only: nobody may train them.
- **A model and its layer taps share one forward pass** (`family`: `TapFamily`, checked against each
  member's own embedding on a seeded batch before use): ranking a zoo with `--taps auto` embeds each
  split once per model, not once per tap, and caches every member's embeddings under its own key.
- **Embeddings are cached on disk** (`EmbeddingCache`), keyed by model, weights checksum, dataset
  fingerprint, split and the full data config (`embedding_key`): a hit builds no model.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from zooens import zoo
from zooens.cancel import check_cancelled
from zooens.progress import inner_bars, report_inner
from zooens.selection.cache import EmbeddingCache, cache_key
from zooens.selection.datasets import ImageDataset, Split
from zooens.selection.decoded import DecodedCache, DecodeKey, decoded_batches, decoded_cache, mean_std, normalize
from zooens.settings import get_settings
from zooens.zoo import WeightSet

logger = logging.getLogger(__name__)

__all__ = [
    "CPU_BATCH_PIXELS",
    "EmbeddingResult",
    "SplitDataset",
    "batch_size_for",
    "built_model",
    "clear_built_models",
    "embed_split",
    "embed_with_cache",
    "embedding_key",
    "frozen_model",
    "resolve_num_workers",
]

CPU_AUTO_WORKERS = 0
"""`num_workers='auto'` on a CPU-only host: decoding in the main process. On the 2-core reference
machine a worker process competes with the forward pass for the cores, and decoding is paid once
per zoo (bench/embed_throughput.py --workers 0,1,2 measures it)."""

CPU_BATCH_PIXELS = 180_000
"""Pixels per CPU embedding batch (`batch_size_for`). Measured on the 2-core reference machine with
EfficientNet-Lite0/1/2 and ResNet-18 at 64-224 px: batches of 64 at 112 px ran at 0.65-0.75 of the
speed of batches of 8-16, and 0.4 at 224 px, once a batch's activations outgrow the caches; the best
batch held roughly 100,000-200,000 pixels."""

CUDA_BYTES_PER_INPUT_VALUE = 256
"""Budget of GPU memory per input value (3 x H x W) of one image in a bf16 inference forward:
generous for convnets (their widest activations are ~16x the input) and ViTs (~10x)."""


class SplitDataset(torch.utils.data.Dataset):
    """A split's images through a transform, for a DataLoader (fine-tuning and other callers)."""

    def __init__(self, split: Split, transform: Callable[[Any], torch.Tensor]) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.split.image(i))


def _is_cuda(device: str | torch.device) -> bool:
    return str(device).startswith("cuda")


def batch_size_for(device: str, data_cfg: dict[str, Any]) -> int:
    """Embedding batch size for a config's input size.

    On the CPU: the power of two nearest `CPU_BATCH_PIXELS` / (H x W), within 1..64 (16 at 112 px, 4 at
    224 px): small batches keep a forward's activations in the CPU's caches. On CUDA: the largest power
    of two whose inputs' budget (`CUDA_BYTES_PER_INPUT_VALUE`) fits half the free GPU memory, within
    16..1024."""
    _, height, width = data_cfg["input_size"]
    if not _is_cuda(device):
        return int(2 ** min(6, max(0, round(math.log2(CPU_BATCH_PIXELS / (height * width))))))
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    per_image = math.prod(data_cfg["input_size"]) * CUDA_BYTES_PER_INPUT_VALUE
    fits = max(1, int(free * 0.5 // per_image))
    return int(min(1024, max(16, 2 ** int(math.log2(fits)))))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_num_workers(setting: int | str, device: str) -> int:
    """DataLoader decode workers: an int as given; 'auto' all but one core on CUDA, else CPU_AUTO_WORKERS."""
    if setting == "auto":
        return max(0, _cores() - 1) if _is_cuda(device) else CPU_AUTO_WORKERS
    return max(0, int(setting))


_MODELS: OrderedDict[tuple[str, str, bool], nn.Module] = OrderedDict()
_MODELS_LOCK = threading.Lock()


def built_model(ws: WeightSet, *, pretrained: bool = True) -> nn.Module:
    """The embedder (`num_classes=0`) of `ws` in eval mode, kept for the next call (an LRU of
    `Settings.embed_model_cache_size`, keyed by name, weights checksum and `pretrained`).

    For inference only: the same module is returned to every caller."""
    size = get_settings().embed_model_cache_size
    key = (ws.name, zoo.weights_sha256(ws, pretrained=pretrained), pretrained)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is not None:
            _MODELS.move_to_end(key)
            return model.eval()
    model = zoo.create_model(ws, num_classes=0, pretrained=pretrained)
    if size > 0:
        with _MODELS_LOCK:
            _MODELS[key] = model
            while len(_MODELS) > size:
                _MODELS.popitem(last=False)
    return model.eval()


def clear_built_models() -> None:
    """Forget the kept models, eager and frozen (tests, or to free their memory)."""
    with _MODELS_LOCK:
        _MODELS.clear()
        _FROZEN.clear()


_FROZEN: OrderedDict[tuple[Any, ...], nn.Module] = OrderedDict()
FREEZE_RTOL = 1e-3
"""How far (relative to the largest output) a frozen model's embeddings may be from the eager model's on
the check batch; folding batch norm and fusing ops move them by ~1e-6 relative."""


def _same_outputs(ref: Any, got: Any, rtol: float) -> bool:
    """`got` has `ref`'s tensors (one tensor, or a tuple of them), each within `rtol` of `ref`'s largest value."""
    refs = ref if isinstance(ref, tuple) else (ref,)
    gots = got if isinstance(got, tuple) else (got,)
    return len(refs) == len(gots) and all(
        isinstance(g, torch.Tensor)
        and g.shape == r.shape
        and float((g.float() - r.float()).abs().max()) <= rtol * max(1.0, float(r.abs().max()))
        for r, g in zip(refs, gots, strict=True)
    )


def frozen_model(
    ws: WeightSet, model: nn.Module, data_cfg: dict[str, Any], batch_size: int, *, variant: str = ""
) -> nn.Module:
    """`model` (eval, CPU) traced by TorchScript at `data_cfg`'s input size and frozen: batch norm folded
    into the convolutions, weights constant, ops fused by the JIT for inference. Kept like `built_model`
    (an LRU of `Settings.embed_model_cache_size`, keyed by the model's key and the input size).

    A model that does not trace, or whose frozen copy does not give the eager model's embeddings on
    seeded check batches of other values and another size than traced (`FREEZE_RTOL`; data-dependent
    control flow would show here), is used eager, with an INFO log line saying why. `variant` tells apart
    modules built from the same weights (a `TapFamily`: the names of its members); one returning a tuple of
    tensors is checked tensor by tensor."""
    key = (ws.name, zoo.weights_sha256(ws), tuple(data_cfg["input_size"]), variant)
    with _MODELS_LOCK:
        hit = _FROZEN.get(key)
        if hit is not None:
            _FROZEN.move_to_end(key)
            return hit
    started = time.perf_counter()
    example = torch.randn((max(2, batch_size), *data_cfg["input_size"]), generator=torch.Generator().manual_seed(0))
    example = example.contiguous(memory_format=torch.channels_last)
    model = model.eval().to(memory_format=torch.channels_last)
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about shapes read as Python numbers
            frozen = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
            other = torch.rand((1, *example.shape[1:]), generator=torch.Generator().manual_seed(1)) * 4 - 2
            # other values than traced (the negated batch: a branch on a statistic of the input flips),
            # and another batch size (the last batch of a split)
            for x in (-example, other.contiguous(memory_format=torch.channels_last)):
                if not _same_outputs(model(x), frozen(x), FREEZE_RTOL):
                    raise ValueError(f"its frozen copy gives other embeddings than the model at batch {len(x)}")
    except Exception as exc:  # noqa: BLE001 - any tracing failure falls back to the eager model
        logger.info("%s: embedding with the eager model (%s: %s)", ws.name, type(exc).__name__, str(exc)[:200])
        frozen = model
    else:
        logger.info(
            "%s: frozen for inference at %s in %.1f s", ws.name, data_cfg["input_size"], time.perf_counter() - started
        )
    size = get_settings().embed_model_cache_size
    if size > 0:
        with _MODELS_LOCK:
            _FROZEN[key] = frozen
            while len(_FROZEN) > size:
                _FROZEN.popitem(last=False)
    return frozen


def embed_split(
    model: nn.Module,
    data_cfg: dict[str, Any],
    split: Split,
    *,
    batch_size: int | None = None,
    device: str = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "",
    decode_key: DecodeKey | None = None,
    decoded: DecodedCache | None = None,
) -> np.ndarray:
    """float32 embeddings (N, D) of a split: the eval transform of `data_cfg` (decoded to uint8,
    normalised on the device), inference mode, channels-last, bf16 autocast on CUDA.

    With `decode_key` and `decoded` the decoded split comes from, or goes to, that cache."""
    (out,) = _embed_outputs(
        model,
        data_cfg,
        split,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        progress=progress,
        desc=desc,
        decode_key=decode_key,
        decoded=decoded,
        n_outputs=1,
    )
    return out


def _embed_outputs(
    model: nn.Module,
    data_cfg: dict[str, Any],
    split: Split,
    *,
    batch_size: int | None,
    device: str,
    num_workers: int,
    progress: bool,
    desc: str,
    decode_key: DecodeKey | None,
    decoded: DecodedCache | None,
    n_outputs: int,
) -> list[np.ndarray]:
    """`embed_split` for a model returning one tensor (`n_outputs` 1) or a tuple of `n_outputs` tensors (a
    `TapFamily`): one float32 (N, D_i) array per output."""
    cuda = _is_cuda(device)
    batch_size = batch_size or batch_size_for(device, data_cfg)
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    mean, std = mean_std(data_cfg, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    outputs: list[list[torch.Tensor]] = [[] for _ in range(n_outputs)]
    batches = decoded_batches(
        split, data_cfg, batch_size=batch_size, num_workers=num_workers, pin_memory=cuda, key=decode_key, cache=decoded
    )
    with (
        torch.inference_mode(),
        autocast,
        tqdm(
            total=len(split), desc=desc or "embedding", unit="img", disable=not inner_bars(progress), leave=False
        ) as bar,
    ):
        done = 0
        for batch in batches:
            check_cancelled()  # a cancelled job or a unit past its time limit stops within one batch
            got = model(normalize(batch.to(device, non_blocking=cuda), mean, std))
            for i, out in enumerate(got if isinstance(got, tuple) else (got,)):
                if out.ndim > 2:  # models whose pooled output is not flat
                    out = out.flatten(1)
                outputs[i].append(out.float())  # stays on the device: no sync per batch
            bar.update(len(batch))
            done += len(batch)
            report_inner(done, len(split))
    if not outputs[0]:
        return [np.zeros((0, 0), dtype=np.float32) for _ in range(n_outputs)]
    return [torch.cat(out).cpu().numpy().astype(np.float32, copy=False) for out in outputs]


@dataclass
class EmbeddingResult:
    """Embeddings of one split and how they were obtained (`cached`: no forward pass ran)."""

    embeddings: np.ndarray
    cached: bool
    seconds: float
    images_per_s: float | None
    key: str
    path: Path


def embedding_key(
    ws_or_name: str | WeightSet,
    ds: ImageDataset,
    split: str,
    *,
    resolution: int | None = None,
    preprocessing: str = "model",
) -> str:
    """The EmbeddingCache key of `ds[split]` embedded by a model (what `embed_with_cache` uses)."""
    ws = zoo.get_weight_set(ws_or_name) if isinstance(ws_or_name, str) else ws_or_name
    data_cfg = zoo.data_config(ws, resolution=resolution, preprocessing=preprocessing)
    return cache_key(ws.name, zoo.weights_sha256(ws), ds.fingerprint, split, data_cfg)


def embed_with_cache(
    ws_or_name: str | WeightSet,
    ds: ImageDataset,
    split: str,
    *,
    cache: EmbeddingCache,
    resolution: int | None = None,
    preprocessing: str = "model",
    device: str = "cpu",
    batch_size: int | None = None,
    progress: bool = True,
    family: Sequence[str | WeightSet] = (),
) -> EmbeddingResult:
    """Embeddings of `ds[split]`, from the cache when the same inputs were embedded before.

    `preprocessing` as `zoo.PREPROCESSINGS` (the model's own eval transform, or VTAB's plain resize);
    it is part of the data config, so of the cache key. A miss uses the kept model (`built_model`)
    and the decoded split shared by models of the same geometry (under `cache.root / 'decoded'`).

    `family`: other weight sets of the same model (the model itself and its layer taps; others are
    ignored) the caller will want too: on a miss, those not cached yet are embedded in the same forward
    pass (`TapFamily`) and cached under their own keys, so their own calls hit the cache."""
    started = time.perf_counter()
    ws = zoo.get_weight_set(ws_or_name) if isinstance(ws_or_name, str) else ws_or_name
    sp = ds.split(split)
    data_cfg = zoo.data_config(ws, resolution=resolution, preprocessing=preprocessing)
    key = cache_key(ws.name, zoo.weights_sha256(ws), ds.fingerprint, split, data_cfg)
    hit = cache.get(key, n_rows=len(sp))
    if hit is not None:
        logger.info(
            "%s / %s of %s: %d embeddings cached (%s), no forward pass",
            ws.name,
            split,
            ds.name,
            len(hit),
            cache.path(key),
        )
        return EmbeddingResult(hit, True, time.perf_counter() - started, None, key, cache.path(key))
    relatives = _missing_relatives(
        ws, family, ds, split, data_cfg, cache, resolution=resolution, preprocessing=preprocessing
    )
    members = [(ws, key), *relatives]
    if len(members) > 1:
        done = _embed_family(
            members, ds, split, data_cfg, cache=cache, device=device, batch_size=batch_size, progress=progress
        )
        if done is not None:
            emb, seconds = done
            ips = len(sp) / seconds if seconds > 0 else None
            return EmbeddingResult(emb, False, time.perf_counter() - started, ips, key, cache.path(key))
    model = built_model(ws)
    t0 = time.perf_counter()
    (emb,) = _one_pass(
        ws, model, ds, split, data_cfg, cache=cache, device=device, batch_size=batch_size, progress=progress
    )
    seconds = time.perf_counter() - t0
    path = _put(cache, key, emb, ws, ds, split, data_cfg, seconds)
    ips = len(sp) / seconds if seconds > 0 else None
    logger.info("%s / %s: embedded %d images in %.1f s (%.1f img/s)", ws.name, split, len(sp), seconds, ips or 0)
    return EmbeddingResult(emb, False, time.perf_counter() - started, ips, key, path)


def _put(
    cache: EmbeddingCache,
    key: str,
    emb: np.ndarray,
    ws: WeightSet,
    ds: ImageDataset,
    split: str,
    data_cfg: dict[str, Any],
    seconds: float,
    shared_with: list[str] | None = None,
) -> Path:
    meta = {"model": ws.name, "split": split, "dataset": ds.fingerprint, "data_config": data_cfg}
    meta |= {"n": len(ds.split(split)), "seconds": seconds}
    if shared_with:
        meta["shared_pass"] = shared_with  # embedded in one pass with these (`TapFamily`)
    return cache.put(key, emb, meta=meta)


def _missing_relatives(
    ws: WeightSet,
    family: Sequence[str | WeightSet],
    ds: ImageDataset,
    split: str,
    data_cfg: dict[str, Any],
    cache: EmbeddingCache,
    *,
    resolution: int | None,
    preprocessing: str,
) -> list[tuple[WeightSet, str]]:
    """The members of `family` that one pass of `ws`'s model can embed with it (the model and its taps,
    same weights and data config) and that the cache lacks, each with its cache key; no duplicates."""
    out: list[tuple[WeightSet, str]] = []
    seen = {ws.name}
    sha = zoo.weights_sha256(ws)
    for item in family:
        other = zoo.get_weight_set(item) if isinstance(item, str) else item
        if other.name in seen or other.base_name != ws.base_name or zoo.weights_sha256(other) != sha:
            continue
        seen.add(other.name)
        if zoo.data_config(other, resolution=resolution, preprocessing=preprocessing) != data_cfg:
            continue
        other_key = cache_key(other.name, sha, ds.fingerprint, split, data_cfg)
        if other_key not in cache:  # a presence check: the entry's own call reads (and validates) it
            out.append((other, other_key))
    return out


FAMILY_RTOL = 1e-4
"""How far (relative to the largest value) a `TapFamily`'s outputs may be from each member's own embedding on
the check batch: the same operations in the same order, so only float noise."""


def family_model(
    model: nn.Module, arch: str, layers: list[str], *, with_model: bool, data_cfg: dict[str, Any]
) -> nn.Module | None:
    """A `TapFamily` of `model` (unpruned, `num_classes=0`, of timm architecture `arch`): its own embedding
    first when `with_model`, then the taps at `layers`; or None (with an INFO line) when it does not give, on
    a seeded batch, what each member gives alone: the model's forward, and for a tap its pooled stage of
    `forward_intermediates`, as `LayerTap` computes it."""
    try:
        by_module = {t.module: t for t in zoo.tap_layers(arch)}
        taps = [by_module[layer] for layer in layers]
        family = zoo.TapFamily(model, taps, with_model=with_model).eval()
        x = torch.randn((2, *data_cfg["input_size"]), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            got = family(x)
            refs = [model(x)] if with_model else []
            for t in taps:
                (stage,) = model.forward_intermediates(x, indices=[t.index], intermediates_only=True)
                refs.append(zoo.pool_stage(stage))
        if not _same_outputs(tuple(refs), got, FAMILY_RTOL):
            raise ValueError("its outputs differ from the members' own embeddings")
    except Exception as exc:  # noqa: BLE001 - any failure falls back to one pass per member
        logger.info("%s: one pass per tap (%s: %s)", arch, type(exc).__name__, str(exc)[:200])
        return None
    return family


def _embed_family(
    members: list[tuple[WeightSet, str]],
    ds: ImageDataset,
    split: str,
    data_cfg: dict[str, Any],
    *,
    cache: EmbeddingCache,
    device: str,
    batch_size: int | None,
    progress: bool,
) -> tuple[np.ndarray, float] | None:
    """Embed `ds[split]` with every member (a model and/or its taps, with their cache keys) in one forward
    pass of the model and cache each; the first member's embeddings and the pass's seconds, or None when
    the model gives no checked `TapFamily` (the caller then embeds the first member alone)."""
    ordered = sorted(members, key=lambda m: m[0].is_tap)  # the model's own output comes first
    first = ordered[0][0]
    with_model = not first.is_tap
    base = zoo.get_weight_set(first.base_name) if first.is_tap else first
    model = built_model(base)
    layers = [str(ws.layer) for ws, _ in ordered if ws.is_tap]
    family = family_model(model, base.arch, layers, with_model=with_model, data_cfg=data_cfg)
    if family is None:
        return None
    names = [ws.name for ws, _ in ordered]
    t0 = time.perf_counter()
    outs = _one_pass(
        base,
        family,
        ds,
        split,
        data_cfg,
        cache=cache,
        device=device,
        batch_size=batch_size,
        progress=progress,
        desc=f"{base.name} {split} (+{len(layers)} tap{'s' if len(layers) != 1 else ''})",
        variant=",".join(names),
        n_outputs=len(ordered),
    )
    seconds = time.perf_counter() - t0
    for (ws, key), emb in zip(ordered, outs, strict=True):
        _put(cache, key, emb, ws, ds, split, data_cfg, seconds, shared_with=[n for n in names if n != ws.name])
    logger.info(
        "%s / %s: embedded %d images for %s in one pass, %.1f s",
        base.name,
        split,
        len(ds.split(split)),
        ", ".join(names),
        seconds,
    )
    wanted = members[0][0].name
    return next(emb for (ws, _), emb in zip(ordered, outs, strict=True) if ws.name == wanted), seconds


def _one_pass(
    ws: WeightSet,
    model: nn.Module,
    ds: ImageDataset,
    split: str,
    data_cfg: dict[str, Any],
    *,
    cache: EmbeddingCache,
    device: str,
    batch_size: int | None,
    progress: bool,
    desc: str = "",
    variant: str = "",
    n_outputs: int = 1,
) -> list[np.ndarray]:
    """`ds[split]` through `model` (of `ws`'s weights; a `TapFamily` with `variant` and `n_outputs`): frozen on a CPU
    for a dataset of `embed_freeze_min_images` or more (`frozen_model`), the decoded split shared under
    `cache.root / 'decoded'`; one array per output."""
    settings = get_settings()
    if not _is_cuda(device) and sum(len(s) for s in ds.splits.values()) >= settings.embed_freeze_min_images:
        model = frozen_model(ws, model, data_cfg, batch_size or batch_size_for(device, data_cfg), variant=variant)
    return _embed_outputs(
        model,
        data_cfg,
        ds.split(split),
        batch_size=batch_size,
        device=device,
        num_workers=resolve_num_workers(settings.num_workers, device),
        progress=progress,
        desc=desc or f"{ws.name} {split}",
        decode_key=DecodeKey.of(ds.fingerprint, split, data_cfg),
        decoded=decoded_cache(cache.root / "decoded"),
        n_outputs=n_outputs,
    )
