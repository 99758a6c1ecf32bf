"""Time `make run`'s job end to end, stage by stage: the first run after set-up, then a repeat.

    .venv/bin/python bench/make_run.py [--runs N] [--home DIR] [--repeat-only] [--profile]

The first run uses an empty ZOOENS_HOME (a temporary one unless `--home`): every model is built and
every split decoded and embedded. The repeat runs the same command with the same ZOOENS_HOME, so
its embeddings come from the cache; what is left is start-up (imports), the registry, the
fine-tuning sweep and the ensemble. `--repeat-only` with `--home` times only a repeat;
`--profile` runs the repeat under cProfile and prints where its time goes. `--runs N` times N first
runs, each with a fresh ZOOENS_HOME and followed by its repeat, and reports the totals' median,
minimum and maximum (the machine's speed varies by 10-20 % from minute to minute).

Writes bench/results/make_run.csv (run, stage, seconds) and prints it. Targets (issue 14): the
first run under 90 s, a repeat under 30 s on the 2-core reference machine. `startup` is
`zooens --version` (the CLI's import cost, paid by every run).
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_rows

ROOT = Path(__file__).resolve().parent.parent


def make_run_args() -> list[str]:
    """The `zooens run` arguments of the Makefile's `run` target."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^RUN_ARGS\s*\?=\s*(.+)$", text, flags=re.M)
    return match.group(1).split() if match else []


def timed_run(
    env: dict[str, str], run: str, profile_to: Path | None = None, extra: list[str] | None = None
) -> list[dict[str, object]]:
    """One `zooens run` of the Makefile's arguments (and `extra`); its stages as rows."""
    zooens = str(Path(sys.executable).parent / "zooens")
    cmd = [zooens, "run", *make_run_args(), *(extra or []), "--json", "--quiet"]
    if profile_to is not None:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(profile_to), *cmd]
    started = time.perf_counter()
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    total = time.perf_counter() - started
    report = json.loads(out)
    rows = [
        (f"embed+score {r['model_name']}" + (" (cached)" if r.get("cached") else ""), r["embed_seconds"])
        for r in report["ranking"]
    ]
    rows += [
        (
            f"finetune {r['model_name']} {r['strategy']} "
            + " ".join(f"{k}={r['hparams'][k]}" for k in ("lr", "steps") if k in r["hparams"]),
            r["seconds"],
        )
        for r in report["runs"]
    ]
    rows += [("total (process, incl. start-up and ensemble)", total)]
    ens = report["ensemble"]
    print(
        f"{run}: ensemble test accuracy {ens['test_acc']:.4f}; members' best "
        f"{max(r['test_acc'] for r in report['runs']):.4f}"
    )
    return [{"run": run, "stage": name, "seconds": round(float(secs), 2)} for name, secs in rows]


def startup_seconds(env: dict[str, str]) -> float:
    zooens = str(Path(sys.executable).parent / "zooens")
    started = time.perf_counter()
    subprocess.run([zooens, "--version"], env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", help="ZOOENS_HOME to use (default: a fresh temporary one, removed after)")
    parser.add_argument("--repeat-only", action="store_true", help="time only a repeat (needs --home)")
    parser.add_argument("--profile", action="store_true", help="profile the repeat and print its top functions")
    parser.add_argument(
        "--taps", choices=["auto", "none"], help="the job's `--taps` (default: the job's own default, auto)"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="first runs (each with a fresh ZOOENS_HOME) and repeats to time; with more than one, "
        "the totals' median, minimum and maximum are reported too",
    )
    args = parser.parse_args()
    if args.repeat_only and not args.home:
        parser.error("--repeat-only needs --home (a ZOOENS_HOME that has run once)")
    if args.runs > 1 and (args.home or args.profile):
        parser.error("--runs > 1 uses a fresh ZOOENS_HOME per run: without --home and --profile")
    rows: list[dict[str, object]] = []
    totals: dict[str, list[float]] = {"first": [], "repeat": []}
    for i in range(args.runs):
        env = dict(os.environ)
        env["ZOOENS_HOME"] = args.home or tempfile.mkdtemp(prefix="zooens-bench-")
        tag = "" if args.runs == 1 else f" #{i + 1}"
        rows.append(
            {"run": "both" + tag, "stage": "startup (zooens --version)", "seconds": round(startup_seconds(env), 2)}
        )
        try:
            for run in ([] if args.repeat_only else ["first"]) + ["repeat"]:
                profile_to = Path(env["ZOOENS_HOME"]) / "repeat.prof" if args.profile and run == "repeat" else None
                got = timed_run(env, run, profile_to, ["--taps", args.taps] if args.taps else None)
                totals[run].append(float(got[-1]["seconds"]))
                rows += [{**r, "run": f"{r['run']}{tag}"} for r in got]
                if profile_to is not None:
                    pstats.Stats(str(profile_to)).sort_stats("cumulative").print_stats(40)
        finally:
            if not args.home:
                shutil.rmtree(env["ZOOENS_HOME"], ignore_errors=True)
    if args.runs > 1:
        for run, values in totals.items():
            for stat, value in (("median", statistics.median(values)), ("min", min(values)), ("max", max(values))):
                rows.append({"run": run, "stage": f"total, {stat} of {len(values)} runs", "seconds": round(value, 2)})
    write_rows("make_run", rows, echo=False)
    for row in rows:
        print(f"{row['seconds']:8.1f} s  {row['run']:>9}  {row['stage']}")


if __name__ == "__main__":
    main()
