"""Configuration dataclasses from flat option names: a field's metadata (built with
`option`) carries its help text and flag, from which the command line generates its
options (commands.args.add_config_arguments); `build` makes the dataclass back from the
options given, and `namespace` lets code name fields the way the command line does.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Mapping


def option(
    help: str = "",  # noqa: A002 - argparse's name
    *,
    flag: str | None = None,
    aliases: tuple[str, ...] = (),
    choices: Any = None,
    const: Any = None,
    metavar: str | None = None,
    positional: bool = False,
    negatable: bool = False,
    cli: bool = True,
) -> dict[str, Any]:
    """Field metadata for the generated option.

    flag: the option's name without dashes (default: the field's name, `_` -> `-`); a bool
    field that defaults to True gets `--no-FLAG`, one that defaults to False `--FLAG`, a
    `negatable` one both. const: the flag takes no value and stores this. choices: a list,
    or a mapping from what the user types to the value stored. cli=False keeps a field off
    the command line.
    """
    return {"cli": dict(help=help, flag=flag, aliases=aliases, choices=choices, const=const, metavar=metavar,
                        positional=positional, negatable=negatable, enabled=cli)}


def option_dest(cls: type, name: str) -> str:
    """Where the command line stores a field: its class and name, so that fields of one
    name in two concerns never share a value."""
    return f"{cls.__name__}.{name}"


def given(cls: type, ns: argparse.Namespace) -> dict[str, Any]:
    """The fields of `cls` (not of its nested dataclasses) given on the command line."""
    out = {}
    for f in dataclasses.fields(cls):
        dest = option_dest(cls, f.name)
        if not hasattr(ns, dest):
            continue
        value = getattr(ns, dest)
        choices = f.metadata.get("cli", {}).get("choices")
        if isinstance(choices, Mapping) and isinstance(value, str) and value in choices:
            value = choices[value]
        if isinstance(value, list):
            value = tuple(value)
        out[f.name] = value
    return out


def build(cls: type, ns: argparse.Namespace, **fixed: Any) -> Any:
    """`cls` from the namespace: given options over the fields' defaults; nested dataclasses
    are built the same way unless `fixed` supplies them."""
    values = given(cls, ns)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in fixed:
            values[f.name] = fixed[f.name]
        elif dataclasses.is_dataclass(hints[f.name]):
            values[f.name] = build(hints[f.name], ns)
    return cls(**values)


def namespace(cls: type, **values: Any) -> argparse.Namespace:
    """The namespace `parse_args` would give for these field values, named flat (a field of
    a nested dataclass by its own name), so code builds a config the way the CLI does."""
    dests: dict[str, str] = {}

    def walk(c: type) -> None:
        hints = typing.get_type_hints(c)
        for f in dataclasses.fields(c):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name])
            else:
                dests.setdefault(f.name, option_dest(c, f.name))

    walk(cls)
    unknown = sorted(set(values) - set(dests))
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}")
    return argparse.Namespace(**{dests[k]: v for k, v in values.items()})
