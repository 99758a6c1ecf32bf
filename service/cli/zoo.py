"""`zooens zoo`: browse the model catalogue and register your own checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from zooens.service.cli._common import escape, fail_on_error, make_console

app = typer.Typer(help="The model zoo: embedded, your own and timm's catalogue.", no_args_is_help=True)
console = make_console()  # unbounded when piped: tables are never cut


def _size(ws: Any) -> str:
    _, h, w = ws.input.input_size
    return str(h) if h == w else f"{h}x{w}"


def _params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} M"


@app.command("list")
@fail_on_error
def list_(
    filter_: str = typer.Option(None, "--filter", "-f", help="Glob over names, e.g. 'convnext*'."),
    available: bool = typer.Option(False, "--available", help="Only models whose weights are on this machine."),
    taps: bool = typer.Option(False, "--taps", help="Also each model's layer taps (model@layer), as --taps auto adds."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
) -> None:
    """List weight sets (name, origin, weights available, input size, parameters, licence)."""
    from zooens.zoo import list_weight_sets

    sets = list_weight_sets(filter_, available_only=available, taps=taps)
    if as_json:
        typer.echo(json.dumps([ws.to_dict() for ws in sets], indent=2))
        return
    table = Table(title=f"Zoo: {len(sets)} weight set(s)")
    table.add_column("name", no_wrap=True)
    for col in ["origin", "weights", "input", "params"]:
        table.add_column(col, no_wrap=True)
    table.add_column("licence", overflow="fold")
    for ws in sets:
        has = ws.weights_present
        table.add_row(
            escape(ws.name),
            ws.origin,
            "[green]yes[/green]" if has else "no",
            _size(ws),
            _params(ws.num_params),
            escape(ws.license or "-"),
        )
    console.print(table)
    if not sets:
        console.print("No weight set matches; try a broader --filter.")


@app.command()
@fail_on_error
def show(name: str, as_json: bool = typer.Option(False, "--json", help="JSON instead of text.")) -> None:
    """Every fact about one weight set, with its parameter count and embedding width."""
    from zooens.zoo import describe

    ws = describe(name)
    facts = ws.to_dict()
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    table = Table(title=ws.name, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    source = facts.pop("source")
    inp = facts.pop("input")
    for key, value in facts.items():
        table.add_row(key, "-" if value is None else escape(str(value)))
    for key, value in source.items():
        if value is not None:
            table.add_row(f"source.{key}", escape(str(value)))
    for key, value in inp.items():
        table.add_row(f"input.{key}", escape(str(value)))
    if not ws.weights_present:
        table.add_row("looked in", escape("\n".join(ws.source.places())))
    console.print(table)


@app.command()
@fail_on_error
def add(
    name: str,
    arch: str = typer.Option(..., "--arch", help="timm architecture, e.g. resnet50."),
    weights: Path = typer.Option(..., "--weights", help=".safetensors or .pth/.pt state_dict file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a user model of the same name."),
) -> None:
    """Register a local checkpoint as a user model."""
    from zooens.zoo import add_user_model

    ws = add_user_model(name, arch, weights, overwrite=overwrite)
    console.print(
        f"Added [bold]{escape(ws.name)}[/bold] ({ws.arch}, {_params(ws.num_params)}, "
        f"{ws.embed_dim}-d embedding, sha256 {(ws.source.sha256 or '')[:12]}...)",
        highlight=False,
    )


@app.command()
@fail_on_error
def remove(name: str) -> None:
    """Forget a user model (its weights file stays)."""
    from zooens.zoo import remove_user_model

    remove_user_model(name)
    console.print(f"Removed {escape(name)}.", highlight=False)
