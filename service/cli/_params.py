"""CLI options made from `JobParams`' fields, so that a job parameter is declared once, on the model.

    @fail_on_error
    @job_options()
    def run(dataset: str = typer.Option(...), *, as_json: bool = ..., **job: Any) -> None:
        params = job_params(job)

`job_options` rewrites the command's `__signature__` (which Typer reads): in place of `**job`, one
keyword option per field, between the command's own positional-or-keyword parameters and its keyword-only
ones. Each is `--field-name` (or the flags the field declares: `json_schema_extra={"x-cli": ...}`), with
the model's default and the field's description as help. A list is one comma-separated string
(`--lr 0.1,0.01`); a Literal shows its choices (the model checks them), an int-or-Literal union (`--k 5`,
`--k auto`) too; a dict of dicts is a repeatable
STRATEGY.KEY=VALUE (`-o lora.rank=4`); a bool is `--name/--no-name`. A field of another type is refused
when the command is declared. `job_params` turns what the command received into a validated model,
raising the domain error (`fail_on_error` prints it as one line, exit 2).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import typer
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from zooens.pipeline.params import JobParams, domain_error
from zooens.service.cli._common import parse_floats, parse_ints, parse_strategy_options

__all__ = ["job_options", "job_params"]

F = TypeVar("F", bound=Callable[..., Any])
STRATEGY_OPTION = "STRATEGY.KEY=VALUE"


@dataclass(frozen=True)
class _Spelling:
    """How one field is written on the command line: the parameter's type for Typer, its metavar,
    and the parse from what Typer gives to what the model takes."""

    annotation: Any
    metavar: str | None = None
    parse: Callable[[Any], Any] = lambda value: value
    to_cli: Callable[[Any], Any] = lambda value: value  # the model's default as the option's default


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [x.strip() for x in text.split(",") if x.strip()]


def _join(value: list | None) -> str | None:
    return None if value is None else ",".join(str(v) for v in value)


_LISTS: dict[Any, tuple[str, Callable[[str | None], Any]]] = {
    str: ("<str>,...", _split),
    int: ("<int>,...", parse_ints),
    float: ("<float>,...", parse_floats),
}


def _int_or_choice(annotation: Any) -> tuple[str, ...] | None:
    """The words of a union of an int (constrained or not) and a Literal of words, e.g. `k`'s
    `int | Literal["auto"]`; None for any other type."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    members = [
        typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a for a in typing.get_args(annotation)
    ]
    literals = [a for a in members if typing.get_origin(a) is Literal]
    if len(members) != 2 or int not in members or len(literals) != 1:
        return None
    words = typing.get_args(literals[0])
    return tuple(words) if all(isinstance(w, str) for w in words) else None


def _int_or_word(value: str | None) -> int | str | None:
    """`--k 5` is the int 5, `--k auto` the word (the model checks both)."""
    if value is None:
        return None
    text = value.strip()
    return int(text) if text.lstrip("+-").isdigit() else text


def _spelling(name: str, annotation: Any) -> _Spelling:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1
    inner = args[0] if optional else annotation
    origin, inner_args = typing.get_origin(inner), typing.get_args(inner)
    if inner in (int, float, str, bool):
        return _Spelling(annotation)
    if origin is Literal:
        return _Spelling(str | None if optional else str, "[" + "|".join(map(str, inner_args)) + "]")
    if origin is list and inner_args and inner_args[0] in _LISTS:
        metavar, parse = _LISTS[inner_args[0]]
        return _Spelling(str | None, metavar, parse, _join)
    choice = _int_or_choice(inner)
    if choice is not None:
        return _Spelling(str | None if optional else str, "[<int>|" + "|".join(choice) + "]", _int_or_word, str)
    if origin is dict and len(inner_args) == 2 and typing.get_origin(inner_args[1]) is dict:
        return _Spelling(
            list[str] | None, STRATEGY_OPTION, lambda items: parse_strategy_options(items or []), lambda _: None
        )
    raise TypeError(f"{name}: {annotation} has no command-line spelling in zooens.service.cli._params.")


def _flags(name: str, field: FieldInfo) -> list[str]:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    flag = "--" + name.replace("_", "-")
    flags = extra.get("x-cli") or (f"{flag}/--no-{flag[2:]}" if field.annotation is bool else flag)
    return [flags] if isinstance(flags, str) else list(flags)


def _help(spelling: _Spelling, field: FieldInfo) -> str:
    text = field.description or ""
    if spelling.metavar == STRATEGY_OPTION:
        text += " Repeatable; VALUE is JSON (a bare word is a string)."
    return text


def _fields(model: type[JobParams], only: Iterable[str] | None) -> dict[str, FieldInfo]:
    fields = model.model_fields
    if only is None:
        return dict(fields)
    unknown = sorted(set(only) - set(fields))
    if unknown:
        raise ValueError(f"No field {', '.join(unknown)} in {model.__name__}.")
    return {name: fields[name] for name in only}


def job_options(
    *, only: Iterable[str] | None = None, defaults: Mapping[str, Any] | None = None, model: type[JobParams] = JobParams
) -> Callable[[F], F]:
    """A decorator adding the fields of `model` (those named in `only`, else all) to a Typer command as
    options in place of its `**job`; `defaults` replaces the model's default of a field (a model value)."""
    only = None if only is None else tuple(only)
    defaults = dict(defaults or {})

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
        own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
        if not own or own[-1].kind is not inspect.Parameter.VAR_KEYWORD:
            raise TypeError(f"{fn.__name__} takes no **kwargs for the job's options.")
        added = []
        for name, field in _fields(model, only).items():
            spelling = _spelling(name, field.annotation)
            default = defaults[name] if name in defaults else field.get_default(call_default_factory=True)
            option = typer.Option(
                spelling.to_cli(default), *_flags(name, field), help=_help(spelling, field), metavar=spelling.metavar
            )
            added.append(
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=spelling.annotation)
            )
        positional = [p for p in own[:-1] if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        keyword = [p for p in own[:-1] if p.kind is inspect.Parameter.KEYWORD_ONLY]
        fn.__signature__ = signature.replace(parameters=[*positional, *added, *keyword])  # type: ignore[attr-defined]
        return fn

    return decorate


def job_params(values: Mapping[str, Any], *, model: type[JobParams] = JobParams, **fixed: Any) -> JobParams:
    """The validated model from the options a `job_options` command received (`values`: its `**job`),
    with `fixed` fields set as given; a bad value raises the domain error (as `parse_params`)."""
    fields = {name: _spelling(name, model.model_fields[name].annotation).parse(v) for name, v in values.items()}
    try:
        return model(**fields, **fixed)
    except ValidationError as exc:
        raise domain_error(exc) from None
