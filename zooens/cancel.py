"""Cooperative cancellation: long loops (training steps, embedding batches) call
`check_cancelled()`, which raises `Cancelled` once the surrounding `cancel_scope` was cancelled
or its time limit passed.

The scope lives in a context variable, so library code needs no extra parameter and runs
unchanged outside a scope (the check is then a no-op).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from zooens.errors import Cancelled

__all__ = ["CancelScope", "cancel_scope", "check_cancelled"]


class CancelScope:
    """A cancel flag (settable from any thread) and an optional deadline on the monotonic clock."""

    def __init__(self, time_limit: float | None = None, event: threading.Event | None = None) -> None:
        self.event = event or threading.Event()
        self.time_limit = time_limit
        self.deadline = None if time_limit is None else time.monotonic() + time_limit
        self.reason = "a cancel was requested"

    def cancel(self, reason: str = "a cancel was requested") -> None:
        self.reason = reason
        self.event.set()

    def check(self) -> None:
        if self.event.is_set():
            raise Cancelled(f"Stopped: {self.reason}.")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Cancelled(
                f"Stopped after its time limit of {self.time_limit:g} s; raise ZOOENS_UNIT_TIME_LIMIT_SECONDS "
                "or ask for fewer steps."
            )


_current: ContextVar[CancelScope | None] = ContextVar("zooens_cancel_scope", default=None)


@contextmanager
def cancel_scope(time_limit: float | None = None, event: threading.Event | None = None) -> Iterator[CancelScope]:
    """Run the body under a new scope; nested scopes are all checked."""
    scope = CancelScope(time_limit, event)
    outer = _current.get()
    if outer is not None:
        parent_check, own_check = outer.check, scope.check

        def both() -> None:
            parent_check()
            own_check()

        scope.check = both  # type: ignore[method-assign]
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


def check_cancelled() -> None:
    """Raise `Cancelled` if the current scope was cancelled or ran out of time; cheap otherwise."""
    scope = _current.get()
    if scope is not None:
        scope.check()
