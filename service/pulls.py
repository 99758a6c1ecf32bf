"""Weight pulls started over HTTP: each runs `zooens.zoo._pull.pull` in a background thread of the server process,
and this tracker keeps its status, per-file byte progress and per-model outcomes in memory for the API to read.

Only one pull of a model runs at a time in this process: a request for models already being pulled starts no
second thread for them (the library's file lock keeps other processes apart). The records are this process's
only: a restart forgets them (the weights pulled stay in the hub cache).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from zooens.errors import OfflineError, ZooensError
from zooens.service.reports import refresh_catalogue
from zooens.zoo import pull

__all__ = [
    "MAX_KEPT_PULLS",
    "ServerPull",
    "get_pull",
    "start_pull",
]

logger = logging.getLogger(__name__)

MAX_KEPT_PULLS = 200
"""Finished pulls beyond this many (the oldest first) are forgotten."""

EARLY_FAILURE_WAIT_SECONDS = 3.0
"""How long a request waits for a pull's first sign of life: a hub that cannot be reached fails within it, and the
request answers 503 at once instead of a pull that fails a moment later."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ServerPull:
    """One pull: the models it fetches, its status (running, succeeded, failed), bytes per file, outcomes."""

    id: str
    models: list[str]
    elsewhere: dict[str, str] = field(default_factory=dict)  # model -> the running pull that fetches it
    status: str = "running"
    error: str | None = None
    created_at: datetime = field(default_factory=_now)
    finished_at: datetime | None = None
    current: str | None = None
    files: dict[tuple[str, str], list[int | None]] = field(default_factory=dict)  # (model, file) -> [done, total]
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    offline: bool = False

    def progress(self, model: str, filename: str, done_bytes: int, total_bytes: int | None) -> None:
        with _lock:
            self.files[(model, filename)] = [int(done_bytes), None if total_bytes is None else int(total_bytes)]
            self.current = model
        self.started.set()

    def to_dict(self) -> dict[str, Any]:
        with _lock:
            files = [
                {"model": m, "filename": f, "done_bytes": d, "total_bytes": t} for (m, f), (d, t) in self.files.items()
            ]
            outcomes = [dict(o) for o in self.outcomes]
            finished = {o["model"] for o in outcomes}
            return {
                "id": self.id,
                "status": self.status,
                "models": list(self.models),
                "elsewhere": dict(self.elsewhere),
                "error": self.error,
                "created_at": self.created_at,
                "finished_at": self.finished_at,
                "current": self.current if self.status == "running" else None,
                "models_done": len(finished),
                "done_bytes": sum(int(f["done_bytes"] or 0) for f in files),
                "total_bytes": sum(int(f["total_bytes"] or 0) for f in files),
                "files": files,
                "outcomes": outcomes,
            }


_lock = threading.RLock()
_pulls: dict[str, ServerPull] = {}
_active: dict[str, str] = {}  # model -> id of the running pull fetching it


def _outcome_dict(outcome: Any) -> dict[str, Any]:
    get = outcome.get if isinstance(outcome, dict) else lambda k, d=None: getattr(outcome, k, d)
    files = get("files")
    return {
        "model": str(get("model")),
        "status": str(get("status")),
        "files": [str(f) for f in files] if isinstance(files, list | tuple) else files,
        "bytes": get("bytes"),
        "message": get("message"),
    }


def _forget_old() -> None:
    finished = [p for p in _pulls.values() if p.status != "running"]
    for old in sorted(finished, key=lambda p: p.created_at)[: max(0, len(_pulls) - MAX_KEPT_PULLS)]:
        _pulls.pop(old.id, None)


def _default_runner(models: Sequence[str], on_progress: Callable[[Any], None]) -> Any:
    return pull(list(models), progress=False, on_progress=on_progress)


def _run(record: ServerPull, runner: Callable[[Sequence[str], Callable[[Any], None]], Any]) -> None:
    def on_progress(event: Any) -> None:
        record.progress(
            str(event.model), str(event.filename), getattr(event, "done_bytes", 0), getattr(event, "total_bytes", None)
        )

    status, error, outcomes = "failed", None, []
    try:
        report = runner(record.models, on_progress)
        outcomes = [_outcome_dict(o) for o in getattr(report, "outcomes", [])]
        ok = getattr(report, "ok", all(o["status"] != "failed" for o in outcomes))
        status = "succeeded" if ok else "failed"
        if not ok:
            failed = [o for o in outcomes if o["status"] == "failed"]
            error = "; ".join(f"{o['model']}: {o['message'] or 'failed'}" for o in failed) or "the pull failed"
    except OfflineError as exc:
        record.offline = True
        error = str(exc)
    except ZooensError as exc:
        error = str(exc)
    except Exception:  # noqa: BLE001  the traceback stays in the log; the record says where to look
        logger.exception("pull %s of %s failed", record.id, ", ".join(record.models))
        error = "The pull failed unexpectedly; the error is in the server's log."
    if status == "succeeded" or any(o["status"] == "pulled" for o in outcomes):
        try:  # so that the models show as present as soon as the pull says it is done
            refresh_catalogue()
        except Exception:  # noqa: BLE001
            logger.warning("could not refresh the zoo catalogue after pull %s", record.id, exc_info=True)
    with _lock:
        record.status, record.error, record.outcomes = status, error, outcomes
        record.finished_at = _now()
        for model in record.models:
            if _active.get(model) == record.id:
                del _active[model]
    record.started.set()
    record.done.set()


def start_pull(
    models: Sequence[str],
    *,
    runner: Callable[[Sequence[str], Callable[[Any], None]], Any] | None = None,
    wait_s: float = EARLY_FAILURE_WAIT_SECONDS,
) -> tuple[ServerPull, bool]:
    """Start pulling `models` (resolved weight-set names) in a background thread; (its record, True when a new
    pull was started). Models already being pulled here are left to their running pull (`elsewhere`); when that is
    all of them, the running pull is returned (False). OfflineError when the pull fails that way
    within `wait_s` (HF_HUB_OFFLINE is set and weights are missing, or the hub cannot be reached)."""
    with _lock:
        elsewhere = {m: _active[m] for m in models if m in _active}
        todo = [m for m in dict.fromkeys(models) if m not in elsewhere]
        if not todo:
            return _pulls[next(iter(elsewhere.values()))], False
        record = ServerPull(id=secrets.token_hex(8), models=todo, elsewhere=elsewhere)
        _pulls[record.id] = record
        for m in todo:
            _active[m] = record.id
        _forget_old()
    thread = threading.Thread(
        target=_run, args=(record, runner or _default_runner), name=f"zoo-pull-{record.id}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + wait_s
    while not record.started.is_set() and time.monotonic() < deadline:
        record.started.wait(0.05)
    if record.done.is_set() and record.offline:
        with _lock:
            _pulls.pop(record.id, None)
        raise OfflineError(record.error or "The hub cannot be reached.")
    return record, True


def get_pull(pull_id: str) -> ServerPull | None:
    with _lock:
        return _pulls.get(pull_id)
