"""`zooens export` (an ensemble to one `.zooens` file) and `zooens predict` (images through a file or a
registered ensemble)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.table import Table

from zooens.errors import ConfigError, ZooensError
from zooens.service.cli._common import escape, fail_on_error, make_console, open_registry

console = make_console()


def shown_names(paths: list[str]) -> list[str]:
    """How `predict` names each image: relative to the current directory when every one is under it, else
    relative to their common folder, so `zero/0.png` and `one/0.png` stay apart (a lone file: its name)."""
    full = [Path(p).expanduser().absolute() for p in paths]
    cwd = Path.cwd()
    if all(f.is_relative_to(cwd) for f in full):
        return [str(f.relative_to(cwd)) for f in full]
    common = Path(os.path.commonpath([str(f.parent) for f in full]))
    return [str(f.relative_to(common)) if common != Path(common.anchor) else str(f) for f in full]


@fail_on_error
def export(
    job: int | None = typer.Argument(None, help="The job whose ensemble to export (the id `zooens run` prints)."),
    ensemble: int | None = typer.Option(None, "--ensemble", "-e", help="Export this ensemble id instead of a job's."),
    output: Path = typer.Option(..., "--output", "-o", help="The file to write, e.g. model.zooens."),
    weights: str = typer.Option(
        "embed",
        "--weights",
        help="embed: the base models' weights go into the file (it needs nothing else); "
        "reference: only their names and sha256 (a smaller file; the zoo must have them).",
    ),
) -> None:
    """Write an ensemble as one self-contained file: members, base weights, preprocessing, class names,
    versions and checksums. `zooens predict FILE IMAGES...` and `zooens.load(FILE)` read it."""
    # Imported here: torch and the registry cost seconds that `zooens --help` should not pay.
    from zooens.service.db.session import session_scope
    from zooens.service.library import export_ensemble, job_ensemble_id

    if (job is None) == (ensemble is None):
        raise ConfigError("Give a job id (`zooens export 3 -o model.zooens`) or --ensemble ID, not both.")
    if weights not in ("embed", "reference"):
        raise ConfigError(f"--weights is 'embed' or 'reference', got {weights!r}.")
    open_registry()
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with session_scope() as s:
            ensemble_id = ensemble if ensemble is not None else job_ensemble_id(s, job)
            export_ensemble(s, ensemble_id, tmp, base_weights=weights)  # type: ignore[arg-type]
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    size = output.stat().st_size
    console.print(f"ensemble {ensemble_id} written to {escape(str(output))} ({size / 2**20:.1f} MiB)")


@fail_on_error
def predict(
    items: list[str] = typer.Argument(
        ..., metavar="[MODEL.zooens] IMAGES...", help="A .zooens file then images; with --ensemble, images only."
    ),
    ensemble: int | None = typer.Option(None, "--ensemble", "-e", help="Predict with this registered ensemble."),
    as_json: bool = typer.Option(False, "--json", help="Print the predictions as JSON."),
    top: int = typer.Option(3, "--top", min=1, help="Classes shown per image (the most probable first)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per forward pass."),
) -> None:
    """Class probabilities of images, from a `.zooens` file or a registered ensemble.

    Each image is answered on its own: one that cannot be read gets a row saying why and the others are still
    answered; the exit code is then 1 (0 when every image was answered, 2 when nothing could run). Images are
    named relative to the current directory (or to their common folder)."""
    # Imported here: torch and the registry cost seconds that `zooens --help` should not pay.
    from zooens.ensemble import EnsemblePredictor
    from zooens.selection.images import open_image
    from zooens.service.db.session import session_scope
    from zooens.service.library import ensemble_members, ensemble_temperature

    if ensemble is None:
        if len(items) < 2:
            raise ConfigError(
                "Give a .zooens file and at least one image (`zooens predict model.zooens a.jpg`), "
                "or --ensemble ID and images."
            )
        model, images = items[0], items[1:]
        predictor = EnsemblePredictor.load(model)
    else:
        images = items
        open_registry()
        with session_scope() as s:
            predictor = EnsemblePredictor(ensemble_members(s, ensemble), temperature=ensemble_temperature(s, ensemble))
    classes = list(predictor.classes or [])
    names = shown_names(images)
    rows = []
    for start in range(0, len(images), batch_size):
        chunk = list(zip(images[start : start + batch_size], names[start : start + batch_size], strict=True))
        opened: dict[str, object] = {}
        errors: dict[str, str] = {}
        for path, name in chunk:
            try:
                opened[path] = open_image(path, name=name)
            except (ZooensError, OSError) as exc:  # this image only: the others are still answered
                errors[path] = str(exc) if isinstance(exc, ZooensError) else f"{name}: {exc.strerror or exc}"
        good = [path for path, _ in chunk if path in opened]
        proba = iter(predictor.predict_proba([opened[p] for p in good], batch_size=batch_size) if good else [])
        for path, name in chunk:
            if path in errors:
                rows.append({"filename": path, "image": name, "error": errors[path], "label": None, "top": []})
                continue
            p = next(proba)
            order = p.argsort()[::-1][:top]
            rows.append(
                {
                    "filename": path,
                    "image": name,
                    "label": classes[int(order[0])],
                    "probabilities": {c: float(v) for c, v in zip(classes, p, strict=False)},
                    "top": [{"label": classes[int(i)], "probability": float(p[i])} for i in order],
                }
            )
    failed = sum("error" in row for row in rows)
    if as_json:
        sys.stdout.write(json.dumps({"classes": classes, "predictions": rows}, indent=2) + "\n")
        if failed:
            raise typer.Exit(1)
        return
    table = Table(title_justify="left")
    table.add_column("image", overflow="fold")
    table.add_column("label", overflow="fold")
    table.add_column("p", justify="right", no_wrap=True)
    if top > 1:
        table.add_column(f"next {min(top, len(classes)) - 1}", overflow="fold")
    for row in rows:
        if "error" in row:  # the reason where the label would be
            table.add_row(escape(row["image"]), f"[red]error:[/red] {escape(row['error'])}", "-", *[""] * (top > 1))
            continue
        best, rest = row["top"][0], row["top"][1:]
        cells = [escape(row["image"]), escape(best["label"]), f"{100 * best['probability']:.1f}%"]
        if top > 1:
            cells.append(", ".join(f"{escape(t['label'])} {100 * t['probability']:.1f}%" for t in rest))
        table.add_row(*cells)
    console.print(table)
    if failed:
        make_console(stderr=True).print(f"{failed} of {len(rows)} images could not be read; the others are answered.")
        raise typer.Exit(1)
