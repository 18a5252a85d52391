"""Options defined once: a dataclass field per setting, with its help, range and choices as metadata.

The `bertkit` command line and the Python API are both built from these fields, so a flag and its
keyword have one name, one default and one check::

    @dataclass
    class MyOptions(Options):
        steps: int = option(1000, "optimizer steps", min=1)

    add_options(parser, MyOptions)          # --steps N (default 1000)
    MyOptions(steps=0)                      # BertkitError: steps must be at least 1, got 0 (--steps)

A bool that defaults to False becomes `--name`; one that defaults to True becomes `--no-name`.
A field without `help` is a setting the code records but the user does not pass (no flag).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Iterable, Mapping
from typing import Any

from bertkit.errors import BertkitError


def option(
    default: Any = dataclasses.MISSING,
    help: str | None = None,
    *,
    min: float | None = None,
    max: float | None = None,
    above: float | None = None,
    choices: Iterable[Any] | None = None,
    flag: str | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line flag and a keyword argument.

    `min`/`max` bound numbers (inclusive), `above` from below (exclusive: a rate above 0); `choices` lists the allowed values; `flag` overrides the
    flag's name (default: `--field-name`, or `--no-field-name` for a bool that defaults to True).
    """
    metadata = {"help": help, "min": min, "max": max, "above": above, "choices": tuple(choices) if choices is not None else None,
                "flag": flag, "metavar": metavar}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_of(f: dataclasses.Field) -> str:
    """The command-line spelling of a field: `--batch-size`, `--no-bf16`."""
    if f.metadata.get("flag"):
        return f.metadata["flag"]
    dashed = f.name.replace("_", "-")
    return f"--no-{dashed}" if f.default is True else f"--{dashed}"


def _describe_range(low: float | None, high: float | None, above: float | None) -> str:
    bounds = [f"above {above:g}"] if above is not None else []
    bounds += [f"at least {low:g}"] if low is not None else []
    bounds += [f"at most {high:g}"] if high is not None else []
    return " and ".join(bounds)


def check_value(f: dataclasses.Field, value: Any) -> None:
    """Raise a one-line BertkitError when `value` is outside the field's range or choices."""
    where = f"{f.name} ({flag_of(f)})" if f.metadata.get("help") else f.name
    low, high, above = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("above")
    choices = f.metadata.get("choices")
    if value is None:
        return
    if choices is not None and value not in choices:
        raise BertkitError(f"{where} must be one of {', '.join(map(str, choices))}, got {value!r}")
    if low is None and high is None and above is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BertkitError(f"{where} must be a number, got {value!r}")
    if (not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high)
            or (above is not None and value <= above)):
        raise BertkitError(f"{where} must be {_describe_range(low, high, above)}, got {value:g}")


class Options:
    """Mixin for option dataclasses: every field is checked against its metadata when the object is made."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            check_value(f, getattr(self, f.name))


def _scalar_type(cls: type, f: dataclasses.Field) -> type:
    """int, float or str from the field's annotation (`int | None` -> int, `list[str]` -> str)."""
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    inner = args[0]
    if typing.get_origin(inner) is list:
        inner = typing.get_args(inner)[0]
    return inner if inner in (int, float, str) else str


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    only: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Add a flag for each documented field of the dataclass `cls` (or the fields in `only`).

    `defaults` changes a default for this command only (pre-training's learning rate is not fine-tuning's).
    The parsed value lands under the field's name, so `build(cls, args)` finds it.
    """
    wanted = set(only) if only is not None else None
    defaults = dict(defaults or {})
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help")
        if not help_text or f.name in skip or (wanted is not None and f.name not in wanted):
            continue
        default = defaults.get(f.name, f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        if isinstance(default, bool):
            action = "store_false" if default else "store_true"
            parser.add_argument(flag_of(f), dest=f.name, action=action, default=default, help=help_text)
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "type": _scalar_type(cls, f), "help": help_text}
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
            if default is not None and default != []:
                kwargs["help"] = f"{help_text} (default: {default})"
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        hint = typing.get_type_hints(cls)[f.name]
        if isinstance(default, list) or list in (typing.get_origin(a) for a in (hint, *typing.get_args(hint))):
            kwargs["nargs"] = "+"
        kwargs["metavar"] = f.metadata.get("metavar") or {int: "N", float: "X"}.get(kwargs["type"])
        parser.add_argument(flag_of(f), **kwargs)


def build(cls: type, values: argparse.Namespace | Mapping[str, Any], **overrides: Any) -> Any:
    """An instance of `cls` from parsed arguments (or a mapping), taking only the fields `cls` has."""
    source = vars(values) if isinstance(values, argparse.Namespace) else values
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in source.items() if key in names}, **overrides)


def split_keywords(keywords: Mapping[str, Any], *classes: type, what: str) -> list[dict[str, Any]]:
    """Share keyword arguments out among option dataclasses; an unknown keyword is a one-line error."""
    parts: list[dict[str, Any]] = [{} for _ in classes]
    for key, value in keywords.items():
        for part, cls in zip(parts, classes):
            if key in {f.name for f in dataclasses.fields(cls)}:
                part[key] = value
                break
        else:
            known = sorted({f.name for cls in classes for f in dataclasses.fields(cls) if f.metadata.get("help")})
            raise BertkitError(f"{what} has no option {key!r} (options: {', '.join(known)})")
    return parts
