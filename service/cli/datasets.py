"""`zooens datasets`: built-in and registered datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from zooens.service.cli._common import (
    err_console,
    escape,
    fail_on_error,
    make_console,
    no_registry_text,
    open_registry,
    registry_exists,
    registry_text,
    resolve_dataset_id,
)

app = typer.Typer(help="Datasets: built-ins and those in the registry.", no_args_is_help=True)
console = make_console()  # unbounded when piped: tables are never cut


FORMATS_NOTE = (
    "Any ImageFolder directory (class sub-folders, optionally under train/ val/ test/), a CSV manifest "
    "(path,label[,split]) or an .npz file can be given as a path."
)


def registered_datasets() -> list[dict[str, Any]]:
    """One JSON-able row per dataset recorded in the registry (an error when there is no registry)."""
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    open_registry()
    with session_scope() as s:
        rows, _ = registry.list_datasets(s, limit=1000)
        return [
            {
                "id": r.id,
                "name": r.name,
                "source": r.source,
                "classes": len(r.classes),
                "images": sum(sum(c.values()) for c in r.counts.values()),
                "fingerprint": r.fingerprint[:12],
            }
            for r in rows
        ]


def dataset_summary(spec: str, data: str | None = None) -> dict[str, Any]:
    """`ImageDataset.summary()` of a registered id, a path, a registered name or a built-in name, in that order
    (`data`: an ImageFolder). A name is looked up in the registry only when there is one: a read makes none."""
    from zooens.selection.datasets import BUILTINS, load_dataset

    source = spec
    registered = data is None and (spec.isdigit() or (not Path(spec).exists() and registry_exists()))
    if registered:
        from zooens.errors import NotFoundError
        from zooens.service import registry
        from zooens.service.db.session import session_scope

        open_registry()
        with session_scope() as s:
            try:
                source = registry.get_dataset(s, resolve_dataset_id(s, spec)).source
            except NotFoundError:
                if spec.isdigit() or spec not in BUILTINS:
                    raise
    elif data is None and spec.isdigit():
        open_registry()  # an id, but no registry: say where it looked
    return load_dataset(source, data=data).summary()


@app.command("list")
@fail_on_error
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """Built-in datasets and every dataset recorded in the registry."""
    from zooens.selection.datasets import BUILTINS

    recorded = registered_datasets() if registry_exists() else None
    if as_json:
        typer.echo(json.dumps({"builtins": list(BUILTINS), "registered": recorded or []}, indent=2))
        if recorded is None:
            err_console.print(escape(no_registry_text()))
        return
    console.print("built-in: " + ", ".join(BUILTINS))
    console.print(FORMATS_NOTE)
    if recorded is None:  # an empty answer, and where it looked; a read makes no registry
        console.print(escape(no_registry_text()))
        return
    if not recorded:
        console.print(f"No datasets in the registry at {escape(registry_text())}.")
        return
    table = Table(title=f"Registered datasets ({escape(registry_text())})", title_justify="left")
    for col in ["id", "name", "classes", "images", "fingerprint", "source"]:
        table.add_column(col)
    for r in recorded:
        table.add_row(
            str(r["id"]), escape(r["name"]), str(r["classes"]), str(r["images"]), r["fingerprint"], escape(r["source"])
        )
    console.print(table)


@app.command()
@fail_on_error
def show(
    spec: str = typer.Argument(..., help="A registered dataset's name or id, a built-in name, or a path."),
    data: str = typer.Option(None, "--data", help="An ImageFolder directory to load instead of SPEC."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Classes, counts per class and split, fingerprint."""
    summary = dataset_summary(spec, data)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console.print(
        f"[bold]{escape(summary['name'])}[/bold] ({escape(summary['source'])}), fingerprint {summary['fingerprint']}"
    )
    splits = list(summary["counts"])
    table = Table()
    table.add_column("class")
    for sp in splits:
        table.add_column(sp, justify="right")
    for cls in summary["classes"]:
        table.add_row(escape(cls), *[str(summary["counts"][sp].get(cls, 0)) for sp in splits])
    table.add_row("[bold]total[/bold]", *[str(summary["splits"][sp]) for sp in splits])
    console.print(table)


@app.command()
@fail_on_error
def delete(
    dataset: str = typer.Argument(..., help="A registered dataset's name or id (`zooens datasets list`)."),
    with_jobs: bool = typer.Option(False, "--with-jobs", help="Delete its finished jobs and their files too."),
) -> None:
    """Delete a registered dataset, its stored upload and its thumbnails (refused while a job uses it)."""
    from zooens.service import lifecycle
    from zooens.service.db.session import session_scope
    from zooens.settings import get_settings

    open_registry()
    with session_scope() as s:
        dataset_id = resolve_dataset_id(s, dataset)
        job_ids = lifecycle.delete_dataset(s, dataset_id, get_settings(), with_jobs=with_jobs)
    jobs = f" and its job(s) {', '.join(str(j) for j in job_ids)}" if job_ids else ""
    typer.echo(f"deleted dataset {dataset_id}{jobs}")
