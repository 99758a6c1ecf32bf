"""`zooens jobs`: what the registry knows about jobs."""
from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from zooens.service.cli._common import fail_on_error

app = typer.Typer(help="Jobs in the registry.", no_args_is_help=True)
console = Console()


@app.command("list")
@fail_on_error
def list_(
    status: str = typer.Option(None, help="Only jobs with this status."),
    limit: int = typer.Option(50, help="Most jobs to show."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List jobs, newest first."""
    from zooens.service import registry
    from zooens.service.db.session import session_scope, upgrade_to_head

    upgrade_to_head()
    with session_scope() as s:
        jobs, _ = registry.list_jobs(s, status=status, limit=limit)
        rows = [
            {"id": j.id, "dataset_id": j.dataset_id, "zoo": j.zoo, "status": j.status, "stage": j.stage,
             "created_at": j.created_at.isoformat(), "error": j.error}
            for j in jobs
        ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="Jobs")
    for col in ["id", "dataset", "zoo", "status", "stage", "created", "error"]:
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["id"]), str(r["dataset_id"]), r["zoo"], r["status"], r["stage"] or "-", r["created_at"][:19], (r["error"] or "")[:60])
    console.print(table)


@app.command()
@fail_on_error
def show(job_id: int, as_json: bool = typer.Option(False, "--json")) -> None:
    """A job's status, ranking, runs and ensemble."""
    from zooens.service.cli._report import print_report
    from zooens.service.db.session import session_scope, upgrade_to_head
    from zooens.service.reports import job_report

    upgrade_to_head()
    with session_scope() as s:
        report = job_report(s, job_id).model_dump(mode="json")
    report["seconds"] = 0.0
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)


@app.command()
@fail_on_error
def cancel(job_id: int) -> None:
    """Ask a job to stop after its current unit."""
    from zooens.service import registry
    from zooens.service.db.session import session_scope, upgrade_to_head

    upgrade_to_head()
    with session_scope() as s:
        registry.request_cancel(s, job_id)
    typer.echo(f"cancel requested for job {job_id}")
