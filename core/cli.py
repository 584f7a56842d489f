"""The CLI is the dataclass: argparse options built from (nested) frozen dataclass fields.

Each field declared with `arg(default, "help")` becomes `--field_name` (flat: nested configs are
flattened, so `--pm` reaches `TrainConfig.model.pm`); a field that declares its dashed spelling as an
alias (`--dry-run`) is listed by --help under that spelling alone (`--dry_run` still parses). Booleans accept the original's spellings:
`--random_shifts`, `--total_pool=True`, `--total_pool false`. Options are never abbreviated
(`--seed` is not `--seeds`)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def arg(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING,
        choices: Sequence[Any] | None = None, aliases: Sequence[str] = (), unset: bool = False) -> Any:
    """A dataclass field with a help text (and optional choices / extra option names).

    `unset`: the field's None means "not given" (e.g. "the sweep's"), so a command line cannot spell
    it: `--logs ""` (an empty shell variable) is a usage error and `--logs none` is the text "none",
    rather than the option silently dropped. Without it, none/null/"" mean None (`--flanker_ecc none`)."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "aliases": tuple(aliases),
            "unset": unset}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def check_choice(name: str, value: Any, valid: Sequence[Any], error: type[Exception] = ValueError) -> None:
    """The one check of a value against its valid choices; the error names both."""
    if value not in tuple(valid):
        raise error(f"{name} {value!r} is not one of {', '.join(map(str, valid))}")


def check_choices(cfg: Any) -> None:
    """Check every field of a dataclass declared with `arg(..., choices=...)` (its __post_init__ calls this)."""
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        if choices:
            check_choice(f.name, getattr(cfg, f.name), choices)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (and exit with status 2), with no abbreviations: a
    prefix (`--seed 2`) is an unknown option, never silently another one (`--seeds 2`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "t", "yes", "y", "on"):
        return True
    if value in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean; use true or false")


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (inf is allowed)") from None


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return tp, False


def _converter(tp: Any, unset: bool = False) -> tuple[Any, Sequence[Any] | None]:
    base, optional = _unwrap_optional(tp)
    choices = None
    if typing.get_origin(base) is typing.Literal:
        choices = typing.get_args(base)
        base = type(choices[0])
    conv = {bool: parse_bool, float: _parse_float, int: int, str: str, Path: Path}.get(base)
    if conv is None:
        raise TypeError(f"unsupported CLI field type {tp!r}")
    if optional:
        inner = conv

        def conv(text: str, _inner=inner):  # type: ignore[no-redef]
            if not text.strip():
                if unset:  # an empty shell variable: never "not given"
                    raise argparse.ArgumentTypeError(f"got {text!r}, an empty value (leave the option out instead)")
                return None
            return None if not unset and text.strip().lower() in ("none", "null") else _inner(text)

        conv.__name__ = getattr(inner, "__name__", "value")  # argparse names it in "invalid int value"

    return conv, choices


def _leaves(cls: type, default: Any) -> Iterator[tuple[dataclasses.Field, Any, Any, tuple[str, ...]]]:
    """(field, type, default value, path) for every non-dataclass field, depth first."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            for leaf, tp, dv, path in _leaves(type(value), value):
                yield leaf, tp, dv, (f.name, *path)
        else:
            yield f, hints[f.name], value, (f.name,)


def _show(value: Any) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return str(value)


def add_arguments(parser: argparse.ArgumentParser, cls: type, default: Any = None) -> None:
    """One option per leaf field of `cls` (defaults from `default` or `cls()`)."""
    default = cls() if default is None else default
    seen: dict[str, tuple[str, ...]] = {}
    group = parser.add_argument_group(cls.__name__)
    for f, tp, value, path in _leaves(cls, default):
        if f.name in seen:
            raise TypeError(f"field name {f.name!r} appears twice: {seen[f.name]} and {path}")
        seen[f.name] = path
        conv, choices = _converter(tp, f.metadata.get("unset", False))
        choices = f.metadata.get("choices") or choices
        aliases = f.metadata.get("aliases", ())
        dashed = f.name.replace("_", "-")
        hidden = f.name if dashed != f.name and dashed in aliases else None  # --help shows --dry-run only
        names = [f"--{n}" for n in (f.name, *aliases) if n != hidden]
        help_text = f"{f.metadata.get('help', '')} (default: {_show(value)})"
        kwargs: dict[str, Any] = dict(dest="__".join(path), default=value, help=help_text, type=conv,
                                      metavar=f.name.upper())
        if conv is parse_bool:
            kwargs.update(nargs="?", const=True, metavar="BOOL")
        if choices:
            kwargs["choices"] = list(choices)
            kwargs["help"] += f"; one of {', '.join(map(_show, choices))}"
        group.add_argument(*names, **kwargs)
        if hidden:  # the underscore spelling still parses (`--dry_run`), unlisted
            group.add_argument(f"--{hidden}", **{**kwargs, "help": argparse.SUPPRESS})


def from_namespace(cls: type[T], ns: argparse.Namespace, default: Any = None) -> T:
    """Rebuild the (nested) dataclass from parsed options; __post_init__ validation runs here."""
    default = cls() if default is None else default
    values = vars(ns)

    def build(c: type, dflt: Any, prefix: tuple[str, ...]) -> Any:
        kwargs = {}
        for f in dataclasses.fields(c):
            if not f.init:
                continue
            sub = getattr(dflt, f.name)
            if dataclasses.is_dataclass(sub):
                kwargs[f.name] = build(type(sub), sub, (*prefix, f.name))
            else:
                kwargs[f.name] = values["__".join((*prefix, f.name))]
        return c(**kwargs)

    return build(cls, default, ())


def parse(cls: type[T], argv: Sequence[str] | None = None, *, prog: str | None = None,
          description: str | None = None) -> T:
    """Parse argv into `cls`; a value the config refuses exits with status 2 and its message."""
    parser = Parser(prog=prog, description=description or cls.__doc__)
    add_arguments(parser, cls)
    ns = parser.parse_args(argv)
    try:
        return from_namespace(cls, ns)
    except ValueError as e:
        parser.error(str(e))
        raise  # unreachable: parser.error exits
