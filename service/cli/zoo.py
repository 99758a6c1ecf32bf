"""`zooens zoo`: browse the model catalogue and register your own checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from zooens.service.cli._common import err_console, escape, fail_on_error, make_console
from zooens.service.cli._tables import Col, print_fitted

app = typer.Typer(help="The model zoo: embedded, your own and timm's catalogue.", no_args_is_help=True)
console = make_console()  # unbounded when piped: tables are never cut


def _size(ws: Any) -> str:
    _, h, w = ws.input.input_size
    return str(h) if h == w else f"{h}x{w}"


def _params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} M"


def _gflops(g: float | None) -> str:
    return "-" if g is None else (f"{g:.2f}" if g < 100 else f"{g:.0f}")


def _top1(t: float | None) -> str:
    return "-" if t is None else f"{t:.1f}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return "-"


@app.command("list")
@fail_on_error
def list_(
    filter_: str = typer.Option(None, "--filter", "-f", help="Glob over names, e.g. 'convnext*', or a zoo set."),
    available: bool = typer.Option(False, "--available", help="Only models whose weights are on this machine."),
    upstream: str = typer.Option(
        None, "--upstream", help="Only this upstream: in1k, in21k, semi-weak, self-supervised, image-text, distilled."
    ),
    min_params: float = typer.Option(None, "--min-params", min=0, help="Only models of at least this many M params."),
    max_params: float = typer.Option(None, "--max-params", min=0, help="Only models of at most this many M params."),
    taps: bool = typer.Option(False, "--taps", help="Also each model's layer taps (model@layer), as --taps auto adds."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
    wide: bool = typer.Option(False, "--wide", help="Every column, each value on one line (default: what fits)."),
) -> None:
    """List weight sets: name, origin, weights here, upstream, input size, parameters, GFLOPs, ImageNet top-1."""
    from zooens.zoo import filter_by_facts, list_weight_sets, model_facts, resolve_zoo, zoo_sets

    if filter_ and filter_ in zoo_sets():
        sets = resolve_zoo(filter_)
        if available:
            sets = [ws for ws in sets if ws.weights_present]
    else:
        sets = list_weight_sets(filter_, available_only=available, taps=taps)
    if upstream is not None or min_params is not None or max_params is not None:
        sets = filter_by_facts(
            sets,
            upstream=upstream,
            min_params=None if min_params is None else min_params * 1e6,
            max_params=None if max_params is None else max_params * 1e6,
        )
    facts = [model_facts(ws) for ws in sets]
    if as_json:
        rows = [{**ws.to_dict(), "facts": f.to_dict()} for ws, f in zip(sets, facts, strict=True)]
        typer.echo(json.dumps(rows, indent=2))
        return
    cols = [  # at a narrow terminal the highest `drop` goes first: never a column squeezed to nothing
        Col("name", fold=True, min_fold=30),
        Col("origin", drop=5),
        Col("weights"),
        Col("upstream", drop=3),
        Col("input", drop=4),
        Col("params", number=True),
        Col("GFLOPs", number=True, drop=2),
        Col("IN top-1", number=True, drop=1),
        Col("licence", fold=True, drop=6, min_fold=12),
    ]
    rows = [
        [
            escape(ws.name),
            ws.origin,
            "[green]yes[/green]" if ws.weights_present else "no",
            f.upstream or "-",
            _size(ws),
            _params(f.num_params),
            _gflops(f.gflops),
            _top1(f.imagenet_top1),
            escape(ws.license or "-"),
        ]
        for ws, f in zip(sets, facts, strict=True)
    ]
    print_fitted(console, f"Zoo: {len(sets)} weight set(s)", cols, rows, wide=wide)
    if not sets:
        console.print("No weight set matches; try a broader --filter.")


@app.command()
@fail_on_error
def show(name: str, as_json: bool = typer.Option(False, "--json", help="JSON instead of text.")) -> None:
    """Every fact about one weight set: source, input, parameters, GFLOPs, upstream, ImageNet top-1."""
    from zooens.zoo import describe, model_facts

    ws = describe(name)
    facts = ws.to_dict()
    facts["facts"] = model_facts(ws).to_dict()
    if as_json:
        typer.echo(json.dumps(facts, indent=2))
        return
    table = Table(title=ws.name, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    source = facts.pop("source")
    inp = facts.pop("input")
    catalogue = facts.pop("facts")
    for key, value in facts.items():
        table.add_row(key, "-" if value is None else escape(str(value)))
    for key in ("upstream", "gflops", "imagenet_top1", "imagenet_top1_source"):
        if key in catalogue:
            table.add_row(key, "-" if catalogue[key] is None else escape(str(catalogue[key])))
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
def sets(
    sizes: bool = typer.Option(
        True, "--sizes/--no-sizes", help="Ask the hub for each set's download size (skipped offline)."
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
) -> None:
    """The named zoo sets: their models, total parameters, upstreams and, where the hub can be asked, download size."""
    from zooens.zoo import describe_zoo_sets

    rows = describe_zoo_sets(download_sizes=sizes)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"Zoo sets: {len(rows)}")
    table.add_column("set", no_wrap=True)
    for col in ["models", "weights here", "params", "download"]:
        table.add_column(col, no_wrap=True, justify="right")
    table.add_column("upstreams", overflow="fold")
    table.add_column("description", overflow="fold")
    for row in rows:
        table.add_row(
            escape(row["name"]),
            str(len(row["models"])),
            str(row["present"]),
            _params(row["num_params"]) if row["models"] else "-",
            _bytes(row["download_bytes"]),
            escape(", ".join(row["upstreams"]) or "-"),
            escape(row["description"] or "-"),
        )
    console.print(table)


@app.command()
@fail_on_error
def pull(
    models: list[str] = typer.Argument(..., help="Names, patterns ('convnext*') or zoo sets ('diverse-small')."),
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, max=32, help="Downloads at once."),
    as_json: bool = typer.Option(False, "--json", help="A JSON report instead of lines."),
) -> None:
    """Download weight sets from the Hugging Face hub (HF_ENDPOINT, HF_TOKEN) into its cache (HF_HOME), resuming an
    interrupted download and verifying every file against the sha256 the hub announces."""
    from zooens.service.cli._common import is_quiet
    from zooens.zoo import pull as pull_weights

    report = pull_weights(list(models), max_workers=jobs, progress=not as_json and not is_quiet())
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for o in report.outcomes:
            if o.status == "pulled":
                console.print(f"pulled   {escape(o.model)} ({_bytes(o.bytes)})")
            elif o.status == "present":
                console.print(f"present  {escape(o.model)}")
        for o in report.outcomes:
            if o.status == "failed":
                err_console.print(f"[red]failed[/red]   {escape(o.model)}: {escape(o.message or '')}", soft_wrap=True)
        n = {k: sum(o.status == k for o in report.outcomes) for k in ("pulled", "present", "failed")}
        console.print(f"{n['pulled']} pulled, {n['present']} already here, {n['failed']} failed.")
    if not report.ok:
        raise typer.Exit(1)


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
