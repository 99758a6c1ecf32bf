"""Writing benchmark results: one CSV per benchmark under bench/results/."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_rows(name: str, rows: list[dict[str, Any]], *, echo: bool = True) -> Path:
    """bench/results/<name>.csv with the rows' keys as header; print each row as k=v."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if echo:
        for row in rows:
            print(", ".join(f"{k}={v}" for k, v in row.items()))
    return path
