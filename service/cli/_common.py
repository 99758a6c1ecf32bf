"""Helpers shared by the CLI commands."""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from typer._click import exceptions as click_errors  # typer vendors click: its usage errors are these
from typer.core import TyperGroup

from zooens.errors import ConfigError, NotFoundError, ZooensError
from zooens.settings import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

F = TypeVar("F", bound=Callable)

PIPE_WIDTH = 10_000
"""Width of the console when stdout is not a terminal: tables keep every column (at their natural width)."""


def _piped_width(stream: object) -> int | None:
    """COLUMNS, else PIPE_WIDTH, when `stream` is not a terminal; None on a terminal (its own width)."""
    try:
        if stream.isatty():  # type: ignore[attr-defined]
            return None
    except (AttributeError, ValueError):
        pass
    return int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else PIPE_WIDTH


class CliConsole(Console):
    """A Rich console whose width is decided each time it prints, from the stream it writes to then: a
    module-level console follows each command's terminal, pipe and COLUMNS."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        width = None if self._width is not None else _piped_width(self.file)
        return size if width is None else ConsoleDimensions(width, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


def make_console(*, stderr: bool = False) -> Console:
    """A console for the CLI: the terminal's width on a terminal, unbounded when piped (nothing cut off)
    unless COLUMNS says otherwise; no syntax highlighting of numbers in messages. Rich honours NO_COLOR."""
    return CliConsole(stderr=stderr, highlight=False)


err_console = make_console(stderr=True)

_STATE = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    """`zooens -q ...`: no progress bars in any command (set by the top-level callback)."""
    _STATE["quiet"] = quiet


def is_quiet() -> bool:
    return _STATE["quiet"]


__all__ = [
    "CliLogHandler",
    "ZooensGroup",
    "escape",
    "err_console",
    "fail_on_error",
    "held_warnings",
    "is_quiet",
    "make_console",
    "no_registry_text",
    "open_registry",
    "parse_floats",
    "parse_ints",
    "parse_strategy_options",
    "print_error",
    "registry_exists",
    "registry_text",
    "resolve_dataset_id",
    "set_quiet",
]


def _without_prefix(message: str) -> str:
    """A message without a leading "error:" of its own: the CLI adds one."""
    stripped = message.strip()
    while stripped[:6].lower() == "error:":
        stripped = stripped[6:].lstrip()
    return stripped


def print_error(message: str) -> None:
    """One error, in the one style of the CLI: `error: ` once, then the message word-wrapped at the terminal's
    width (a pipe gets one line)."""
    err_console.print(f"[red]error:[/red] {escape(_without_prefix(message))}")


def fail_on_error(fn: F) -> F:
    """Turn a domain error into an `error:` message (`print_error`) and exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ZooensError as exc:
            print_error(str(exc))
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


