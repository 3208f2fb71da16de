"""Typed job parameters, decoded once at the boundary.

A job declares its params as a frozen dataclass. ``decode`` turns a mapping from the wire (a JSON
body, a query string, CLI ``-p key=value`` flags) into that dataclass and refuses unknown keys,
missing required values and wrong types with ``InvalidArgument`` naming the field. Text is accepted
for a number or a boolean only when it is exactly a literal of that type (``"5"``, ``"true"``), so a
query string binds as strictly as JSON; nothing is guessed.

Example::

    @dataclass(frozen=True, slots=True)
    class SleepParams:
        seconds: float = field(metadata={"doc": "how long to sleep"})
    decode(SleepParams, {"seconds": "1.5"})   # SleepParams(seconds=1.5)
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar, get_args, get_origin

from engine.errors import InvalidArgument

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

P = TypeVar("P")

_INT = re.compile(r"[+-]?[0-9]+")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
JSONType = dict[str, object]


@dataclass(frozen=True, slots=True)
class NoParams:
    """The params of a job that takes none."""


@dataclass(frozen=True, slots=True)
class ArgSpec:
    """Positional args of a job: *names* are required, then *optional* ones, then a variadic
    tail named *rest*."""

    names: tuple[str, ...] = ()
    rest: str = ""
    optional: tuple[str, ...] = ()

    def usage(self) -> str:
        """Return the usage text, e.g. ``ID [NAME] [ARG...]``."""
        words = [n.upper() for n in self.names] + [f"[{n.upper()}]" for n in self.optional]
        if self.rest:
            words.append(f"[{self.rest.upper()}...]")
        return " ".join(words)

    def check(self, job: str, args: tuple[str, ...]) -> None:
        """Raise InvalidArgument if *args* do not fit this spec."""
        low, high = len(self.names), len(self.names) + len(self.optional)
        if len(args) < low or (not self.rest and len(args) > high):
            want = self.usage() or "no arguments"
            raise InvalidArgument(f"args: job {job} takes {want}, got {len(args)} argument(s)")
        for i, arg in enumerate(args):
            if not isinstance(arg, str):
                raise InvalidArgument(f"args[{i}]: expected string, got {_type_name(arg)}")


def decode(cls: type[P], raw: Mapping[str, object]) -> P:
    """Build params *cls* from *raw*; raise InvalidArgument naming the first bad field."""
    if not isinstance(raw, Mapping):
        raise InvalidArgument(f"params: expected object, got {_type_name(raw)}")
    hints, fields = _shape(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise InvalidArgument(f"{unknown[0]}: unknown param (known: {known})")
    values: dict[str, object] = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _convert(hints[name], raw[name], name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise InvalidArgument(f"{name}: required param is missing")
    return cls(**values)


_Shape = tuple[dict[str, Any], dict[str, "dataclasses.Field[Any]"]]
_SHAPES: dict[type[Any], _Shape] = {}


def _shape(cls: type[Any]) -> _Shape:
    # Resolving type hints is the slow part of decoding; a params class never changes.
    shape = _SHAPES.get(cls)
    if shape is None:
        hints = typing.get_type_hints(cls)
        shape = _SHAPES[cls] = hints, {f.name: f for f in dataclasses.fields(cls)}
    return shape


def _convert(tp: Any, value: object, field: str) -> object:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, field)
        raise TypeError(f"{field}: unions other than Optional are not supported")
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and value == str(choice)):
                return choice
        raise InvalidArgument(f"{field}: must be one of {', '.join(map(str, args))}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise InvalidArgument(f"{field}: expected array, got {_type_name(value)}")
        items = [_convert(args[0], v, f"{field}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise InvalidArgument(f"{field}: expected object, got {_type_name(value)}")
        return {
            _convert(args[0], k, f"{field} key"): _convert(args[1], v, f"{field}.{k}")
            for k, v in value.items()
        }
    return _scalar(tp, value, field)


def _scalar(tp: Any, value: object, field: str) -> object:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
    elif tp is int:
        number_: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number_ = value
        elif isinstance(value, str) and _INT.fullmatch(value):
            number_ = int(value)
        if number_ is not None:
            if not _INT64_MIN <= number_ <= _INT64_MAX:  # as Go's strconv: no wider than 64 bits
                raise InvalidArgument(f"{field}: {number_} is out of range for a 64-bit integer")
            return number_
    elif tp is float:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is not None and math.isfinite(number):
            return number
    elif tp is str:
        if isinstance(value, str):
            if "\x00" in value:
                raise InvalidArgument(f"{field}: string contains a NUL byte")
            return value
    elif tp is object:
        return value
    else:
        raise TypeError(f"{field}: unsupported param type {tp!r}")
    raise InvalidArgument(f"{field}: expected {_TYPE_NAMES[tp]}, got {_type_name(value)}")


_TYPE_NAMES: dict[object, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    object: "any",
}


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def schema(cls: type[object]) -> JSONType:
    """Return a JSON-schema object describing params *cls* (for the ``commands`` job)."""
    hints = typing.get_type_hints(cls)
    props: dict[str, object] = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        prop = _schema_of(hints[f.name])
        if f.metadata.get("doc"):
            prop["description"] = f.metadata["doc"]
        if f.default is not dataclasses.MISSING:
            prop["default"] = f.default
        elif f.default_factory is dataclasses.MISSING:
            required.append(f.name)
        props[f.name] = prop
    return {"type": "object", "properties": props, "required": required}


def _schema_of(tp: Any) -> JSONType:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [_schema_of(a) for a in args if a is not type(None)]
        return {"anyOf": [*inner, {"type": "null"}]}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (list, tuple):
        return {"type": "array", "items": _schema_of(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_of(args[1])}
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return {"type": kinds[tp]} if tp in kinds else {}
