"""Embedding throughput: our pipeline (`embed_split`: transform, DataLoader, channels-last,
inference mode) against a bare timm forward pass of the same model, batch and resolution
over tensors preprocessed beforehand.

    .venv/bin/python bench/embed_throughput.py [--model tf_efficientnet_lite0.in1k] [--resolution 224] [--n 256] [--batch 32]

Writes bench/results/embed_throughput.csv. Target: ratio (ours / bare) >= 0.9. The bare pass is
timed twice, as timm's default (NCHW) and channels-last, so that `ratio_vs_channels_last` isolates
the pipeline's own overhead (decoding, resizing, batching) from the memory-format gain.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from _results import write_rows

import torch
from timm.data import create_transform

from zooens import zoo
from zooens.selection.datasets import load_dataset
from zooens.selection.embed import embed_split



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tf_efficientnet_lite0.in1k")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.manual_seed(0)
    split = load_dataset("fashion-mnist").split("train").subset(torch.arange(args.n).numpy())
    model = zoo.create_model(args.model)
    cfg = zoo.data_config(args.model, resolution=args.resolution)
    tf = create_transform(**cfg, is_training=False)
    tensors = torch.stack([tf(split.image(i)) for i in range(len(split))])
    bare_model = zoo.create_model(args.model).eval()

    def bare(channels_last: bool = False) -> float:
        m = bare_model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        x = tensors.contiguous(memory_format=torch.channels_last) if channels_last else tensors
        t = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(x), args.batch):
                m(x[i : i + args.batch])
        return time.perf_counter() - t

    def ours() -> float:
        t = time.perf_counter()
        embed_split(model, cfg, split, batch_size=args.batch, progress=False)
        return time.perf_counter() - t

    bare(), ours()  # warm-up
    t_bare = min(bare() for _ in range(args.repeats))
    t_bare_cl = min(bare(True) for _ in range(args.repeats))
    t_ours = min(ours() for _ in range(args.repeats))
    row = {
        "model": args.model, "resolution": args.resolution, "batch": args.batch, "images": args.n,
        "bare_images_per_s": round(args.n / t_bare, 1), "ours_images_per_s": round(args.n / t_ours, 1),
        "bare_channels_last_images_per_s": round(args.n / t_bare_cl, 1),
        "ratio": round(t_bare / t_ours, 3), "ratio_vs_channels_last": round(t_bare_cl / t_ours, 3),
        "threads": torch.get_num_threads(),
    }
    write_rows("embed_throughput", [row])


if __name__ == "__main__":
    main()
