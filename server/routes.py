"""The route table: each HTTP route binds a request to one job and renders its records.

A route is data: method, path, the job it runs (``None`` = the ``{name}`` in the path), a binder
that turns the request into the job's args and params, and a renderer that turns the job's records
into the response. No route holds engine logic; ``server/app.py`` serves every route the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

import orjson
from aiohttp import web

from engine.errors import InvalidArgument
from server import render

Bound = tuple[tuple[str, ...], dict[str, object]]
Binder = Callable[[web.Request], Awaitable[Bound]]


@dataclass(frozen=True, slots=True)
class Route:
    """``METHOD path`` → job, with how to bind the request and render the records."""

    method: str
    path: str
    job: str | None
    bind: Binder
    render: render.Renderer


def nothing() -> Binder:
    """Bind no args and no params."""

    async def bind(request: web.Request) -> Bound:
        return (), {}

    return bind


def path_args(*names: str) -> Binder:
    """Bind the path variables *names*, in order, as the job's args."""

    async def bind(request: web.Request) -> Bound:
        return tuple(request.match_info[n] for n in names), {}

    return bind


def query(**fixed: object) -> Binder:
    """Bind the query string as params (each key once), plus the *fixed* params."""

    async def bind(request: web.Request) -> Bound:
        params: dict[str, object] = {}
        for key in request.query:
            values = request.query.getall(key)
            if len(values) > 1:
                raise InvalidArgument(f"{key}: given {len(values)} times in the query string")
            params[key] = values[0]
        overlap = sorted(set(params) & set(fixed))
        if overlap:
            raise InvalidArgument(f"{overlap[0]}: cannot be set on this route")
        return (), {**params, **fixed}

    return bind


def job_body() -> Binder:
    """Bind a JSON body ``{"args": [...], "params": {...}}`` (both optional)."""

    async def bind(request: web.Request) -> Bound:
        body = await json_body(request)
        if not isinstance(body, Mapping):
            raise InvalidArgument("body: expected a JSON object with args and params")
        unknown = sorted(set(body) - {"args", "params"})
        if unknown:
            raise InvalidArgument(f"{unknown[0]}: unknown key in body (known: args, params)")
        args, params = body.get("args", []), body.get("params", {})
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise InvalidArgument("args: expected an array of strings")
        if not isinstance(params, Mapping):
            raise InvalidArgument("params: expected a JSON object")
        return tuple(args), dict(params)

    return bind


async def json_body(request: web.Request) -> object:
    """Return the request's JSON body ({} when empty); InvalidArgument for anything else."""
    raw = await request.read()
    if not raw.strip():
        return {}
    if request.content_type != "application/json":
        raise InvalidArgument(
            f"unsupported Content-Type header ({request.content_type}): must be 'application/json'"
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"invalid JSON: {exc}") from None


ROUTES: Final[tuple[Route, ...]] = (
    Route("GET", "/version", "version", nothing(), render.one),
    Route("GET", "/info", "info", nothing(), render.one),
    Route("GET", "/jobs", "commands", nothing(), render.array),
    Route("GET", "/jobs/running", "jobs", query(which="running"), render.array),
    Route("GET", "/jobs/history", "jobs", query(which="history"), render.array),
    Route("DELETE", "/jobs/running/{id}", "cancel", path_args("id"), render.empty),
    Route("POST", "/jobs/{name}", None, job_body(), render.lines),
)
