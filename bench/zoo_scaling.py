"""How ranking cost grows: with the size of the zoo (3, 12, 48 models on 1,000 images) and with
the size of the data (1k, 10k, 50k images for a fixed 3-model zoo), Fashion-MNIST at 64 px.

    .venv/bin/python bench/zoo_scaling.py [--quick] [--device cpu] [--resolution 64]
                                          [--zoo-sizes 3 12 48] [--data-sizes 1000 10000 50000]

The zoo is real timm architectures with seeded random weights registered as user models under a
temporary ZOOENS_HOME (`zooens.zoo.testing.register_random_model`); model i is `--archs[i % 3]`
with seed i, so every zoo size has the same mix of architectures and per-model seconds compare.
Each zoo size starts from an empty embedding cache; each model is ranked by
`zooens.selection.ranking.score_model` (embedding, decode included, then LOO kNN and LogME on the
train split), and the kNN and LogME parts are timed again on their own from the cached embeddings.

One CSV row per point (bench/results/zoo_scaling.csv): curve (`zoo` or `data`), zoo size, images,
total seconds, seconds per model, milliseconds per image and model, `per_model_vs_first` (this
point's seconds per model over the first point's of its curve: flat in the zoo size is 1.0), kNN
seconds and LogME seconds (summed over the zoo), LOO queries.
With matplotlib (the `bench` extra) also bench/results/zoo_scaling.png. `--quick`: zoo sizes 3
and 12, data 1k and 5k, for a smoke run.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _results import RESULTS, write_rows

from zooens.selection.cache import EmbeddingCache
from zooens.selection.datasets import ImageDataset, load_dataset
from zooens.selection.embed import clear_built_models, embed_with_cache
from zooens.selection.knn import knn_loo, logme_score
from zooens.selection.ranking import score_model
from zooens.settings import get_settings
from zooens.zoo.testing import register_random_model

logger = logging.getLogger("zoo_scaling")

ARCHS = ["mobilenetv3_small_050", "lcnet_050", "resnet10t"]


def register_zoo(size: int, archs: list[str], weights: Path) -> list[str]:
    """`size` distinct user models: arch i % len(archs), seed i (registered once, reused)."""
    names = []
    for i in range(size):
        arch = archs[i % len(archs)]
        name = f"{arch}.seed{i}"
        if not (weights / f"{name}.safetensors").exists():
            register_random_model(name, arch, weights, seed=i)
        names.append(name)
    return names


def fashion_subset(n: int, seed: int = 0) -> ImageDataset:
    """The first `n` of a seeded permutation of Fashion-MNIST's training split, as a train-only dataset."""
    full = load_dataset("fashion-mnist")
    train = full.split("train")
    if n > len(train):
        raise SystemExit(f"Fashion-MNIST has {len(train)} training images, fewer than {n}.")
    idx = np.sort(np.random.default_rng(seed).permutation(len(train))[:n])
    return ImageDataset(f"fashion-mnist-{n}", full.classes, {"train": train.subset(idx, "train")})


