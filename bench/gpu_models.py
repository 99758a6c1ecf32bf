"""Per-model embedding throughput on a GPU: our pipeline against timm's own inference-benchmark method.

    python bench/gpu_models.py [--n 10000] [--models tf_efficientnet_lite0.in1k,resnet50,...]

timm's `benchmark.py` times inference as: the model in eval mode, channels-last, bf16 autocast, one
random batch already on the GPU, warm-up steps, then timed forward passes between CUDA
synchronisations. `bare` below is that method, at the model's own input size and our batch size.
`ours` is `selection.embed.embed_split` over `--n` Fashion-MNIST images: decoding and resizing
(DataLoader workers), host-to-device copies, normalisation on the GPU and the forward pass, once with
an empty decoded cache (`cold`: what the first model of a geometry pays) and once with the decoded
split cached (`warm`: every further model of that geometry). Embedded models load their ImageNet
weights; the other architectures are random-weight timm models (throughput does not depend on the
weights). Writes bench/results/<name>.csv with the ratios ours / bare (target 0.8).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import timm
import torch
from _results import write_rows
from timm.data import resolve_data_config

from zooens import zoo
from zooens.selection.datasets import load_dataset
from zooens.selection.decoded import DecodedCache, DecodeKey, geometry
from zooens.selection.embed import batch_size_for, embed_split, resolve_num_workers

MODELS = (
    "tf_efficientnet_lite0.in1k",
    "tf_efficientnet_lite1.in1k",
    "tf_efficientnet_lite2.in1k",
    "resnet50",
    "convnext_tiny",
    "vit_base_patch16_224",
)


def build(name: str) -> tuple[torch.nn.Module, dict]:
    if name.startswith("tf_efficientnet_lite"):  # the embedded zoo: its ImageNet weights
        return zoo.create_model(name, num_classes=0), zoo.data_config(name)
    model = timm.create_model(name, pretrained=False, num_classes=0)
    cfg = resolve_data_config(model=model)
    return model, {
        k: cfg[k] for k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode") if k in cfg
    }


def bare_images_per_s(model: torch.nn.Module, cfg: dict, batch: int, device: str, steps: int) -> float:
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    x = torch.randn((batch, *cfg["input_size"]), device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(10):
            model(x)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps):
            model(x)
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--device", default="cuda")
    p.add_argument("--name", default="gpu_models")
    args = p.parse_args()
    torch.backends.cudnn.benchmark = True
    split = load_dataset("fashion-mnist").split("train").subset(np.arange(args.n))
    workers = resolve_num_workers("auto", args.device)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model, cfg = build(name)
        batch = batch_size_for(args.device, cfg)
        bare = bare_images_per_s(model, cfg, batch, args.device, args.steps)
        with tempfile.TemporaryDirectory() as tmp:
            cache = DecodedCache(tmp, memory_bytes=64 * 1024**3, disk_bytes=0)
            key = DecodeKey("bench-fmnist", "train", geometry(cfg))
            timings = []
            for _ in range(2):  # cold: decode while embedding; warm: the decoded split from memory
                torch.cuda.synchronize()
                t = time.perf_counter()
                embed_split(
                    model,
                    cfg,
                    split,
                    batch_size=batch,
                    device=args.device,
                    num_workers=workers,
                    progress=False,
                    decode_key=key,
                    decoded=cache,
                )
                torch.cuda.synchronize()
                timings.append(time.perf_counter() - t)
        cold, warm = (args.n / s for s in timings)
        rows.append(
            {
                "model": name,
                "resolution": cfg["input_size"][-1],
                "batch": batch,
                "images": args.n,
                "workers": workers,
                "bare_images_per_s": round(bare, 1),
                "ours_cold_images_per_s": round(cold, 1),
                "ours_warm_images_per_s": round(warm, 1),
                "ratio_cold": round(cold / bare, 3),
                "ratio_warm": round(warm / bare, 3),
                "gpu": torch.cuda.get_device_name(),
            }
        )
        write_rows(args.name, rows, echo=False)
        print(rows[-1], flush=True)
    write_rows(args.name, rows, echo=False)


if __name__ == "__main__":
    main()
