"""Tables that fit the terminal without squeezing a column to nothing.

Rich shrinks every column of a table wider than the terminal, down to an ellipsis or to zero width.
`fitted_table` instead gives each column at least its title's width and, when the columns do not fit,
leaves out the least needed ones (they are named under the table), folding only long free text.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

__all__ = ["Col", "fitted_table", "print_fitted", "print_wide"]

UNBOUNDED = 100_000
"""A width no table reaches: what a table is measured against to find its natural width."""


def print_wide(console: Console, table: Table) -> None:
    """Print `table` at its natural width, past the terminal's when it needs more (the terminal wraps the
    lines; no cell is folded or cut)."""
    natural = Measurement.get(console, console.options.update(max_width=UNBOUNDED), table).maximum
    if natural <= console.width:
        console.print(table)
        return
    wider = Console(
        file=console.file,
        width=natural,
        highlight=False,
        color_system=console.color_system,  # type: ignore[arg-type]
        force_terminal=console.is_terminal,
        no_color=console.no_color,
    )
    wider.print(table, crop=False)


@dataclass(frozen=True)
class Col:
    """One column: `number` right-aligned; `fold` free text that may fold onto several lines (never in
    `wide`); `drop` 0 for a column always shown, else its rank among those left out first (highest first)."""

    header: str
    number: bool = False
    fold: bool = False
    drop: int = 0
    min_fold: int = 16


def _width(cell: str) -> int:
    return max((Text.from_markup(line).cell_len for line in cell.split("\n")), default=0)


def fitted_table(
    title: str, cols: list[Col], rows: list[list[str]], *, width: int, wide: bool = False
) -> tuple[Table, list[str]]:
    """The table of `rows` (markup strings) for a console `width` columns wide, and the titles of the columns
    left out. `wide` keeps every column, each on one line. ValueError when two columns share a title."""
    headers = [c.header for c in cols]
    if len(set(headers)) != len(headers):
        raise ValueError(f"table {title!r}: two columns share a title in {headers}")
    natural = [max([len(c.header), *(_width(r[i]) for r in rows)]) for i, c in enumerate(cols)]
    least = [
        natural[i] if wide or not c.fold else max(len(c.header), min(natural[i], c.min_fold))
        for i, c in enumerate(cols)
    ]
    shown = list(range(len(cols)))
    if not wide:
        for i in sorted((i for i, c in enumerate(cols) if c.drop), key=lambda i: -cols[i].drop):
            if sum(least[j] + 3 for j in shown) + 1 <= width:
                break
            shown.remove(i)
    table = Table(title=title, title_justify="left")
    for i in shown:
        c = cols[i]
        if c.number:
            table.add_column(c.header, justify="right", no_wrap=True, min_width=natural[i])
        elif c.fold and not wide:
            table.add_column(c.header, overflow="fold", min_width=least[i])
        else:
            table.add_column(c.header, no_wrap=True, min_width=natural[i])
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    return table, [cols[i].header for i in range(len(cols)) if i not in shown]


def print_fitted(console: Console, title: str, cols: list[Col], rows: list[list[str]], *, wide: bool = False) -> None:
    """Print `fitted_table` on `console` (`wide`: at the table's natural width, past the terminal's if need be),
    then which columns were left out and how to see them."""
    table, hidden = fitted_table(title, cols, rows, width=console.width, wide=wide)
    if wide:
        print_wide(console, table)
    else:
        console.print(table)
    if hidden:
        console.print(f"Not shown at {console.width} columns: {', '.join(hidden)} (--wide shows every column).")
