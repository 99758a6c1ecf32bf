"""`zooens db`: the registry's schema."""

from __future__ import annotations

import typer

from zooens.service.cli._common import fail_on_error

app = typer.Typer(help="The SQL registry: migrations.", no_args_is_help=True)


@app.command()
@fail_on_error
def upgrade() -> None:
    """Bring the database to the newest migration."""
    from zooens.service.db.session import current_revision, upgrade_to_head

    upgrade_to_head()
    typer.echo(f"database at revision {current_revision()}")


@app.command()
@fail_on_error
def current() -> None:
    """Print the database's migration revision."""
    from zooens.service.db.session import current_revision, is_at_head

    typer.echo(f"{current_revision()} ({'head' if is_at_head() else 'behind head: run zooens db upgrade'})")
