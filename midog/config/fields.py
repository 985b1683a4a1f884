"""Command-line options generated from configuration dataclasses (midog.config.settings).

A field's metadata (built with `option`) carries its help text and, where the flag is not
the field's name in dashes, its flag; the parser's defaults stay out of the namespace, so
a command sees which options were given and builds the dataclass back with `build`.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
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


def _hint(cls: type, name: str) -> tuple[Any, bool, int | None]:
    """(element type, optional, tuple length) of a field's annotation."""
    hint = typing.get_type_hints(cls)[name]
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        return args[0], optional, len(args)
    return hint, optional, None


def _dest(cls: type, name: str) -> str:
    return f"{cls.__name__}.{name}"


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def add_arguments(parser: argparse.ArgumentParser | Any, cls: type, groups: Mapping[str, Any] | None = None) -> None:
    """Add an option for every field of dataclass `cls`; a field that is itself a dataclass
    adds its own fields, in `groups[field name]` (an argument group) when given."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("cli") or option()["cli"]
        if not spec["enabled"]:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            add_arguments((groups or {}).get(f.name, parser), hints[f.name], groups)
            continue
        kind, optional, length = _hint(cls, f.name)
        default = _default(f)
        flag = "--" + (spec["flag"] or f.name.replace("_", "-"))
        helptext = spec["help"]
        if default not in (dataclasses.MISSING, None) and kind is not bool and spec["const"] is None:
            shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
            helptext = f"{helptext} (default: {shown})" if helptext else f"default: {shown}"
        kw: dict[str, Any] = dict(dest=_dest(cls, f.name), default=argparse.SUPPRESS, help=helptext or None)
        if spec["positional"]:
            parser.add_argument(kw.pop("dest"), metavar=spec["metavar"], type=kind, help=kw["help"])
            continue
        names = [flag, *spec["aliases"]]
        if spec["const"] is not None:
            kw.update(action="store_const", const=spec["const"])
        elif kind is bool and spec["choices"] is None:
            if spec["negatable"]:
                kw["action"] = argparse.BooleanOptionalAction
            elif default is True:
                names, kw["action"] = ["--no-" + flag[2:]], "store_false"
            else:
                kw["action"] = "store_true"
        else:
            choices = spec["choices"]
            kw["type"] = str if isinstance(choices, Mapping) else kind
            if choices is not None:
                kw["choices"] = list(choices)
            else:
                kw["metavar"] = spec["metavar"] or f.name.upper()
            if length:
                kw["nargs"] = length
            if default is dataclasses.MISSING:
                kw["required"] = True
        parser.add_argument(*names, **kw)


def given(cls: type, ns: argparse.Namespace) -> dict[str, Any]:
    """The fields of `cls` (not of its nested dataclasses) given on the command line."""
    out = {}
    for f in dataclasses.fields(cls):
        dest = _dest(cls, f.name)
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
                dests.setdefault(f.name, _dest(c, f.name))

    walk(cls)
    unknown = sorted(set(values) - set(dests))
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}")
    return argparse.Namespace(**{dests[k]: v for k, v in values.items()})
