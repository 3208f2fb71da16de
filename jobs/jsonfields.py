"""Typed reads of Docker's JSON request bodies, with errors that name the field by its path.

dockerd decodes a request body into Go structs: a wrong JSON type is an error, an absent or null
field is the type's zero value, and unknown keys are ignored. ``Fields`` gives the same behaviour
over one decoded JSON object. Every read names the field by its path as Docker prints it
(``HostConfig.Memory``, ``Config.Env[2]``) in the ``InvalidArgument`` it raises, so the message
reads ``HostConfig.Memory: expected integer, got string``.

Example::

    f = Fields(body.get("HostConfig"), "HostConfig")
    f.integer("Memory")         # 0 when absent or null; InvalidArgument for "1g", 1.5 or 2**63
    f.texts("Binds")            # None when absent or null, else a list of strings
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from engine.errors import InvalidArgument, NotSupported

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


def type_name(value: object) -> str:
    """The JSON name of *value*'s type (``string``, ``integer``, ``object``, …)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def invalid(path: str, message: str) -> InvalidArgument:
    """An InvalidArgument for the field at *path*."""
    return InvalidArgument(f"{path}: {message}")


def unsupported(path: str, message: str) -> NotSupported:
    """A NotSupported for the field at *path*."""
    return NotSupported(f"{path}: {message}")


def _expected(path: str, what: str, value: object) -> InvalidArgument:
    return invalid(path, f"expected {what}, got {type_name(value)}")


def check_text(value: object, path: str) -> str:
    """*value* as a string; InvalidArgument naming *path* otherwise."""
    if not isinstance(value, str):
        raise _expected(path, "string", value)
    return value


def check_integer(value: object, path: str, low: int = INT64_MIN, high: int = INT64_MAX) -> int:
    """*value* as an integer within [low, high] (int64 by default); InvalidArgument otherwise."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise _expected(path, "integer", value)
    if not low <= value <= high:
        raise invalid(path, f"{value} is out of range ({low} to {high})")
    return value


class Fields:
    """Typed reads from one JSON object found at *path* (null counts as an empty object)."""

    __slots__ = ("path", "raw")

    def __init__(self, raw: object, path: str) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise _expected(path, "object", raw)
        self.raw: Mapping[str, object] = raw
        self.path = path

    def at(self, key: str) -> str:
        """The path of *key* in this object."""
        return f"{self.path}.{key}" if self.path else key

    def given(self, key: str) -> bool:
        """Whether *key* is present and not null."""
        return self.raw.get(key) is not None

    def text(self, key: str, default: str = "") -> str:
        """A string field; *default* when absent or null."""
        value = self.raw.get(key)
        return default if value is None else check_text(value, self.at(key))

    def flag(self, key: str, default: bool = False) -> bool:
        """A boolean field; *default* when absent or null."""
        value = self.opt_flag(key)
        return default if value is None else value

    def opt_flag(self, key: str) -> bool | None:
        """A boolean field that may be null (Go's ``*bool``)."""
        value = self.raw.get(key)
        if value is not None and not isinstance(value, bool):
            raise _expected(self.at(key), "boolean", value)
        return value

    def integer(
        self, key: str, default: int = 0, low: int = INT64_MIN, high: int = INT64_MAX
    ) -> int:
        """An integer field in [low, high]; *default* when absent or null."""
        value = self.opt_integer(key, low, high)
        return default if value is None else value

    def opt_integer(self, key: str, low: int = INT64_MIN, high: int = INT64_MAX) -> int | None:
        """An integer field that may be null (Go's ``*int64``)."""
        value = self.raw.get(key)
        return None if value is None else check_integer(value, self.at(key), low, high)

    def texts(self, key: str) -> list[str] | None:
        """An array of strings; None when absent or null."""
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, list | tuple):
            raise _expected(self.at(key), "array", value)
        return [check_text(v, f"{self.at(key)}[{i}]") for i, v in enumerate(value)]

    def strslice(self, key: str) -> list[str] | None:
        """A string or an array of strings (Go's ``StrSlice``); None when absent or null."""
        value = self.raw.get(key)
        return [value] if isinstance(value, str) else self.texts(key)

    def text_map(self, key: str) -> dict[str, str] | None:
        """An object of strings; None when absent or null."""
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise _expected(self.at(key), "object", value)
        return {
            check_text(k, self.at(key)): check_text(v, f"{self.at(key)}.{k}")
            for k, v in value.items()
        }

    def obj(self, key: str) -> Fields:
        """A nested object (empty when absent or null)."""
        return Fields(self.raw.get(key), self.at(key))

    def objs(self, key: str) -> list[Fields] | None:
        """An array of objects; None when absent or null."""
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, list | tuple):
            raise _expected(self.at(key), "array", value)
        return [Fields(v, f"{self.at(key)}[{i}]") for i, v in enumerate(value)]
