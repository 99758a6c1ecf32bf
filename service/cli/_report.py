"""The report tables of `zooens run` and `zooens jobs show`.

At a terminal's width the tables keep the columns a reader needs (model names fold instead of
being cut); `--wide` adds every other column and keeps every name on one line (the table is as wide
as it needs, the terminal wraps it); piped output is never cut (see `make_console`). No two columns
of a table share a title.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from zooens.service.cli._common import escape, make_console
from zooens.service.cli._tables import print_wide


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def seconds_text(x: float | None) -> str:
    if x is None:
        return "-"
    if x < 60:
        return f"{x:.1f} s"
    minutes, sec = divmod(round(x), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _params(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _table(title: str, columns: list[tuple[str, bool]], *, wide: bool = False) -> Table:
    """columns: (header, is_text); text columns fold long values (`wide`: never, a name stays on one line),
    numbers are right-aligned. ValueError when two columns would share a title."""
    headers = [header for header, _ in columns]
    twice = sorted({h for h in headers if headers.count(h) > 1})
    if twice:
        raise ValueError(f"table {title!r}: columns {twice} appear twice; give each column its own title")
    table = Table(title=title, title_justify="left")
    for header, is_text in columns:
        if is_text:
            table.add_column(header, no_wrap=wide, overflow="fold")
        else:
            table.add_column(header, justify="right", no_wrap=True)
    return table


def print_table(console: Console, table: Table, *, wide: bool = False) -> None:
    """Print `table`; `wide`: at its natural width even past the terminal's (no name folded or cut)."""
    if wide:
        print_wide(console, table)
    else:
        console.print(table)


RANKING_ROWS = 5
"""Rows of the ranking a job's summary shows without `--wide`, beside every fine-tuned entry: a default job ranks
its models and their layer taps (12 entries on the embedded zoo), more than fit a screen with the runs."""


def print_report(
    report: dict,
    *,
    wide: bool = False,
    console: Console | None = None,
    show_error: bool = True,
    said: tuple[str, ...] = (),
) -> None:
    """The job's tables and summary lines; `show_error` False leaves out its error line (a caller that raises
    it next); a recorded warning that one of `said` (warnings printed already) holds is not repeated."""
    console = console or make_console()
    job = report["job"]
    ks = {r.get("k") for r in report["ranking"]} - {None}
    knn_header = f"kNN@{ks.pop()} acc" if len(ks) == 1 else "kNN acc"  # the k used (resolved when "auto")
    if knn_header == "kNN@1 acc":  # k = 1: the kNN@1 column already says it
        knn_header = "kNN acc (k = 1)"
    cols = [("#", False), ("model", True), (knn_header, False), ("kNN@1 acc", False), ("fine-tuned val", False)]
    if wide:
        cols += [
            ("k", False),
            ("kNN val acc", False),
            ("val CE", False),
            ("LogME", False),
            ("params", False),
            ("dim", False),
            ("embed s", False),
            ("img/s", False),
        ]
    table = _table(f"Ranking (job {job['id']})", cols, wide=wide)
    ranking = report["ranking"]
    if not wide:  # the head of the ranking and every entry fine-tuned (the top-K, audited ones)
        ranking = [r for r in ranking if r["rank"] <= RANKING_ROWS or r["finetuned_val_acc"] is not None]
    for r in ranking:
        row = [
            str(r["rank"]),
            escape(r["model_name"]),
            pct(r["knn_accuracy"]),
            pct(r.get("knn1_accuracy")),
            pct(r["finetuned_val_acc"]),
        ]
        if wide:
            row += [
                str(r.get("k") or "-"),
                pct(r["val_accuracy"]),
                "-" if r["finetuned_val_ce"] is None else f"{r['finetuned_val_ce']:.3f}",
                "-" if r.get("logme") is None else f"{r['logme']:.3f}",
                _params(r["params"]),
                str(r["embed_dim"] or "-"),
                "-" if r["embed_seconds"] is None else f"{r['embed_seconds']:.1f}",
                f"{r['images_per_s']:.0f}" if r["images_per_s"] else "cached",
            ]
        table.add_row(*row)
    print_table(console, table, wide=wide)
    hidden = []  # what only --wide lists, said in one line under the ranking
    if len(ranking) < len(report["ranking"]):
        more = len(report["ranking"]) - len(ranking)
        hidden.append(f"{more} more ranked entr{'ies' if more > 1 else 'y'}")
    has_test = any(r["test_acc"] is not None for r in report["runs"])
    cols = [("model", True), ("strategy", True), ("lr", False), ("val CE", False)]
    cols += [("test acc", False)] if has_test else [("val acc", False)]
    cols += [("updated", False)]
    if wide:
        cols = (
            [("run", False)]
            + cols
            + [
                ("steps", False),
                *([("val acc", False)] if has_test else []),  # without a test split it is shown already
                ("update size", False),
                ("s", False),
                ("GFLOPs", False),
                ("latency ms", False),
            ]
        )
    runs = _table("Fine-tune runs", cols, wide=wide)
    for r in report["runs"]:
        row = [
            escape(r["model_name"]),
            r["strategy"],
            f"{r['hparams'].get('lr', 0):g}",
            f"{r['val_ce']:.3f}",
            pct(r["test_acc"]) if has_test else pct(r["val_acc"]),
            _params(r["updated_params"]),
        ]
        if wide:
            row = (
                [str(r["id"])]
                + row
                + [
                    str(r["hparams"].get("steps", "-")),
                    *([pct(r["val_acc"])] if has_test else []),
                    f"{r['update_bytes'] / 1024:.1f} KiB",
                    f"{r['seconds']:.1f}",
                    _number(r.get("gflops"), 3),
                    _number(r.get("latency_ms"), 1),
                ]
            )
        runs.add_row(*row)
    if report["runs"] and wide:
        print_table(console, runs, wide=True)
    elif report["runs"]:
        hidden.append(f"{len(report['runs'])} fine-tune run{'s' if len(report['runs']) > 1 else ''}")
    if hidden:
        console.print(f"{', '.join(hidden)}: see `zooens jobs show {job['id']} --wide`.")
    ens = report["ensemble"]
    if ens:
        t = _table(
            f"Greedy ensemble ({ens['size']} picks, val CE {ens['val_ce']:.4f})",
            [("model", True), ("strategy", True), ("lr", False), ("weight", False), ("val CE", False)]
            + ([("test acc", False)] if has_test else []),
            wide=wide,
        )
        for m in ens["members"]:
            t.add_row(
                escape(m["model_name"]),
                m["strategy"],
                f"{m['hparams'].get('lr', 0):g}",
                f"{m['weight']:.3f}",
                f"{m['val_ce']:.3f}",
                *([pct(m["test_acc"])] if has_test else []),
            )
        print_table(console, t, wide=wide)
        cost = _ensemble_cost(ens)
        if cost:
            console.print(cost)
        for line in _ensemble_calibration(ens):
            console.print(line)
    best = report.get("best_single")
    if ens and best:
        which = f"{escape(best['model_name'])} {best['strategy']}"
        if ens["test_acc"] is not None and best["test_acc"] is not None:
            console.print(
                f"test accuracy: ensemble {pct(ens['test_acc'])}, best single run {pct(best['test_acc'])} "
                f"({which}, lowest val CE)"
            )
        else:
            console.print(
                f"no test split: val accuracy ensemble {pct(ens['val_acc'])}, best single run "
                f"{pct(best['val_acc'])} ({which}, lowest val CE)"
            )
    audit = job.get("ranking_audit")
    if audit:
        print_audit(audit, console, wide=wide)
    for warning in job.get("warnings") or []:
        if not any(warning in line for line in said):
            console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if job["error"] and show_error:
        console.print(f"[red]error:[/red] {escape(job['error'])}")
    duration = job.get("duration_seconds")
    console.print(f"status: {job['status']}" + (f" in {seconds_text(duration)}" if duration is not None else ""))


