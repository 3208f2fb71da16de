"""Param decoding at the boundary: strict types, text literals, named fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from engine.errors import InvalidArgument
from engine.params import ArgSpec, NoParams, decode, schema


@dataclass(frozen=True, slots=True)
class Params:
    name: str
    count: int = 1
    ratio: float = 0.5
    force: bool = False
    mode: Literal["fast", "safe"] = "safe"
    tags: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    limit: int | None = None


def test_defaults_and_json_values() -> None:
    p = decode(Params, {"name": "x", "count": 3, "ratio": 2, "force": True, "tags": ["a"]})
    assert p == Params(name="x", count=3, ratio=2.0, force=True, tags=("a",))


def test_text_literals_are_accepted_exactly() -> None:
    p = decode(
        Params, {"name": "x", "count": "-4", "ratio": "1.5", "force": "TRUE", "mode": "fast"}
    )
    assert (p.count, p.ratio, p.force, p.mode) == (-4, 1.5, True, "fast")
    assert decode(Params, {"name": "x", "force": "0"}).force is False


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "name: required param is missing"),
        ({"name": "x", "extra": 1}, "extra: unknown param"),
        ({"name": 5}, "name: expected string, got integer"),
        ({"name": "x", "count": "12abc"}, "count: expected integer"),
        ({"name": "x", "count": 1.5}, "count: expected integer, got number"),
        ({"name": "x", "count": True}, "count: expected integer, got boolean"),
        ({"name": "x", "ratio": "nan"}, "ratio: expected number"),
        ({"name": "x", "ratio": float("inf")}, "ratio: expected number"),
        ({"name": "x", "force": "maybe"}, "force: expected boolean"),
        ({"name": "x", "force": 1}, "force: expected boolean, got integer"),
        ({"name": "x", "mode": "slow"}, "mode: must be one of fast, safe"),
        ({"name": "x", "tags": "a"}, "tags: expected array"),
        ({"name": "x", "tags": ["a", 2]}, r"tags\[1\]: expected string"),
        ({"name": "x", "labels": {"a": 1}}, "labels.a: expected string"),
        ({"name": "a\x00b"}, "name: string contains a NUL byte"),
        ({"name": None}, "name: expected string, got null"),
    ],
)
def test_bad_values_name_the_field(raw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^{message}"):
        decode(Params, raw)


def test_optional_accepts_null() -> None:
    assert decode(Params, {"name": "x", "limit": None}).limit is None
    assert decode(Params, {"name": "x", "limit": "7"}).limit == 7


def test_not_a_mapping() -> None:
    with pytest.raises(InvalidArgument, match="^params: expected object"):
        decode(Params, ["name"])  # type: ignore[arg-type]


def test_no_params() -> None:
    assert decode(NoParams, {}) == NoParams()
    with pytest.raises(InvalidArgument, match="known: none"):
        decode(NoParams, {"x": 1})


def test_schema() -> None:
    s = schema(Params)
    assert s["required"] == ["name"]
    props = s["properties"]
    assert isinstance(props, dict)
    assert props["count"] == {"type": "integer", "default": 1}
    assert props["mode"] == {"enum": ["fast", "safe"], "default": "safe"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}, "default": ()}
    assert props["limit"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}


def test_argspec_usage() -> None:
    assert ArgSpec(("id",), "name").usage() == "ID [NAME...]"
    assert ArgSpec().usage() == ""


@pytest.mark.parametrize(
    "raw", [2**63, "9223372036854775808", -(2**63) - 1, "99999999999999999999"]
)
def test_integers_wider_than_64_bits_are_refused(raw: object) -> None:
    with pytest.raises(InvalidArgument, match="count: .* out of range for a 64-bit integer"):
        decode(Params, {"name": "x", "count": raw})
    assert decode(Params, {"name": "x", "count": str(2**63 - 1)}).count == 2**63 - 1
