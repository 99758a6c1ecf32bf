"""One small registry for everything looked up by name: weight sets, strategies, adapter
methods, VTAB tasks.

    STRATEGIES = Registry("strategy", error=ConfigError, hint="see `zooens strategies`")

    @STRATEGIES.register("linear")
    class LinearStrategy: ...

    STRATEGIES.get("lineer")  # ConfigError: Unknown strategy 'lineer'; did you mean 'linear'? ...

Plugins register themselves when their module is imported (the timm way: a package's
`__init__` imports the modules that register); the registry imports none of them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from zooens.errors import ConfigError, ConflictError, ZooensError

__all__ = ["Registry", "close_matches"]

T = TypeVar("T")
_MISSING = object()


def close_matches(name: str, choices: list[str], n: int = 5) -> list[str]:
    """The registered names closest to `name` (by spelling, then by prefix)."""
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.6)
    if not close:
        close = [c for c in choices if c.startswith(name.split(".")[0])][:n]
    return close


class Registry(Generic[T]):
    """Named entries of one kind; a duplicate name is an error, an unknown one names the closest.

    `kind` is what an entry is called in messages ("strategy"); `error` is the domain error an
    unknown name raises (a `ZooensError` subclass); `hint` ends that message.
    """

    def __init__(self, kind: str, *, error: type[ZooensError] = ConfigError, hint: str = "") -> None:
        self.kind = kind
        self.error = error
        self.hint = hint
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, entry: T) -> T: ...

    def register(self, name: str, entry: object = _MISSING) -> object:
        """Add `entry` under `name`, directly or as a decorator; ConflictError if the name is taken."""
        if entry is _MISSING:

            def decorator(obj: T) -> T:
                self.register(name, obj)
                return obj

            return decorator
        if name in self._entries:
            raise ConflictError(f"The {self.kind} {name!r} is registered twice; give the second one another name.")
        self._entries[name] = entry  # type: ignore[assignment]
        return entry

    def get(self, name: str) -> T:
        """The entry named `name`; the registry's error, naming the closest names, if there is none."""
        try:
            return self._entries[name]
        except KeyError:
            raise self.error(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        names = self.names()
        close = close_matches(name, names)
        message = f"Unknown {self.kind} {name!r}"
        message += f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
        if len(names) <= 30:
            message += f" Choose from: {', '.join(names)}."
        if self.hint:
            message += f" {self.hint}"
        return message

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