def _number(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ensemble_cost(ens: dict) -> str:
    """One line: the ensemble's inference cost, and its budget when it had one."""
    if ens.get("gflops") is None:
        return ""
    text = f"inference cost: {ens['gflops']:.3f} GFLOPs per image"
    if ens.get("latency_ms") is not None:
        text += f", {ens['latency_ms']:.1f} ms batch-1 latency"
    budget = [
        f"{v:g} {unit}"
        for v, unit in ((ens.get("max_gflops"), "GFLOPs"), (ens.get("max_latency_ms"), "ms"))
        if v is not None
    ]
    return text + (f" (budget {budget[0]})" if budget else "")


def _ensemble_calibration(ens: dict) -> list[str]:
    """Lines: the ensemble's temperature, and NLL, Brier score and ECE of its calibrated probabilities on val
    and test (the test ECE and NLL before scaling in brackets); none for an ensemble built before calibration."""
    if ens.get("temperature") is None:
        return []
    t = ens["temperature"]
    lines = [f"temperature T = {t:.3f} (fitted on the selection rows; predictions calibrated)"]
    for split in ("val", "test"):
        if ens.get(f"{split}_nll") is None:
            continue
        text = (
            f"{split} calibrated: NLL {ens[f'{split}_nll']:.4f}, Brier {ens[f'{split}_brier']:.4f}, "
            f"ECE {100 * ens[f'{split}_ece']:.2f}%"
        )
        before = [
            f"{name} {fmt(ens.get(f'uncalibrated_{split}_{key}'))}"
            for name, key, fmt in (
                ("NLL", "nll", lambda v: f"{v:.4f}"),
                ("ECE", "ece", lambda v: f"{100 * v:.2f}%"),
            )
            if ens.get(f"uncalibrated_{split}_{key}") is not None
        ]
        lines.append(text + (f" (T = 1: {', '.join(before)})" if before else ""))
    return lines


PREDICTOR_LABELS = {
    "knn": "kNN",
    "logme": "LogME",
    "imagenet_top1": "ImageNet top-1 (static prior)",
    "num_params": "parameters (static prior)",
}
"""How the audit's predictors are shown: the two that look at the data, then the two that do not."""


def print_audit(audit: dict, console: Console, *, wide: bool = False) -> None:
    """How well each predictor (kNN, LogME; ImageNet top-1 and parameter count, the static priors) ranked the
    fine-tuned models."""
    t = _table(
        f"How good was the ranking? ({audit.get('audited_models', '?')} fine-tuned models; {audit.get('basis', '')})",
        [("predictor", True), ("Spearman", False), ("Kendall", False), ("regret", False), ("top-K", True)],
        wide=wide,
    )
    for name, p in (audit.get("predictors") or {}).items():

        def corr(c: dict | None) -> str:
            return "-" if not c or c.get("value") is None else f"{c['value']:+.3f}"

        regret = "-" if p.get("regret") is None else f"{100 * p['regret']:.1f} pts"
        t.add_row(
            PREDICTOR_LABELS.get(name, name),
            corr(p.get("spearman")),
            corr(p.get("kendall")),
            regret,
            escape(", ".join(p.get("top_k_models") or [])),
        )
    print_table(console, t, wide=wide)