def rank(names: list[str], ds: ImageDataset, cache_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Rank `names` on `ds` from an empty cache; the kNN and LogME parts re-timed from the cache."""
    cache = EmbeddingCache(cache_dir)
    clear_built_models()  # every point builds its models, as a fresh worker would
    y = ds.split("train").labels
    started = time.perf_counter()
    scores = [
        score_model(name, ds, k=args.k, cache=cache, resolution=args.resolution, device=args.device, progress=False)
        for name in names
    ]
    total = time.perf_counter() - started
    knn_s = logme_s = 0.0
    for name in names:
        emb = embed_with_cache(
            name, ds, "train", cache=cache, resolution=args.resolution, device=args.device, progress=False
        ).embeddings
        t = time.perf_counter()
        knn_loo(emb, y, args.k, device=args.device)
        knn_s += time.perf_counter() - t
        t = time.perf_counter()
        logme_score(emb, y)
        logme_s += time.perf_counter() - t
    return {
        "zoo_size": len(names),
        "n_images": len(y),
        "total_s": round(total, 2),
        "s_per_model": round(total / len(names), 3),
        "ms_per_image_model": round(1000 * total / (len(names) * len(y)), 4),
        "knn_s": round(knn_s, 3),
        "logme_s": round(logme_s, 3),
        "knn_queries": scores[0].knn_queries,
    }


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Seconds per model against zoo size, and total/kNN seconds against images (log-log)."""
    try:
        import matplotlib  # optional: the `bench` extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return None
    zoo = [r for r in rows if r["curve"] == "zoo"]
    data = [r for r in rows if r["curve"] == "data"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot([r["zoo_size"] for r in zoo], [r["s_per_model"] for r in zoo], "o-", label="seconds per model")
    a.set_xlabel("models in the zoo")
    a.set_ylabel(f"seconds per model ({zoo[0]['n_images'] if zoo else '?'} images)")
    a.set_xscale("log")
    a.set_xticks([r["zoo_size"] for r in zoo], [str(r["zoo_size"]) for r in zoo])
    a.minorticks_off()
    a.set_ylim(bottom=0)
    a.set_title("per-model cost against zoo size")
    a.legend()
    xs = [r["n_images"] for r in data]
    b.loglog(xs, [r["total_s"] for r in data], "o-", label="ranking, total")
    b.loglog(xs, [r["knn_s"] for r in data], "s-", label="LOO kNN")
    b.loglog(xs, [r["logme_s"] for r in data], "^-", label="LogME")
    b.set_xticks(xs, [f"{x:,}" for x in xs])
    b.minorticks_off()
    b.set_xlabel("training images")
    b.set_ylabel(f"seconds ({data[0]['zoo_size'] if data else '?'}-model zoo)")
    b.set_title("cost against data size")
    b.legend()
    device = rows[0]["device"] if rows else ""
    fig.suptitle(f"zoo ranking cost, {device}, {rows[0]['resolution'] if rows else ''} px")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="zoo sizes 3 and 12, data 1k and 5k")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--zoo-sizes", type=int, nargs="+", default=[3, 12, 48])
    p.add_argument("--zoo-images", type=int, default=1_000)
    p.add_argument("--data-sizes", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    p.add_argument("--archs", nargs="+", default=ARCHS)
    p.add_argument(
        "--name",
        default=None,
        help="CSV and PNG name under bench/results/ (default zoo_scaling, zoo_scaling_quick with --quick)",
    )
    args = p.parse_args()
    if args.quick:
        args.zoo_sizes, args.data_sizes = [3, 12], [1_000, 5_000]
    args.name = args.name or ("zoo_scaling_quick" if args.quick else "zoo_scaling")
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="zooens-zoo-scaling-"))
    os.environ["ZOOENS_HOME"] = str(work / "home")  # user models and caches of this run only
    get_settings.cache_clear()
    names = register_zoo(max(args.zoo_sizes + [len(args.archs)]), args.archs, work / "weights")
    common = {
        "device": args.device,
        "resolution": args.resolution,
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if str(args.device).startswith("cuda") else "",
    }
    rows: list[dict[str, Any]] = []
    ds = fashion_subset(args.zoo_images)
    rank(names[:1], ds, work / "warm-up", args)  # imports, first model build, allocator: out of the timings
    for size in args.zoo_sizes:
        rows.append({"curve": "zoo", **rank(names[:size], ds, work / f"cache-zoo{size}", args), **common})
        print(rows[-1], flush=True)
    fixed = names[: len(args.archs)]
    for n in args.data_sizes:
        data_ds = ds if n == args.zoo_images else fashion_subset(n)
        rows.append({"curve": "data", **rank(fixed, data_ds, work / f"cache-data{n}", args), **common})
        print(rows[-1], flush=True)
    for curve in ("zoo", "data"):
        first = next(r for r in rows if r["curve"] == curve)
        for r in rows:
            if r["curve"] == curve:
                r["per_model_vs_first"] = round(r["s_per_model"] / first["s_per_model"], 3)
    write_rows(args.name, rows)
    png = plot(rows, RESULTS / f"{args.name}.png")
    if png:
        print(f"plot: {png}")


if __name__ == "__main__":
    main()
