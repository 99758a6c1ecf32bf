"""How progress is shown, decided in one place, and the time left of a job's remaining units.

`display()` says where output goes:

- "bars": a terminal. tqdm bars, with the bars inside a unit (a model's batches, a run's steps, a
  download's bytes) nested under the job's bar.
- "notebook": a Jupyter kernel. One `tqdm.auto` bar (the job's or the fit's); no bar inside a unit,
  which would print a widget per model and per run.
- "lines": anything else: a pipe, a file, a CI log, or a terminal with TERM=dumb (which cannot move
  the cursor). No bar at all and never a carriage return or an escape code: one plain line per
  finished unit (`UnitProgress`), readable in a log.

Code that makes a bar inside a unit asks `inner_bars(progress)`; code that reports a job's or a
fit's units uses `UnitProgress`. Work inside a unit (a model's images embedded) also tells
`report_inner(done, total)`, which reaches whoever listens in this context (`inner_sink`: the job
runner, which writes it to the job's progress for the API and the job page).

The time left (`estimate_eta`) is the sum, over the remaining
units, of the mean duration of the finished units of the same kind (`unit_kind`: pull, embed,
fine-tune by strategy, ensemble), not one global rate: embedding a model and fine-tuning one take
times that differ tenfold.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, Protocol, TextIO

from tqdm.auto import tqdm

__all__ = [
    "BARS",
    "LINES",
    "NOTEBOOK",
    "Display",
    "UnitProgress",
    "display",
    "estimate_eta",
    "format_eta",
    "in_notebook",
    "inner_sink",
    "report_inner",
    "inner_bars",
    "unit_kind",
    "unit_label",
]

Display = Literal["bars", "notebook", "lines"]
BARS: Display = "bars"
NOTEBOOK: Display = "notebook"
LINES: Display = "lines"


def in_notebook() -> bool:
    """True inside a Jupyter (ipykernel) kernel, where `tqdm.auto` draws a widget."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def display(stream: TextIO | None = None, environ: Mapping[str, str] | None = None) -> Display:
    """How progress written to `stream` (default: stderr, where tqdm writes) is shown: "notebook" in a
    Jupyter kernel, "bars" on a terminal that can move its cursor, "lines" otherwise (piped, redirected,
    TERM=dumb). NO_COLOR needs nothing here: no bar and no line is coloured."""
    environ = os.environ if environ is None else environ
    if in_notebook():
        return NOTEBOOK
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # closed or not a file
        tty = False
    if not tty or environ.get("TERM", "") == "dumb":
        return LINES
    return BARS


def inner_bars(progress: bool) -> bool:
    """Whether a bar inside a unit (a model's embedding batches, a run's steps, a download's bytes) is
    drawn: only when the caller asked for progress and a terminal shows it (`display() == "bars"`)."""
    return progress and display() == BARS


class UnitLike(Protocol):
    """What `unit_kind` and `unit_label` read of a unit key (`zooens.pipeline.UnitKey`)."""

    kind: str
    model_name: str | None
    strategy: str | None
    lr: float | None
    steps: int | None


def unit_kind(key: UnitLike) -> str:
    """The kind whose finished units predict a unit's duration: "pull", "embed", "finetune:<strategy>"
    (a FiLM run and a linear probe take very different times) or "ensemble"."""
    return f"{key.kind}:{key.strategy}" if key.kind == "finetune" else key.kind


def unit_label(key: UnitLike) -> str:
    """A unit in words, e.g. "fine-tune resnet18 linear lr=1 steps=200", "embed and rank resnet18"."""
    if key.kind == "finetune":
        return f"fine-tune {key.model_name} {key.strategy} lr={key.lr:g} steps={key.steps}"
    if key.kind == "embed":
        return f"embed and rank {key.model_name}"
    if key.kind == "pull":
        return f"pull {key.model_name}"
    return "build the ensemble" if key.kind == "ensemble" else str(key)


def estimate_eta(remaining: Iterable[str], durations: Mapping[str, Sequence[float]]) -> tuple[float, int]:
    """(seconds, untimed) for the `remaining` units (their kinds, one entry per unit): `seconds` adds, for each
    unit whose kind has finished units in `durations`, their mean duration; `untimed` counts the units of a kind
    with none yet, which nothing honest can be said about (the ETA is then a lower bound). (0.0, 0) when
    nothing remains."""
    total, untimed = 0.0, 0
    for kind, count in Counter(remaining).items():
        seen = durations.get(kind) or ()
        if seen:
            total += count * sum(seen) / len(seen)
        else:
            untimed += count
    return total, untimed


def _clock(seconds: float) -> str:
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes}:{sec:02d}"


