"""Turn records into text: tables for rows, indented ``Key: value`` for one object, JSON on ask."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import click
import orjson

Record = Mapping[str, object]


def cell(value: object) -> str:
    """One value as table text: scalars as they are, containers as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def table(rows: Sequence[Record], columns: Sequence[tuple[str, str]]) -> None:
    """Print *rows* under *columns* (header, key) in aligned columns."""
    text = [[cell(r.get(key)) for _, key in columns] for r in rows]
    widths = [max([len(h), *(len(t[i]) for t in text)]) for i, (h, _) in enumerate(columns)]
    for line in [[h for h, _ in columns], *text]:
        click.echo("   ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def keyvalues(record: Record, indent: int = 0) -> None:
    """Print a record as ``Key: value`` lines, nested mappings indented."""
    pad = " " * indent
    for key, value in record.items():
        if isinstance(value, Mapping) and value:
            click.echo(f"{pad}{key}:")
            keyvalues(value, indent + 2)
        else:
            click.echo(f"{pad}{key}: {cell(value)}")


def records(rows: Sequence[Record]) -> None:
    """Print records generically: one table when they are flat and alike, else key/value blocks."""
    flat = all(not isinstance(v, Mapping) for r in rows for v in r.values())
    keys = [list(r) for r in rows]
    if rows and flat and all(k == keys[0] for k in keys):
        table(rows, [(k.upper(), k) for k in keys[0]])
        return
    for i, row in enumerate(rows):
        if i:
            click.echo()
        keyvalues(row)


def json_lines(rows: Sequence[Record]) -> None:
    """Print one JSON object per line."""
    for row in rows:
        click.echo(orjson.dumps(row).decode())


def json_option(f: Callable[..., object]) -> Callable[..., object]:
    """The shared ``--json`` flag: print raw JSON instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(f)


def human_size(n: int) -> str:
    """Bytes as Docker shows them: ``4.26MB``, ``812kB``, ``0B`` (decimal units)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.3g}{unit}"
        value /= 1000
    return f"{n}B"


def human_ago(when: float, now: float | None = None) -> str:
    """A past unix time as Docker shows it: ``3 minutes ago``."""
    seconds = max(0, int((time.time() if now is None else now) - when))
    for size, unit in ((86400 * 365, "year"), (86400 * 7, "week"), (86400, "day"),
                       (3600, "hour"), (60, "minute")):  # fmt: skip
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "Less than a minute ago" if seconds >= 1 else "Less than a second ago"


def template(fmt: str, value: object) -> str:
    """A small subset of Go templates: ``{{.A.B}}`` fields and ``{{json .A}}``, in text."""
    import re

    def field(match: re.Match[str]) -> str:
        expr = match[1].strip()
        as_json = expr.startswith("json ")
        path = expr.removeprefix("json ").strip()
        current: object = value
        for part in filter(None, path.split(".")):
            current = current.get(part) if isinstance(current, Mapping) else None
        if as_json:
            return orjson.dumps(current).decode()
        if isinstance(current, bool):
            return "true" if current else "false"
        if current is None:
            return "<no value>"
        if isinstance(current, Mapping | list):
            return orjson.dumps(current).decode()
        return str(current)

    return re.sub(r"\{\{(.*?)\}\}", field, fmt)
