"""The `zooens` command line (Typer). Sub-apps live beside this file."""

from __future__ import annotations

import logging

import typer

from zooens._version import __version__
from zooens.service.cli import datasets, db, jobs, predict, run, serve, tokens, vtab, zoo
from zooens.service.cli._common import ZooensGroup, install_log_handler, set_quiet

app = typer.Typer(
    name="zooens",
    help="Rank a pre-trained zoo on your dataset, fine-tune the best models and ensemble them.",
    no_args_is_help=True,
    cls=ZooensGroup,  # click's usage errors end with `error: ...` like ours
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # click's plain help: flags read as flags (no `<bool>`), text stays as written
)


QUIET_LOGGERS = ("alembic", "httpx", "urllib3", "PIL", "timm", "faiss", "faiss.loader", "matplotlib", "absl")
"""Libraries whose INFO lines are about themselves (faiss's "could not load AVX2 ..." fallback is one):
shown from -vv only."""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"zooens {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="-v: what each stage does (INFO); -vv: everything (DEBUG)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Errors and results only: no warnings, no progress."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Warnings only by default."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    set_quiet(quiet)
    install_log_handler(level)  # "warning: ..." on stderr, also when a host (a test runner) configured logging first
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose >= 2 else max(level, logging.WARNING))


for _module, _name in [
    (zoo, "zoo"),
    (datasets, "datasets"),
    (jobs, "jobs"),
    (tokens, "tokens"),
    (db, "db"),
    (vtab, "vtab"),
]:
    _module.app.rich_markup_mode = None
    app.add_typer(_module.app, name=_name)
app.command("run")(run.run)
app.command("export")(predict.export)
app.command("predict")(predict.predict)
app.command("serve")(serve.serve)
app.command("worker")(serve.worker)
