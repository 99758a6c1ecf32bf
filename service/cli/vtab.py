"""`zooens vtab`: the VTAB-1k benchmark in batch."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from zooens.service.cli._common import fail_on_error, make_console
from zooens.service.cli._params import job_options, job_params

app = typer.Typer(help="VTAB-1k: task table, data export, offline suite, batch runs.", no_args_is_help=True)
console = make_console()  # unbounded when piped: tables are never cut


@app.command()
def tasks() -> None:
    """The 19 tasks: group, TFDS builder, classes, splits, label derivation."""
    from zooens.selection.vtab.tasks import TASKS

    table = Table(title="VTAB-1k tasks")
    for col in ["task", "group", "tfds", "classes", "train800", "val200", "test", "label"]:
        table.add_column(col)
    for t in TASKS:
        table.add_row(
            t.name,
            t.group,
            t.tfds_name,
            str(t.num_classes),
            t.train800,
            t.val200,
            t.test_split,
            t.label if t.label != "given" else t.label_feature,
        )
    console.print(table)


@app.command("make-offline-suite")
@fail_on_error
def make_offline_suite_cmd(
    out: Path = typer.Argument(..., help="Folder to write the suite into."),
    seed: int = typer.Option(0, help="Seed of the generated tasks."),
    n_test: int = typer.Option(500, "--n-test", help="Test examples per task."),
) -> None:
    """Write offline stand-in tasks (never VTAB) in the exported layout."""
    from zooens.selection.vtab.offline import make_offline_suite

    for path in make_offline_suite(out, seed=seed, n_test=n_test):
        typer.echo(f"wrote {path}")


@app.command()
@fail_on_error
def export(
    tasks_spec: str = typer.Option("all", "--tasks", help="all, a group, or comma-separated task names."),
    out: Path = typer.Option(..., "--out", help="Folder of the exported layout."),
    tfds_dir: str | None = typer.Option(None, "--tfds-dir", help="TFDS data_dir holding prepared data."),
    tfds_version: list[str] | None = typer.Option(
        None,
        "--tfds-version",
        help="TASK=VERSION: read a TFDS version other than the table's pin (e.g. oxford_iiit_pet=4.0.0); repeatable.",
    ),
) -> None:
    """Write the exported layout from prepared TFDS data (needs `pip install 'zooens[vtab]'`)."""
    from zooens.errors import ConfigError
    from zooens.selection.vtab.sources import export_task
    from zooens.selection.vtab.tasks import resolve_tasks

    versions = {}
    for item in tfds_version or []:
        name, sep, version = item.partition("=")
        if not sep or not name.strip() or not version.strip():
            raise ConfigError(f"Give --tfds-version as TASK=VERSION, e.g. oxford_iiit_pet=4.0.0; got {item!r}.")
        versions[name.strip()] = version.strip()
    tasks = resolve_tasks(tasks_spec)
    unknown = sorted(set(versions) - {t.name for t in tasks})
    if unknown:
        raise ConfigError(f"--tfds-version names {', '.join(unknown)}, which --tasks does not export.")
    for task in tasks:
        typer.echo(f"exported {export_task(task, out, tfds_dir, version=versions.get(task.name))}")


VTAB_OPTIONS = ("top_k", "strategies", "augmentation", "preprocessing", "learning_rates", "steps", "resolution", "seed")
"""The job parameters `vtab run` takes; the others keep the model's defaults, and small_classes is "allow"
(VTAB-1k's 800 examples leave some classes with one or none)."""


@app.command()
@fail_on_error
@job_options(only=VTAB_OPTIONS, defaults={"preprocessing": "resize"})  # VTAB's reference, as vtab_params
def run(
    data_root: Path = typer.Option(
        ..., "--data-root", help="Folder of the exported layout: DIR/<task>/{train800,val200,test}."
    ),
    tasks_spec: str = typer.Option(
        "all",
        "--tasks",
        help="all (the 19 VTAB tasks; absent ones are listed as missing), "
        "natural, specialized, structured, offline (every stand-in of DIR), or "
        "comma-separated names. Stand-ins run only when named or with 'offline'.",
    ),
    zoo: str = typer.Option("embedded", "--zoo"),
    *,  # the job parameters of VTAB_OPTIONS come here as options (job_options), received in **job
    refit: bool = typer.Option(
        True,
        "--refit/--no-refit",
        help="Train every reported model again on train800+val200 before testing, as the "
        "papers do (default); --no-refit reports the train800 models.",
    ),
    force: bool = typer.Option(False, "--force", help="Redo tasks already done."),
    out: Path = typer.Option(Path("vtab-results"), "--out"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    **job: Any,
) -> None:
    """Rank, sweep, ensemble, refit and test every task; write results.{csv,md,png} to --out
    (stand-ins: results-offline.*). A task that fails is recorded and the batch goes on."""
    from tqdm.auto import tqdm

    from zooens.errors import ConfigError
    from zooens.service.vtab import FAILED, MISSING, run_vtab, select_tasks

    if not data_root.is_dir():
        raise ConfigError(f"--data-root {data_root} is not a folder; give the folder `zooens vtab export` wrote.")
    names = select_tasks(data_root, tasks_spec)
    params = job_params(job, small_classes="allow")
    bar = tqdm(total=len(names), desc="VTAB tasks", unit="task", disable=quiet)

    def on_task(name: str, state: str) -> None:
        bar.set_postfix_str(f"{name}: {state}")
        if state != "running":
            bar.update(1)

    results = run_vtab(
        data_root, names, out, zoo=zoo, params=params, refit=refit, force=force, progress=not quiet, on_task=on_task
    )
    bar.close()
    for stem in ("results", "results-offline"):
        if any(r.stand_in == (stem != "results") for r in results):
            typer.echo((out / f"{stem}.md").read_text())
    if importlib.util.find_spec("matplotlib") is None:
        typer.echo("matplotlib is not installed: no plot (pip install matplotlib)")
    failed = sum(r.status == FAILED for r in results)
    missing = sum(r.status == MISSING for r in results)
    typer.echo(f"{len(results) - failed - missing} done, {failed} failed, {missing} missing; tables in {out}/")