def format_eta(eta: tuple[float, int]) -> str:
    """An `estimate_eta` in words: "0:31", "1:02:09"; "at least 0:31" while some remaining units are of a kind
    not timed yet; "?" while none is."""
    seconds, untimed = eta
    if untimed and not seconds:
        return "?"
    return f"at least {_clock(seconds)}" if untimed else _clock(seconds)


def _seconds(x: float) -> str:
    return f"{x:.1f} s" if x < 60 else _clock(x)


class UnitProgress:
    """The progress of a job's (or a fit's) units, as `display()` says: one tqdm bar on a terminal or in a
    notebook, its text the current unit and the ETA by unit kind; one plain line per finished unit otherwise,
    e.g. "[3/12] fine-tune resnet18 linear lr=1 steps=200 done in 4.1 s (ETA 0:31)".

    `planned` is the kind (`unit_kind`) of every unit the work will run, in any order. Units finished
    before (a resumed job) are reported with `skip`: they count towards the position, not towards the
    ETA, which rests only on units timed in this process. A unit's duration is the time since the
    previous `done`, `skip` or `begin` (so with a parallel executor it is the pace at which units end).
    Nothing is shown when `enabled` is False.
    """

    def __init__(
        self,
        planned: Iterable[str],
        *,
        desc: str,
        enabled: bool = True,
        stream: TextIO | None = None,
        mode: Display | None = None,
    ) -> None:
        self.remaining = Counter(planned)
        self.total = sum(self.remaining.values())
        self.position = 0
        self.desc = desc
        self.enabled = enabled
        self.stream = stream
        self.mode: Display = mode or display(stream)
        self.durations: dict[str, list[float]] = defaultdict(list)
        self.last = time.perf_counter()
        self.bar: tqdm | None = None
        if enabled and self.mode != LINES:
            self.bar = tqdm(
                total=self.total,
                desc=desc,
                unit="unit",
                dynamic_ncols=True,
                file=stream,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
            )

    def eta(self) -> tuple[float, int]:
        """`estimate_eta` over the units not done yet."""
        return estimate_eta(self.remaining.elements(), self.durations)

    def begin(self, label: str | None = None) -> None:
        """A unit (or a stage) starts now: its time counts from here; the bar shows `label`."""
        self.last = time.perf_counter()
        if self.bar is not None and label:
            self.bar.set_postfix_str(f"{label}, ETA {format_eta(self.eta())}", refresh=True)

    def skip(self, kind: str, count: int = 1, label: str | None = None) -> None:
        """`count` units of `kind` were done before this process: counted, not timed."""
        if count <= 0:
            return
        self._take(kind, count)
        self.last = time.perf_counter()
        if self.bar is not None:
            self.bar.update(count)
        elif self.enabled:
            self._line(f"{label or kind}: {count} already done")

    def done(self, kind: str, label: str, seconds: float | None = None) -> None:
        """One unit of `kind` finished; `seconds` it took (default: since the last `begin`, `done` or `skip`)."""
        now = time.perf_counter()
        took = now - self.last if seconds is None else seconds
        self.last = now
        self._take(kind, 1)
        self.durations[kind].append(took)
        eta = self.eta()
        if self.bar is not None:
            self.bar.set_postfix_str(f"ETA {format_eta(eta)}" if self.position < self.total else "", refresh=False)
            self.bar.update(1)
        elif self.enabled:
            tail = f" (ETA {format_eta(eta)})" if self.position < self.total else ""
            self._line(f"{label} done in {_seconds(took)}{tail}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> UnitProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take(self, kind: str, count: int) -> None:
        self.position += count
        left = self.remaining.get(kind, 0)
        if left <= count:
            self.remaining.pop(kind, None)
        else:
            self.remaining[kind] = left - count

    def _line(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(f"[{self.position}/{self.total}] {text}\n")
        stream.flush()


_INNER: ContextVar[Callable[[int, int], None] | None] = ContextVar("zooens_inner_progress", default=None)


@contextmanager
def inner_sink(callback: Callable[[int, int], None]) -> Iterator[None]:
    """Within the block, `report_inner(done, total)` calls `callback(done, total)` (in this context only:
    another thread or process reports nowhere)."""
    token = _INNER.set(callback)
    try:
        yield
    finally:
        _INNER.reset(token)


def report_inner(done: int, total: int) -> None:
    """Progress inside the current unit (e.g. images embedded of a split): to the `inner_sink` listening
    here, if any. Cheap when none listens; a listener throttles its own writes."""
    callback = _INNER.get()
    if callback is not None:
        callback(int(done), int(total))
