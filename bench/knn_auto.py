"""Does `k="auto"` rank better than a fixed k=10? The ranking audit's kNN predictor under each k.

    .venv/bin/python bench/knn_auto.py    # shapes-200, digits, Fashion-MNIST 1k; writes bench/results/knn_auto.csv

Each dataset is fitted with `k="auto"` (`zooens.fit(record=False)`) on the embedded zoo with its layer taps
(`taps="auto"`: 12 candidates) and `audit_ranking` covering every candidate with `linear`, so the kNN score of every
candidate is judged against its fine-tuned validation accuracy: Kendall's tau-b and Spearman's rho
(`selection.audit`). The fine-tuning does not depend on k (every candidate gets linear's one sweep, the top-K and
the audited alike), so a second fit with `k=10` would differ only in the predictor: by default the k=10 kNN is
re-scored from the embeddings the fit cached (`score_model`, seconds) and audited against the same fine-tuned
accuracies; `--refit` fits again with `k=10` instead (twice the fine-tuning time). The kNN@1 score stored beside
kNN@k is audited too (row `knn1`).

Datasets: `digits` and `fashion-mnist` (10 classes of about 80 training examples: auto resolves to 10 there, the
two rows must agree) and `shapes-200`, a generated many-class few-shot task in the regime auto is for (200 classes,
2 or 3 training examples each, 2 validation examples each, as SUN397 in VTAB-1k): each class is a random
arrangement of coloured shapes on a coloured background, each example that arrangement jittered (positions,
sizes, colours) with pixel noise. The offline VTAB suite (`zooens vtab make-offline-suite`) is not used: its tasks
have 10 or 16 classes of 50-80 examples, where auto is 10 too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from _results import write_rows
from PIL import Image, ImageDraw

SIZE = 64


def _shapes_class(rng: np.random.Generator) -> dict:
    """One class: a background colour and 3-5 shapes (kind, centre, radius, colour)."""
    n = int(rng.integers(3, 6))
    return {
        "background": rng.integers(0, 256, 3),
        "shapes": [
            (int(rng.integers(0, 3)), rng.uniform(10, SIZE - 10, 2), rng.uniform(5, 14), rng.integers(0, 256, 3))
            for _ in range(n)
        ],
    }


def _render(spec: dict, rng: np.random.Generator) -> np.ndarray:
    """One example of a class: the class's arrangement, jittered, with pixel noise."""
    bg = np.clip(spec["background"] + rng.normal(0, 12, 3), 0, 255).astype(int)
    img = Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in bg))
    draw = ImageDraw.Draw(img)
    for kind, centre, radius, colour in spec["shapes"]:
        cx, cy = centre + rng.normal(0, 3, 2)
        r = radius * rng.uniform(0.8, 1.2)
        fill = tuple(int(v) for v in np.clip(colour + rng.normal(0, 20, 3), 0, 255))
        box = [cx - r, cy - r, cx + r, cy + r]
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    pixels = np.asarray(img, dtype=np.float64) + rng.normal(0, 8, (SIZE, SIZE, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def shapes_dataset(n_classes: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, val images, val labels): 2 or 3 training and 2 validation examples a class."""
    rng = np.random.default_rng(seed)
    specs = [_shapes_class(rng) for _ in range(n_classes)]
    train_n = rng.integers(2, 4, n_classes)
    tr_y = np.repeat(np.arange(n_classes), train_n)
    va_y = np.repeat(np.arange(n_classes), 2)
    tr_x = np.stack([_render(specs[c], rng) for c in tr_y])
    va_x = np.stack([_render(specs[c], rng) for c in va_y])
    return tr_x, tr_y, va_x, va_y


def _row(dataset: str, k: str, predictor: str, p: dict, resolved: str, seconds: float) -> dict:
    def value(x: dict) -> float | None:
        return None if x["value"] is None else round(x["value"], 4)

    return {
        "dataset": dataset,
        "k": k,
        "k_used": resolved,
        "predictor": predictor,
        "models": p["n"],
        "kendall": value(p["kendall"]),
        "spearman": value(p["spearman"]),
        "regret_pts": None if p["regret"] is None else round(100 * p["regret"], 2),
        "fit_s": round(seconds, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="shapes-200,digits,fashion-mnist")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--classes", type=int, default=200, help="Classes of the generated shapes dataset.")
    parser.add_argument(
        "--refit",
        action="store_true",
        help="Fit again with k=10 instead of re-scoring the k=10 kNN from the first fit's cached embeddings.",
    )
    args = parser.parse_args()

    os.environ.setdefault("ZOOENS_HOME", tempfile.mkdtemp(prefix="zooens-knn-auto-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import zooens  # after ZOOENS_HOME is set: settings are read on first use
    from zooens.pipeline.params import parse_params
    from zooens.pipeline.splits import prepare_job_dataset
    from zooens.selection.audit import audit_ranking, best_accuracy_per_model
    from zooens.selection.cache import EmbeddingCache
    from zooens.selection.datasets import ImageDataset, Split, load_builtin
    from zooens.selection.ranking import score_model
    from zooens.settings import get_settings

    rows: list[dict] = []
    for dataset in args.datasets.split(","):
        if dataset.startswith("shapes"):
            tr_x, tr_y, va_x, va_y = shapes_dataset(args.classes)
            ds = ImageDataset(
                f"shapes-{args.classes}",
                [f"c{i}" for i in range(args.classes)],
                {"train": Split("train", tr_x, tr_y), "val": Split("val", va_x, va_y)},
            )
        else:
            ds = load_builtin(dataset)
        job = {
            "taps": "auto",
            "resolution": args.resolution,
            "strategies": ["linear"],
            "top_k": args.top_k,
            "audit_ranking": 12,
            "max_test": 500,
            "small_classes": "allow",
        }
        fits = {}
        for k in ("auto", 10) if args.refit else ("auto",):
            started = time.perf_counter()
            fits[k] = (zooens.fit(ds, record=False, zoo="embedded", k=k, progress=False, **job), started)
            fits[k] = (fits[k][0], time.perf_counter() - started)
        fitted, seconds = fits["auto"]
        if fitted.ranking_audit_ is None:
            print(f"{dataset}: no audit", file=sys.stderr)
            return 1
        # the fine-tuned accuracy does not depend on k: the audit fine-tunes every candidate with linear's one sweep
        accuracy = best_accuracy_per_model([(r.model_name, r.val_acc) for r in fitted.runs_ if r.strategy == "linear"])
        predictors = {
            "knn": {r.model_name: r.knn_accuracy for r in fitted.ranking_},
            "knn1": {r.model_name: r.knn1_accuracy for r in fitted.ranking_ if r.knn1_accuracy is not None},
        }
        k_used = " ".join(sorted({str(r.k) for r in fitted.ranking_}))
        if args.refit:
            at10, seconds10 = fits[10]
            knn10 = {r.model_name: r.knn_accuracy for r in at10.ranking_}
        else:  # kNN@10 of the same embeddings, read back from the cache the fit filled
            started = time.perf_counter()
            prepared = prepare_job_dataset(ds, parse_params(**job))
            cache = EmbeddingCache(get_settings().resolved_cache_dir)
            knn10 = {}
            for r in fitted.ranking_:
                score = score_model(
                    r.model_name, prepared, k=10, cache=cache, resolution=args.resolution, progress=False
                )
                if not score.cached:
                    print(f"{dataset}: {r.model_name} was embedded again (not the fit's embeddings)", file=sys.stderr)
                knn10[r.model_name] = score.knn_accuracy
            seconds10 = time.perf_counter() - started
        audit = audit_ranking(accuracy, {**predictors, "knn10": knn10}, top_k=args.top_k).to_dict()["predictors"]
        rows.append(_row(dataset, "auto", "knn", audit["knn"], k_used, seconds))
        rows.append(_row(dataset, "10", "knn", audit["knn10"], "10", seconds10))
        rows.append(_row(dataset, "auto", "knn1", audit["knn1"], "1", seconds))
        path = write_rows("knn_auto", rows, echo=False)  # after each dataset: a slow machine keeps what it did
        for row in rows[-3:]:
            print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    print(f"CSV: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
