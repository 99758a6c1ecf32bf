"""What recording a job costs: `zooens.fit(..., record=True)` (the registry, unit rows, run files) against
`record=False` (the same stages in memory), measured in one process, in turns.

    .venv/bin/python bench/fit_record.py                 # digits, the embedded zoo at 64 px, linear
    .venv/bin/python bench/fit_record.py --runs 5        # writes bench/results/fit_record.csv

A warm-up fit fills the embedding cache and the per-process forward-cost cache first, so both sides
then do the same work (kNN scores, linear probes, the greedy ensemble) and differ only by what the
registry adds. The two are run in alternating order (recorded first on even repeats); the figure to
quote is the median of the per-repeat ratios recorded / in memory. Both must give the same ensemble
(checked: same members and weights), or the script exits 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _results import write_rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--zoo", default="embedded")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="zooens-fit-record-"))
    os.environ["ZOOENS_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import zooens  # after ZOOENS_HOME is set: settings are read on first use

    job = dict(
        zoo=args.zoo,
        resolution=args.resolution,
        strategies="linear",
        top_k=2,
        max_test=500,
        progress=False,
    )

    def fit(record: bool) -> tuple[float, list[tuple[str, float]]]:
        started = time.perf_counter()
        fitted = zooens.fit(args.dataset, record=record, **job)
        seconds = time.perf_counter() - started
        return seconds, [(m.unit_key, round(m.weight, 9)) for m in fitted.ensemble_.members]

    _, reference = fit(False)  # warm-up: embeddings cached, forward costs measured
    rows = []
    for repeat in range(args.runs):
        order = (True, False) if repeat % 2 == 0 else (False, True)
        times = {}
        for record in order:
            times[record], members = fit(record)
            if members != reference:
                print(f"record={record} gave another ensemble: {members} != {reference}", file=sys.stderr)
                return 1
        rows.append(
            {
                "repeat": repeat,
                "recorded_s": round(times[True], 3),
                "in_memory_s": round(times[False], 3),
                "ratio": round(times[True] / times[False], 4),
            }
        )
        print(", ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    path = write_rows("fit_record", rows, echo=False)
    ratios = [r["ratio"] for r in rows]
    print(
        f"recorded {statistics.median(r['recorded_s'] for r in rows):.2f} s, in memory "
        f"{statistics.median(r['in_memory_s'] for r in rows):.2f} s (medians of {len(rows)}); ratio recorded / in "
        f"memory: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}); "
        f"CSV: {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
