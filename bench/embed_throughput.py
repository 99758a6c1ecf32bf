"""Zoo-ranking throughput: our ranking embed path against bare timm forwards, in one run.

    .venv/bin/python bench/embed_throughput.py [--zoo embedded] [--resolution 112] [--n-train 800]
        [--n-val 200] [--batch N] [--workers 0] [--forward eager,frozen] [--repeats 5]

For each model of the zoo (default the embedded three, at `make run`'s 112 px, Fashion-MNIST
800 train + 200 val images) it times:

- **ours**: `embed_with_cache` over train and val, as an embed unit does: decoding included,
  with a cold decoded cache and a cold embedding cache (fresh directories each repeat), but warm
  Python and models (each model built and run once before timing; the kept-model LRU holds the
  whole zoo, so no build is timed);
- `--forward eager` runs the timm model itself, so the ratio measures what the pipeline (decode,
  normalise, caches) costs on top of the forwards; `frozen` runs the TorchScript copy the pipeline uses
  on a CPU for datasets of `Settings.embed_freeze_min_images` images or more (traced in the warm-up);
- **bare**: timm channels-last forwards in inference mode over tensors decoded and normalised
  beforehand by timm's own eval transform, same models, resolution, batch and split batching.

Each repeat times, model by model, ours then bare (bare then ours on odd repeats), so both see
the machine alike; `ratio` = bare / ours time is taken per pair and its median over `--repeats`
reported, with the spread (`ratio_min`, `ratio_max`) and the median throughputs. Writes
bench/results/embed_throughput.csv: one row per model (the first model of a geometry pays its
decode) and a `zoo` row (the whole zoo's time per repeat; target ratio >= 0.95). `--workers 0,1,2`
repeats ours for each DataLoader worker count (the rows say which); that is how
`num_workers='auto'` was chosen for CPU hosts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_rows
from timm.data import create_transform

from zooens import zoo
from zooens.selection.cache import EmbeddingCache
from zooens.selection.datasets import ImageDataset, load_dataset
from zooens.selection.embed import batch_size_for, built_model, embed_with_cache
from zooens.settings import get_settings


def bench_dataset(n_train: int, n_val: int) -> ImageDataset:
    """The first n_train + n_val Fashion-MNIST training images as train and val."""
    full = load_dataset("fashion-mnist")
    train = full.split("train")
    return ImageDataset(
        "fashion-mnist-bench",
        full.classes,
        {
            "train": train.subset(np.arange(n_train), "train"),
            "val": train.subset(np.arange(n_train, n_train + n_val), "val"),
        },
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", default="embedded")
    p.add_argument("--resolution", type=int, default=112)
    p.add_argument("--n-train", type=int, default=800)
    p.add_argument("--n-val", type=int, default=200)
    p.add_argument("--batch", type=int, default=0, help="images per forward (default: `batch_size_for`)")
    p.add_argument("--workers", default="0", help="comma-separated DataLoader worker counts to time")
    p.add_argument(
        "--forward",
        default="eager,frozen",
        help="comma-separated: 'eager' (the timm model, as bare) and/or 'frozen' (the TorchScript copy "
        "a CPU embedding uses for datasets of Settings.embed_freeze_min_images or more)",
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    settings = get_settings()
    models = zoo.resolve_zoo(args.zoo)
    settings.embed_model_cache_size = max(settings.embed_model_cache_size, len(models))
    ds = bench_dataset(args.n_train, args.n_val)
    splits = ("train", "val")
    n_images = sum(len(ds.split(s)) for s in splits)
    cfgs = {ws.name: zoo.data_config(ws, resolution=args.resolution) for ws in models}
    batch = {ws.name: args.batch or batch_size_for(args.device, cfgs[ws.name]) for ws in models}
    built = {ws.name: built_model(ws) for ws in models}  # warm: the timed path finds them kept
    inputs = {}
    for ws in models:
        tf = create_transform(**cfgs[ws.name], is_training=False)
        inputs[ws.name] = {
            s: torch.stack([tf(ds.split(s).image(i)) for i in range(len(ds.split(s)))]).contiguous(
                memory_format=torch.channels_last
            )
            for s in splits
        }

    def bare(name: str, limit: int | None = None) -> float:
        m = built[name].to(args.device).eval().to(memory_format=torch.channels_last)
        t = time.perf_counter()
        with torch.inference_mode():
            for s in splits:
                x = inputs[name][s][:limit]
                for i in range(0, len(x), batch[name]):
                    m(x[i : i + batch[name]].to(args.device))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t

    def ours(ws, cache: EmbeddingCache, variant: tuple[int, str], data: ImageDataset = ds) -> float:
        settings.num_workers = variant[0]
        settings.embed_freeze_min_images = 0 if variant[1] == "frozen" else 2**62
        t = time.perf_counter()
        for s in splits:
            embed_with_cache(
                ws,
                data,
                s,
                cache=cache,
                resolution=args.resolution,
                device=args.device,
                batch_size=batch[ws.name],
                progress=False,
            )
        return time.perf_counter() - t

    variants = [(int(w), f) for f in args.forward.split(",") for w in args.workers.split(",")]
    for ws in models:  # warm-up: first forwards allocate, first DataLoaders start, frozen copies are traced
        bare(ws.name, limit=max(batch.values()))
    warm = ImageDataset(
        "warm-up", ds.classes, {s: ds.split(s).subset(np.arange(max(batch.values())), s) for s in splits}
    )
    with tempfile.TemporaryDirectory(prefix="zooens-bench-cache-") as tmp:
        for v in variants:
            for ws in models:
                ours(ws, EmbeddingCache(Path(tmp) / f"warm-{v[0]}-{v[1]}"), v, warm)
    # Paired and interleaved: in each repeat, each model's `ours` (a fresh cache per repeat and variant:
    # the first model of a geometry pays its decode) and its `bare` run back to back, their order
    # alternating between repeats, so drift in the machine's speed hits both alike. A ratio is taken
    # per pair; the figures are the medians over repeats.
    t_ours = {v: {ws.name: [] for ws in models} for v in variants}
    t_bare = {ws.name: [] for ws in models}
    for r in range(args.repeats):
        roots = {v: Path(tempfile.mkdtemp(prefix="zooens-bench-cache-")) for v in variants}
        try:
            for ws in models:
                steps: list[tuple[int, str] | None] = [*variants, None]  # None: bare
                for v in steps if r % 2 == 0 else steps[::-1]:
                    if v is None:
                        t_bare[ws.name].append(bare(ws.name))
                    else:
                        t_ours[v][ws.name].append(ours(ws, EmbeddingCache(roots[v]), v))
        finally:
            for root in roots.values():
                shutil.rmtree(root, ignore_errors=True)
    load = os.getloadavg()[0]
    rows = []

    def row(scope: str, n_models: int, v: tuple[int, str], ours_s: list[float], bare_s: list[float]) -> dict:
        ratios = [b / o for b, o in zip(bare_s, ours_s, strict=False)]
        return {
            "scope": scope,
            "forward": v[1],
            "workers": v[0],
            "resolution": args.resolution,
            "batch": batch.get(scope, "/".join(str(batch[ws.name]) for ws in models)),
            "images": n_images,
            "models": n_models,
            "device": args.device,
            "repeats": len(ratios),
            "ours_images_x_models_per_s": round(n_images * n_models / statistics.median(ours_s), 1),
            "bare_images_x_models_per_s": round(n_images * n_models / statistics.median(bare_s), 1),
            "ratio": round(statistics.median(ratios), 3),
            "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3),
            "threads": torch.get_num_threads(),
            "load_avg_1min": round(load, 2),
        }

    for v in variants:
        for ws in models:
            rows.append(row(ws.name, 1, v, t_ours[v][ws.name], t_bare[ws.name]))
        zoo_ours = [sum(t_ours[v][ws.name][r] for ws in models) for r in range(args.repeats)]
        zoo_bare = [sum(t_bare[ws.name][r] for ws in models) for r in range(args.repeats)]
        rows.append(row("zoo", len(models), v, zoo_ours, zoo_bare))
    write_rows("embed_throughput", rows)


if __name__ == "__main__":
    main()
