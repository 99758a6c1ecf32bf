"""`zooens tokens`: API tokens (stored hashed; the plain token is shown once)."""

from __future__ import annotations

import typer

from zooens.service.cli._common import (
    err_console,
    escape,
    fail_on_error,
    no_registry_text,
    open_registry,
    registry_exists,
)

app = typer.Typer(help="API tokens for requests that change state.", no_args_is_help=True)


@app.command()
@fail_on_error
def create(name: str = typer.Argument(..., help="A name to recognise the token by.")) -> None:
    """Create a token and print it once."""
    from zooens.service import registry
    from zooens.service.db.session import session_scope, upgrade_to_head

    upgrade_to_head()
    with session_scope() as s:
        plain, _ = registry.create_token(s, name)
    typer.echo(plain)


@app.command()
@fail_on_error
def revoke(name: str = typer.Argument(..., help="The token's name or id.")) -> None:
    """Revoke a token."""
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    open_registry()
    with session_scope() as s:
        registry.revoke_token(s, name)
    typer.echo(f"revoked {name}")


@app.command("list")
@fail_on_error
def list_() -> None:
    """List tokens (names and prefixes, never the tokens)."""
    from zooens.service import registry
    from zooens.service.db.session import session_scope

    if not registry_exists():  # an empty answer, and where it looked; a read makes no registry
        err_console.print(escape(no_registry_text()))
        return
    open_registry()
    with session_scope() as s:
        for t in registry.list_tokens(s):
            state = "revoked" if t.revoked_at else "active"
            typer.echo(f"{t.id}\t{t.name}\t{t.prefix}…\t{state}\tcreated {t.created_at:%Y-%m-%d %H:%M}")
