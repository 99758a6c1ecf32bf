"""`zooens run`: the whole pipeline in the foreground, stored in the registry."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from zooens.service.cli._common import (
    escape,
    fail_on_error,
    is_quiet,
    make_console,
    parse_floats,
    parse_ints,
    parse_strategy_options,
)
from zooens.service.cli.jobs import run_here


@fail_on_error
def run(
    dataset: str = typer.Option(
        "fashion-mnist",
        "--dataset",
        "-d",
        help="Built-in name (fashion-mnist, digits) or a path (ImageFolder dir, .npz, .csv).",
    ),
    zoo: str = typer.Option(
        "embedded",
        "--zoo",
        "-z",
        help="Zoo set: 'embedded', 'user', a glob like 'convnext*', or comma-separated names.",
    ),
    data: Path | None = typer.Option(None, "--data", help="An ImageFolder directory; overrides --dataset."),
    top_k: int = typer.Option(3, "--top-k", help="How many of the best-ranked models to fine-tune."),
    k: int = typer.Option(10, "--k", help="Neighbours of the kNN score."),
    strategies: str = typer.Option(
        "auto",
        "--strategies",
        help="Comma-separated fine-tuning strategies; 'auto' is 'full' on a GPU, 'linear' on a CPU.",
    ),
    augmentation: str = typer.Option(
        "auto",
        "--augmentation",
        help="auto, none, flip, crop or crop_flip; 'auto' flips only data that declares "
        'flips label-preserving (zooens.json: {"flip_preserves_label": true}).',
    ),
    lr: str | None = typer.Option(None, "--lr", help="Comma-separated learning rates (default: each strategy's)."),
    steps: str | None = typer.Option(
        None, "--steps", help="Comma-separated step counts (default: each strategy's)."
    ),
    resolution: int | None = typer.Option(None, "--resolution", help="Input resolution override (pixels)."),
    preprocessing: str = typer.Option(
        "model",
        "--preprocessing",
        help="model (each model's own resize and centre crop) or resize (straight to "
        "the input size, no crop, bilinear: VTAB's reference).",
    ),
    small_classes: str = typer.Option(
        "error", "--small-classes", help="A class with fewer than two training examples: error, warn or allow."
    ),
    ensemble_size: int = typer.Option(10, "--ensemble-size", help="Most members of the greedy ensemble."),
    n_train: int = typer.Option(
        800, "--n-train", help="Training examples drawn from train when there is no val split."
    ),
    n_val: int = typer.Option(200, "--n-val", help="Validation examples drawn from train when there is no val split."),
    max_test: int | None = typer.Option(
        None, "--max-test", help="Evaluate on a seeded subsample of the test split."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Batch size of the sweep (default: each strategy's)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of every random choice."),
    max_gflops: float | None = typer.Option(
        None,
        "--max-gflops",
        help="Inference budget: the ensemble's GFLOPs per image (distinct "
        "forward passes; a shared frozen backbone counts once).",
    ),
    max_latency_ms: float | None = typer.Option(
        None,
        "--max-latency-ms",
        help="Inference budget: the ensemble's summed batch-1 latency (ms) on the worker's device.",
    ),
    audit_ranking: int = typer.Option(
        0,
        "--audit-ranking",
        help="Also fine-tune N models beyond the top-K with linear, to check the "
        "ranking (Spearman, Kendall, regret); the ensemble stays top-K.",
    ),
    taps: str = typer.Option(
        "none", "--taps", help="none, or auto: add each model's last few stages (model@layer) as candidates."
    ),
    option: list[str] | None = typer.Option(
        None,
        "--option",
        "-o",
        help='A strategy option STRATEGY.KEY=VALUE (JSON value), e.g. film.head="lda"; repeatable.',
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    wide: bool = typer.Option(False, "--wide", help="Every column of every table (default: what fits 80 columns)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Embed, rank, fine-tune the top-K, build the greedy ensemble and report test accuracy."""
    from zooens.selection.datasets import load_dataset
    from zooens.service.db.session import session_scope, upgrade_to_head
    from zooens.service.jobs import default_worker_id, parse_params, register_dataset, submit_job

    started = time.perf_counter()
    source = str(data.resolve()) if data is not None else dataset
    if data is None and Path(dataset).exists():
        source = str(Path(dataset).resolve())
    params = parse_params(
        top_k=top_k,
        k=k,
        strategies=[x.strip() for x in strategies.split(",") if x.strip()],
        learning_rates=parse_floats(lr),
        steps=parse_ints(steps),
        batch_size=batch_size,
        resolution=resolution,
        ensemble_size=ensemble_size,
        n_train=n_train,
        n_val=n_val,
        max_test=max_test,
        seed=seed,
        augmentation=augmentation,
        preprocessing=preprocessing,
        small_classes=small_classes,
        max_gflops=max_gflops,
        max_latency_ms=max_latency_ms,
        audit_ranking=audit_ranking,
        taps=taps,
        strategy_options=parse_strategy_options(option or []),
    )
    ds = load_dataset(source)
    upgrade_to_head()
    worker_id = default_worker_id("cli")
    with session_scope() as s:  # bad data or a bad zoo records nothing
        ds_row = register_dataset(s, source, ds)
        job_id = submit_job(s, ds_row.id, zoo, params, claim_for=worker_id).id
    if not as_json and not (quiet or is_quiet()):
        make_console().print(
            f"[bold]job {job_id}[/bold]: dataset {escape(ds.name)} ({escape(source)}), zoo {escape(zoo)}"
        )
    run_here(job_id, worker_id, quiet=quiet, as_json=as_json, wide=wide, started=started)
