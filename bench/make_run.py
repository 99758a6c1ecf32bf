"""Time `make run`'s job end to end, stage by stage: the first run after set-up, then a repeat.

    .venv/bin/python bench/make_run.py [--home DIR] [--repeat-only] [--profile]

The first run uses an empty ZOOENS_HOME (a temporary one unless `--home`): every model is built and
every split decoded and embedded. The repeat runs the same command with the same ZOOENS_HOME, so
its embeddings come from the cache; what is left is start-up (imports), the registry, the
fine-tuning sweep and the ensemble. `--repeat-only` with `--home` times only a repeat;
`--profile` runs the repeat under cProfile and prints where its time goes.

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


def timed_run(env: dict[str, str], run: str, profile_to: Path | None = None) -> list[dict[str, object]]:
    """One `zooens run` of the Makefile's arguments; its stages as rows."""
    zooens = str(Path(sys.executable).parent / "zooens")
    cmd = [zooens, "run", *make_run_args(), "--json", "--quiet"]
    if profile_to is not None:
        cmd = [sys.executable, "-m", "cProfile", "-o", str(profile_to), *cmd]
    started = time.perf_counter()
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    total = time.perf_counter() - started
    report = json.loads(out)
    rows = [(f"embed+score {r['model_name']}" + (" (cached)" if r.get("cached") else ""), r["embed_seconds"])
            for r in report["ranking"]]
    rows += [(f"finetune {r['model_name']} {r['strategy']} {json.dumps(r['hparams'])}", r["seconds"])
             for r in report["runs"]]
    rows += [("total (process, incl. start-up and ensemble)", total)]
    ens = report["ensemble"]
    print(f"{run}: ensemble test accuracy {ens['test_acc']:.4f}; members' best "
          f"{max(r['test_acc'] for r in report['runs']):.4f}")
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
    args = parser.parse_args()
    if args.repeat_only and not args.home:
        parser.error("--repeat-only needs --home (a ZOOENS_HOME that has run once)")
    env = dict(os.environ)
    env["ZOOENS_HOME"] = args.home or tempfile.mkdtemp(prefix="zooens-bench-")
    rows: list[dict[str, object]] = [{"run": "both", "stage": "startup (zooens --version)",
                                      "seconds": round(startup_seconds(env), 2)}]
    try:
        if not args.repeat_only:
            rows += timed_run(env, "first")
        profile_to = Path(env["ZOOENS_HOME"]) / "repeat.prof" if args.profile else None
        rows += timed_run(env, "repeat", profile_to)
        if profile_to is not None:
            pstats.Stats(str(profile_to)).sort_stats("cumulative").print_stats(40)
    finally:
        if not args.home:
            shutil.rmtree(env["ZOOENS_HOME"], ignore_errors=True)
    write_rows("make_run", rows, echo=False)
    for row in rows:
        print(f"{row['seconds']:8.1f} s  {row['run']:>6}  {row['stage']}")


if __name__ == "__main__":
    main()
