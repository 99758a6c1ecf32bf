"""`zooens jobs`: what the registry knows about jobs, and their later lives (resume, retry, delete)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table

from zooens.service.cli._common import (
    CLI_LOG_HANDLER,
    err_console,
    escape,
    fail_on_error,
    is_quiet,
    make_console,
    no_registry_text,
    open_registry,
    registry_exists,
    registry_text,
    resolve_dataset_id,
)

app = typer.Typer(help="Jobs in the registry.", no_args_is_help=True)
console = make_console()  # unbounded when piped: tables are never cut


@app.command("list")
@fail_on_error
def list_(
    status: str = typer.Option(None, help="Only jobs with this status."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Only jobs on this dataset (its name or id)."),
    limit: int = typer.Option(50, help="Most jobs to show."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List jobs, newest first: dataset, status, the ensemble's accuracy (test, else val), duration, strategies."""
    from zooens.service import registry
    from zooens.service.db.session import session_scope
    from zooens.service.reports import job_public

    if not registry_exists():  # an empty answer, and where it looked; a read makes no registry
        err_console.print(escape(no_registry_text()))
        if as_json:
            typer.echo("[]")
        return
    open_registry()
    with session_scope() as s:
        dataset_id = None if dataset is None else resolve_dataset_id(s, dataset)
        jobs, _ = registry.list_jobs(s, status=status, limit=limit if dataset_id is None else 1_000_000)
        jobs = [j for j in jobs if dataset_id is None or j.dataset_id == dataset_id][:limit]
        names = {j.dataset_id: registry.get_dataset(s, j.dataset_id).name for j in jobs}
        rows = []
        for j in jobs:
            ens = registry.get_job_ensemble(s, j.id)
            rows.append(
                {
                    "id": j.id,
                    "dataset_id": j.dataset_id,
                    "dataset": names[j.dataset_id],
                    "zoo": j.zoo,
                    "status": j.status,
                    "stage": j.stage,
                    "strategies": list((j.params or {}).get("strategies") or []),
                    "test_acc": None if ens is None else ens.test_acc,
                    "val_acc": None if ens is None else ens.val_acc,
                    "duration_seconds": job_public(j).duration_seconds,
                    "created_at": j.created_at.isoformat(),
                    "error": j.error,
                }
            )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        which = " ".join(x for x in (status, "jobs" if dataset is None else f"jobs on dataset {dataset!r}") if x)
        console.print(f"No {escape(which)} in the registry at {escape(registry_text())}.")
        return
    from zooens.service.cli._report import pct, seconds_text

    table = Table(title=f"Jobs in {escape(registry_text())}", title_justify="left")
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("dataset", overflow="fold", min_width=7)
    table.add_column("status", no_wrap=True)
    table.add_column("accuracy", justify="right", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("strategies", overflow="fold", min_width=10)
    table.add_column("created", no_wrap=True)
    table.add_column("error", overflow="fold", min_width=5)
    for r in rows:
        if r["test_acc"] is not None:
            accuracy = f"{pct(r['test_acc'])} test"
        elif r["val_acc"] is not None:
            accuracy = f"{pct(r['val_acc'])} val"
        else:
            accuracy = "-"
        state = r["status"] if r["status"] != "running" or not r["stage"] else f"running ({r['stage']})"
        table.add_row(
            str(r["id"]),
            escape(r["dataset"]),
            state,
            accuracy,
            seconds_text(r["duration_seconds"]),
            escape(", ".join(r["strategies"]) or "-"),
            r["created_at"][:16].replace("T", " "),
            escape((r["error"] or "")[:60]),
        )
    console.print(table)


@app.command()
@fail_on_error
def show(
    job_id: int,
    as_json: bool = typer.Option(False, "--json"),
    wide: bool = typer.Option(False, "--wide", help="Every column of every table."),
) -> None:
    """A job's status, ranking, runs and ensemble."""
    from zooens.service.cli._report import print_report
    from zooens.service.db.session import session_scope
    from zooens.service.reports import job_report

    open_registry()
    with session_scope() as s:
        report = job_report(s, job_id).model_dump(mode="json")
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        print_report(report, wide=wide)


@app.command()
@fail_on_error
def cancel(job_id: int) -> None:
    """Ask a job to stop after its current unit."""
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    open_registry()
    with session_scope() as s:
        registry.request_cancel(s, job_id)
    typer.echo(f"cancel requested for job {job_id}")


QUEUE_HELP = "Leave the job in the queue for `zooens worker` instead of running it here."


def interrupted(job_id: int) -> typer.Exit:
    """What Ctrl-C ends with once the job exists: `run_job` has recorded it `cancelled`; say how to go on."""
    err_console.print(
        f"job {job_id} cancelled (Ctrl-C); `zooens jobs resume {job_id}` continues it from its last finished unit."
    )
    return typer.Exit(130)


def report_job(job_id: int, status: str, *, as_json: bool, wide: bool, started: float) -> None:
    """Print the report of a job that ran here (as `zooens run`, `jobs resume` and `jobs retry` do), with the
    seconds since `started`, then fail unless `status` is "succeeded"."""
    from zooens.service.cli._report import print_report
    from zooens.service.db.session import session_scope
    from zooens.service.jobs import require_success
    from zooens.service.reports import job_report

    with session_scope() as s:
        report = job_report(s, job_id).model_dump(mode="json")
    report["seconds"] = round(time.perf_counter() - started, 2)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
    else:
        said = tuple(CLI_LOG_HANDLER.said)  # warnings printed while it ran are not repeated
        print_report(report, wide=wide, show_error=False, said=said)  # require_success says the error, once
    require_success(status, job_id)


QueueFlag = Annotated[bool, typer.Option("--queue", help=QUEUE_HELP)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
WideFlag = Annotated[bool, typer.Option("--wide", help="Every column of every table.")]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def _run_again(
    job_id: int,
    again: Callable[..., Any],
    *,
    queue: bool,
    as_json: bool,
    wide: bool,
    quiet: bool,
    queued: str,
    started: str,
) -> None:
    """`again(session, job_id, claim_for=...)` (resume_job or retry_job) gives the job to run; it is left to
    the workers with `queue`, else claimed and run here. `queued`/`started` are printed with {job} filled."""
    from zooens.service.db.session import session_scope
    from zooens.service.jobs import default_worker_id, run_job

    open_registry()
    worker_id = None if queue else default_worker_id("cli")
    with session_scope() as s:
        run_id = again(s, job_id, claim_for=worker_id).id
    if worker_id is None:
        typer.echo(queued.format(job=run_id))
        return
    quiet = quiet or is_quiet()
    if not as_json and not quiet:
        console.print(started.format(job=run_id))
    began = time.perf_counter()
    try:
        status = run_job(run_id, worker_id=worker_id, progress=not quiet and not as_json)
    except KeyboardInterrupt:
        raise interrupted(run_id) from None
    report_job(run_id, status, as_json=as_json, wide=wide, started=began)


@app.command()
@fail_on_error
def resume(
    job_id: int, queue: QueueFlag = False, as_json: JsonFlag = False, wide: WideFlag = False, quiet: QuietFlag = False
) -> None:
    """Run a failed or cancelled job again from its last finished unit (here, unless --queue)."""
    from zooens.service.jobs.submit import resume_job

    _run_again(
        job_id,
        resume_job,
        queue=queue,
        as_json=as_json,
        wide=wide,
        quiet=quiet,
        queued="job {job} queued again; `zooens worker` runs it from its last finished unit",
        started="[bold]job {job}[/bold]: resumed from its last finished unit",
    )


@app.command()
@fail_on_error
def retry(
    job_id: int, queue: QueueFlag = False, as_json: JsonFlag = False, wide: WideFlag = False, quiet: QuietFlag = False
) -> None:
    """Run a finished job again as a new job (same dataset, models and parameters; the old one is kept)."""
    from zooens.service.jobs.submit import retry_job

    _run_again(
        job_id,
        retry_job,
        queue=queue,
        as_json=as_json,
        wide=wide,
        quiet=quiet,
        queued="job {job} queued (a retry of job " + str(job_id) + "); `zooens worker` runs it",
        started="[bold]job {job}[/bold]: a retry of job " + str(job_id),
    )


@app.command()
@fail_on_error
def delete(job_id: int) -> None:
    """Delete a finished job, its results and its files (cancel a queued or running job first)."""
    from zooens.service import lifecycle
    from zooens.service.db.session import session_scope
    from zooens.settings import get_settings

    open_registry()
    with session_scope() as s:
        lifecycle.delete_job(s, job_id, get_settings())
    typer.echo(f"deleted job {job_id}")
