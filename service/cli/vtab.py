"""`zooens vtab`: the VTAB-1k benchmark in batch."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from zooens.service.cli._common import fail_on_error, parse_floats, parse_ints

app = typer.Typer(help="VTAB-1k: task table, data export, offline suite, batch runs.", no_args_is_help=True)
console = Console()


@app.command()
def tasks() -> None:
    """The 19 tasks: group, TFDS builder, classes, splits, label derivation."""
    from zooens.selection.vtab.tasks import TASKS

    table = Table(title="VTAB-1k tasks")
    for col in ["task", "group", "tfds", "classes", "train800", "val200", "test", "label"]:
        table.add_column(col)
    for t in TASKS:
        table.add_row(t.name, t.group, t.tfds_name, str(t.num_classes), t.train800, t.val200, t.test_split,
                      t.label if t.label != "given" else t.label_feature)
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
    tfds_dir: Optional[str] = typer.Option(None, "--tfds-dir", help="TFDS data_dir holding prepared data."),
) -> None:
    """Write the exported layout from prepared TFDS data (needs `pip install 'zooens[vtab]'`)."""
    from zooens.selection.vtab.sources import export_task
    from zooens.selection.vtab.tasks import resolve_tasks

    for task in resolve_tasks(tasks_spec):
        typer.echo(f"exported {export_task(task, out, tfds_dir)}")


@app.command()
@fail_on_error
def run(
    data_root: Path = typer.Option(..., "--data-root", help="Folder of the exported layout: DIR/<task>/{train800,val200,test}."),
    tasks_spec: str = typer.Option("all", "--tasks", help="all, natural, specialized, structured, or names; "
                                   "with the offline suite: the offline-* names, or all of DIR."),
    zoo: str = typer.Option("embedded", "--zoo"),
    top_k: int = typer.Option(3, "--top-k"),
    strategies: str = typer.Option("auto", "--strategies", help="'auto' is 'full' on a GPU, 'linear' on a CPU."),
    augmentation: str = typer.Option("auto", "--augmentation",
                                     help="auto (flips only where the task table marks them safe), none, flip, crop, "
                                          "crop_flip."),
    lr: Optional[str] = typer.Option(None, "--lr"),
    steps: Optional[str] = typer.Option(None, "--steps"),
    resolution: Optional[int] = typer.Option(None, "--resolution"),
    seed: int = typer.Option(0, "--seed"),
    refit: bool = typer.Option(False, "--refit", help="Retrain the chosen members on train800+val200 before testing."),
    force: bool = typer.Option(False, "--force", help="Redo tasks already done."),
    out: Path = typer.Option(Path("vtab-results"), "--out"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Rank, sweep, ensemble and test every task; write results.csv and results.md to --out."""
    from tqdm.auto import tqdm

    from zooens.selection.vtab.tasks import TASKS, resolve_tasks
    from zooens.service.jobs import parse_params
    from zooens.service.vtab import run_vtab

    if not data_root.is_dir():
        raise typer.BadParameter(f"{data_root} is not a folder")
    present = sorted(p.name for p in data_root.iterdir() if (p / "train800").is_dir())
    if tasks_spec == "all":
        vtab_names = [t.name for t in TASKS]
        names = [n for n in vtab_names if n in present] + [n for n in present if n not in vtab_names]
    elif all(n.strip().startswith("offline-") for n in tasks_spec.split(",")):
        names = [n.strip() for n in tasks_spec.split(",")]
    else:
        names = [t.name for t in resolve_tasks(tasks_spec)]
    params = parse_params(top_k=top_k, strategies=[s.strip() for s in strategies.split(",") if s.strip()],
                          learning_rates=parse_floats(lr), steps=parse_ints(steps), resolution=resolution,
                          seed=seed, augmentation=augmentation)
    bar = tqdm(total=len(names), desc="VTAB tasks", unit="task", disable=quiet)

    def on_task(name: str, state: str) -> None:
        bar.set_postfix_str(f"{name}: {state}")
        if state in ("done", "skipped"):
            bar.update(1)

    results = run_vtab(data_root, names, out, zoo=zoo, params=params, refit=refit, force=force,
                       progress=not quiet, on_task=on_task)
    bar.close()
    console.print((out / "results.md").read_text())
    console.print(f"{len(results)} tasks; tables in {out / 'results.csv'} and {out / 'results.md'}")
