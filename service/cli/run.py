"""`zooens run`: the whole pipeline in the foreground, stored in the registry."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from zooens.service.cli._common import escape, fail_on_error, held_warnings, is_quiet, make_console
from zooens.service.cli._params import job_options, job_params
from zooens.service.cli.jobs import interrupted, report_job


@fail_on_error
@job_options()
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
    *,  # every JobParams field comes here as an option (job_options), received in **job
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    wide: bool = typer.Option(False, "--wide", help="Every column of every table (default: what fits 80 columns)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    **job: Any,
) -> None:
    """Embed, rank, fine-tune the top-K, build the greedy ensemble and report test accuracy."""
    from zooens.selection.datasets import load_dataset
    from zooens.service.jobs import run_here

    started = time.perf_counter()
    source = str(data.resolve()) if data is not None else dataset
    if data is None and Path(dataset).exists():
        source = str(Path(dataset).resolve())
    quiet = quiet or is_quiet()
    submitted: list[int] = []
    # The checks' warnings (sizes drawn in proportion, a small val split) wait until every check passed: a
    # run refused for another reason shows its error alone.
    with held_warnings() as say_warnings:
        params = job_params(job)
        ds = load_dataset(source)

        def on_submitted(job_id: int) -> None:
            submitted.append(job_id)
            if not as_json and not quiet:
                make_console().print(
                    f"[bold]job {job_id}[/bold]: dataset {escape(ds.name)} ({escape(source)}), zoo {escape(zoo)}"
                )
            say_warnings()

        try:
            job_id, status = run_here(
                source, ds, zoo, params, progress=not quiet and not as_json, on_submitted=on_submitted
            )
        except KeyboardInterrupt:
            if not submitted:
                raise
            raise interrupted(submitted[0]) from None
    report_job(job_id, status, as_json=as_json, wide=wide, started=started)