class ZooensGroup(TyperGroup):
    """The top-level command group: click's own errors (an unknown option, a bad value) end like every other
    error of the CLI, `error: ...` after the usage line, instead of click's "Error: ..."."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click_errors.UsageError as exc:
            if exc.ctx is not None:
                typer.echo(f"{exc.ctx.get_usage()}\nTry '{exc.ctx.command_path} --help' for help.", err=True)
            print_error(exc.format_message())
            sys.exit(exc.exit_code)
        except click_errors.ClickException as exc:
            print_error(exc.format_message())
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


class CliLogHandler(logging.Handler):
    """Log records as the CLI prints them, on stderr: "warning: ..." and "error: ..." without the logger's
    name (a reader wants the message, not the module), word-wrapped like `print_error`; with -v, INFO and
    DEBUG lines keep the logger's name ("zooens.pipeline.checks: ..."), which is what they are read for.

    While `held_warnings()` is open, warnings wait: they are printed when it closes normally and dropped
    when it ends with an error (a warning about sizes is noise above the error that stops the job)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] | None = None
        self.said: list[str] = []  # the warnings printed by this command, so a report does not say them twice

    def emit(self, record: logging.LogRecord) -> None:
        if self.held is not None and logging.WARNING <= record.levelno < logging.ERROR:
            self.held.append(record)
            return
        try:
            self._print(record)
        except Exception:  # a log line must never end the command
            self.handleError(record)

    def _print(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        if record.levelno >= logging.ERROR:
            print_error(message)
        elif record.levelno >= logging.WARNING:
            self.said.append(message)
            err_console.print(f"[yellow]warning:[/yellow] {escape(message)}")
        else:
            err_console.print(f"{escape(record.name)}: {escape(message)}", style="dim")


CLI_LOG_HANDLER = CliLogHandler()


def install_log_handler(level: int) -> None:
    """The root logger prints through `CLI_LOG_HANDLER` only, at `level` (called by the top-level callback)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, CliLogHandler):
            root.removeHandler(handler)
    CLI_LOG_HANDLER.held = None
    CLI_LOG_HANDLER.said = []
    CLI_LOG_HANDLER.setLevel(logging.NOTSET)
    root.addHandler(CLI_LOG_HANDLER)
    root.setLevel(level)


@contextlib.contextmanager
def held_warnings() -> Iterator[Callable[[], None]]:
    """Hold the warnings logged inside (a submission's checks) until the block ends without an error, or until
    the function it yields is called (the job was accepted: say them before it runs); drop them on an error."""
    handler = CLI_LOG_HANDLER
    if handler.held is not None:  # nested: the outer block decides
        yield lambda: None
        return
    handler.held = []

    def release() -> None:
        held, handler.held = handler.held or [], None
        for record in held:
            handler._print(record)

    try:
        yield release
    except BaseException:
        handler.held = None
        raise
    release()


def registry_text(url: str | None = None) -> str:
    """The registry's URL as a person may be shown it (a password hidden)."""
    from sqlalchemy.engine import make_url  # imported here: SQLAlchemy costs `zooens --help` a start-up

    url = url or get_settings().resolved_database_url
    return make_url(url).render_as_string(hide_password=True)


def registry_exists() -> bool:
    """False when the configured registry is a SQLite file that does not exist yet (nothing has run with this
    ZOOENS_HOME); a server's database (PostgreSQL) is taken to exist: connecting says otherwise."""
    from sqlalchemy.engine import make_url  # imported here: SQLAlchemy costs `zooens --help` a start-up

    url = make_url(get_settings().resolved_database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return True
    return os.path.exists(url.database)


def no_registry_text() -> str:
    """What a read finds where there is no registry: where it looked and how to point at one."""
    settings = get_settings()
    origin = getattr(settings, "home_origin", None)
    home = f"ZOOENS_HOME {settings.home.resolve()}" + (f", from {origin}" if origin else "")
    return (
        f"No registry at {registry_text()} ({home}): nothing has run with it yet. Point at your registry with "
        "ZOOENS_HOME=DIR (the folder holding zooens.db) or ZOOENS_DATABASE_URL=URL, or run `zooens run` to make "
        "one there."
    )


def no_registry_error() -> NotFoundError:
    return NotFoundError(no_registry_text())


def open_registry() -> None:
    """Before a command that reads the registry: NotFoundError when there is none (a read never makes an empty
    one in a new directory), else its tables brought up to date."""
    from zooens.service.db.session import upgrade_to_head  # imported here: the registry's start-up cost

    if not registry_exists():
        raise no_registry_error()
    upgrade_to_head()


def resolve_dataset_id(s: Session, spec: str | int) -> int:
    """A registered dataset's id from its id or its name, as every command that takes one accepts; NotFoundError
    for an unknown name (with the closest names), ConfigError when several datasets share the name."""
    from zooens.service import registry  # imported here: the registry's start-up cost

    text = str(spec).strip()
    if text.isdigit():
        return registry.get_dataset(s, int(text)).id
    rows, _ = registry.list_datasets(s, limit=1_000_000)
    named = [r for r in rows if r.name == text] or [r for r in rows if r.name.lower() == text.lower()]
    if len(named) == 1:
        return named[0].id
    if named:
        ids = ", ".join(str(r.id) for r in sorted(named, key=lambda r: r.id))
        raise ConfigError(
            f"{len(named)} registered datasets are named {text!r} (ids {ids}); give the id instead "
            "(`zooens datasets list` shows each one's source)."
        )
    close = difflib.get_close_matches(text, sorted({r.name for r in rows}), n=3)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise NotFoundError(
        f"No registered dataset is named {text!r}; {hint}`zooens datasets list` shows the names and ids "
        f"in the registry at {registry_text()}."
    )


def parse_floats(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"Expected comma-separated numbers, got {text!r}.") from None


def parse_ints(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"Expected comma-separated integers, got {text!r}.") from None


def parse_strategy_options(items: list[str]) -> dict[str, dict]:
    """`film.head="lda"` and `lora.rank=8` into {"film": {"head": "lda"}, "lora": {"rank": 8}}."""
    import json

    out: dict[str, dict] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        strategy, dot, name = key.partition(".")
        if not sep or not dot or not strategy or not name:
            raise ConfigError(f"Give strategy options as STRATEGY.KEY=VALUE, e.g. lora.rank=8; got {item!r}.")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare word: a string
        out.setdefault(strategy, {})[name] = value
    return out
