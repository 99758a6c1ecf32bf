"""The `zooens` command line (Typer). Sub-apps live beside this file."""
from __future__ import annotations

import logging

import typer

app = typer.Typer(
    name="zooens",
    help="Rank a pre-trained zoo on your dataset, fine-tune the best models and ensemble them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("alembic", "httpx", "urllib3", "PIL", "timm"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def _mount() -> None:
    """Attach the sub-apps; each module defines a Typer `app`."""
    import importlib

    for module_name, command in [
        ("service.cli.zoo", "zoo"),
        ("service.cli.datasets", "datasets"),
        ("service.cli.jobs", "jobs"),
        ("service.cli.tokens", "tokens"),
        ("service.cli.db", "db"),
        ("service.cli.vtab", "vtab"),
    ]:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        app.add_typer(module.app, name=command)
    for module_name in ["service.cli.run", "service.cli.serve"]:
        try:
            importlib.import_module(module_name)  # registers commands on `app`
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise


_mount()
