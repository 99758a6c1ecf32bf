"""Time `make run`'s job end to end, stage by stage, on this machine.

    .venv/bin/python bench/make_run.py [--fresh]     # --fresh: empty embedding cache first

Writes bench/results/make_run.csv (stage, seconds) and prints it. Target: under 10 minutes
on the 2-core reference machine with a cold cache.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_run_args() -> list[str]:
    """The `zooens run` arguments of the Makefile's `run` target."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^RUN_ARGS\s*\?=\s*(.+)$", text, flags=re.M)
    return match.group(1).split() if match else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fresh", action="store_true", help="use an empty ZOOENS_HOME (cold cache)")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.fresh:
        env["ZOOENS_HOME"] = tempfile.mkdtemp(prefix="zooens-bench-")
    zooens = str(Path(sys.executable).parent / "zooens")
    cmd = [zooens, "run", *make_run_args(), "--json", "--quiet"]
    started = time.perf_counter()
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    total = time.perf_counter() - started
    report = json.loads(out)
    rows = [("embed+score " + r["model_name"], r["embed_seconds"]) for r in report["ranking"]]
    rows += [("finetune " + r["model_name"] + " " + r["strategy"] + " " + json.dumps(r["hparams"]), r["seconds"]) for r in report["runs"]]
    rows += [("total (process, incl. start-up and ensemble)", total)]
    out_path = ROOT / "bench" / "results" / "make_run.csv"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["stage", "seconds"])
        for name, secs in rows:
            w.writerow([name, f"{secs:.2f}"])
    for name, secs in rows:
        print(f"{secs:8.1f} s  {name}")
    ens = report["ensemble"]
    print(f"ensemble test accuracy {ens['test_acc']:.4f}; members' best {max(r['test_acc'] for r in report['runs']):.4f}")
    if args.fresh:
        shutil.rmtree(env["ZOOENS_HOME"], ignore_errors=True)


if __name__ == "__main__":
    main()
