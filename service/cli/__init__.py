"""The `zooens` command line (Typer). Sub-apps live beside this file."""
from __future__ import annotations

import logging

import typer

from zooens.service.cli import datasets, db, jobs, run, serve, tokens, vtab, zoo

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


for _module, _name in [(zoo, "zoo"), (datasets, "datasets"), (jobs, "jobs"), (tokens, "tokens"), (db, "db"),
                       (vtab, "vtab")]:
    app.add_typer(_module.app, name=_name)
app.command("run")(run.run)
app.command("serve")(serve.serve)
app.command("worker")(serve.worker)
