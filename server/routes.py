"""The route table: each HTTP route binds a request to one job and renders its records.

A route is data: method, path, the job it runs (``None`` = the ``{name}`` in the path), a binder
that turns the request into the job's args and params, and a renderer that turns the job's records
into the response. No route holds engine logic; ``server/app.py`` serves every route the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web

from engine import Job
from engine.errors import InvalidArgument
from server import render

Bound = tuple[tuple[str, ...], dict[str, object]]
JSON_PARAMS: Final = frozenset({"filters"})  # query params that carry JSON
# Bodies a job reads as its stdin. Anything else that is not JSON is refused: a browser can send
# text/plain or a form across sites without asking, so those must never reach a job.
STDIN_TYPES: Final = frozenset(
    {
        "application/octet-stream",
        "application/x-tar",
        "application/tar",
        "application/gzip",
        "application/x-gzip",
        "application/zstd",
    }
)
Binder = Callable[[web.Request], Awaitable[Bound]]
# A binder may choose the job itself (``/images/create`` is a pull or an import) by setting this
# key on the request; it wins over the route's job.
JOB_CHOSEN: Final = "dockyard.job"


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


def query(*names: str, **fixed: object) -> Binder:
    """Bind the query string as params, plus the *fixed* params; with *names*, only those keys.

    A key given more than once becomes a list; ``filters`` is JSON, in Docker's list form
    (``{"label": ["a=b"]}``) or map form (``{"label": {"a=b": true}}``).
    """

    async def bind(request: web.Request) -> Bound:
        return (), {**_query(request, names), **_fixed(request, fixed)}

    return bind


def _query(request: web.Request, names: tuple[str, ...]) -> dict[str, object]:
    params: dict[str, object] = {}
    for key in request.query:
        if names and key not in names:
            continue
        values = request.query.getall(key)
        params[key] = values if len(values) > 1 else values[0]
        if key in JSON_PARAMS:
            params[key] = _filters(key, values[0])
    return params


def _fixed(request: web.Request, fixed: Mapping[str, object]) -> dict[str, object]:
    overlap = sorted(set(request.query) & set(fixed))
    if overlap:
        raise InvalidArgument(f"{overlap[0]}: cannot be set on this route")
    return dict(fixed)


def _filters(key: str, text: str) -> dict[str, list[str]]:
    try:
        value = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"{key}: invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{key}: expected a JSON object")
    out: dict[str, list[str]] = {}
    for name, items in value.items():
        if isinstance(items, dict):
            out[name] = [k for k, on in items.items() if on]
        elif isinstance(items, list) and all(isinstance(i, str) for i in items):
            out[name] = items
        else:
            raise InvalidArgument(f"{key}.{name}: expected a list or a map of strings")
    return out


def with_path(*names: str, binder: Binder | None = None) -> Binder:
    """Bind path variables *names* as the first args, then what *binder* binds."""

    async def bind(request: web.Request) -> Bound:
        args, params = await binder(request) if binder else ((), {})
        return tuple(request.match_info[n] for n in names) + args, params

    return bind


def query_args(name: str) -> Binder:
    """Bind every value of query key *name* as the args (``?names=a&names=b``)."""

    async def bind(request: web.Request) -> Bound:
        return tuple(request.query.getall(name, [])), {}

    return bind


def registry_auth(request: web.Request) -> dict[str, object]:
    """The ``X-Registry-Auth`` header as the ``auth`` param (absent: no param)."""
    value = request.headers.get("X-Registry-Auth", "")
    return {"auth": value} if value else {}


def image_create() -> Binder:
    """Bind ``POST /images/create``: ``fromImage`` → pull; ``fromSrc`` (URL or ``-``) → import."""

    async def bind(request: web.Request) -> Bound:
        q = request.query
        if q.get("fromImage"):
            request[JOB_CHOSEN] = "pull"
            tag = q.get("tag", "")
            name = q["fromImage"]
            last = name.rsplit("/", 1)[-1]
            params: dict[str, object] = {"tag": tag, "platform": q.get("platform", "")}
            if not tag and ":" not in last and "@" not in name:
                params["all_tags"] = True  # Docker: an empty tag pulls every tag
            return (name,), {**params, **registry_auth(request)}
        if "fromSrc" not in q:
            raise InvalidArgument("fromSrc: give fromSrc (a URL, or - for the request body)")
        args = [q["fromSrc"]]
        if q.get("repo"):
            args.append(f"{q['repo']}:{q['tag']}" if q.get("tag") else q["repo"])
        params = {
            "changes": q.getall("changes", []),
            "message": q.get("message", ""),
        }
        return tuple(args), params

    return bind


def image_push() -> Binder:
    """Bind ``POST /images/{name}/push?tag=``: the name, the tag and the registry credentials."""

    async def bind(request: web.Request) -> Bound:
        params = {"tag": request.query.get("tag", ""), **registry_auth(request)}
        return (request.match_info["name"],), params

    return bind


def with_auth(*names: str) -> Binder:
    """Bind path variables *names* as args and ``X-Registry-Auth`` as the ``auth`` param."""

    async def bind(request: web.Request) -> Bound:
        return tuple(request.match_info[n] for n in names), registry_auth(request)

    return bind


def tag_target() -> Binder:
    """Bind ``POST /images/{name}/tag?repo=&tag=`` as args (name, repo[:tag])."""

    async def bind(request: web.Request) -> Bound:
        repo, tag = request.query.get("repo", ""), request.query.get("tag", "")
        if not repo:
            raise InvalidArgument("repo: the repository to tag into is required")
        return (request.match_info["name"], f"{repo}:{tag}" if tag else repo), {}

    return bind


def job_body() -> Binder:
    """Bind a job request: a JSON body ``{"args": [...], "params": {...}}`` (both optional), or
    any other body as the job's stdin with args (``?arg=…``, repeatable) and params in the query."""

    async def bind(request: web.Request) -> Bound:
        if request.can_read_body and request.content_type in STDIN_TYPES:
            args = tuple(request.query.getall("arg", []))
            return args, {k: v for k, v in _query(request, ()).items() if k != "arg"}
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


def body_fields(**fields: str) -> Binder:
    """Bind keys of a JSON body as params: ``param="BodyKey"``; absent or null keys are left out
    (as Docker's decoder ignores keys it does not know)."""

    async def bind(request: web.Request) -> Bound:
        body = await json_body(request)
        if not isinstance(body, Mapping):
            raise InvalidArgument("body: expected a JSON object")
        return (), {p: body[k] for p, k in fields.items() if body.get(k) is not None}

    return bind


async def created_one(request: web.Request, job: Job[Any]) -> web.StreamResponse:
    """Respond 201 Created with the job's single record as a JSON object."""
    response = await render.one(request, job)
    response.set_status(201)
    return response


ROUTES: Final[tuple[Route, ...]] = (
    Route("GET", "/version", "version", nothing(), render.one),
    Route("GET", "/info", "info", nothing(), render.one),
    Route("GET", "/events", "events", query("since", "until", "filters"), render.events),
    Route("GET", "/jobs", "commands", nothing(), render.array),
    Route("GET", "/jobs/running", "jobs", query(which="running"), render.array),
    Route("GET", "/jobs/history", "jobs", query(which="history"), render.array),
    Route("DELETE", "/jobs/running/{id}", "cancel", path_args("id"), render.empty),
    Route("POST", "/jobs/{name}", None, job_body(), render.lines),
    Route("POST", "/images/create", "import", image_create(), render.progress),
    Route("GET", "/images/json", "images", query("all", "filters"), render.array),
    Route(
        "POST",
        "/auth",
        "auth",
        body_fields(
            username="username",
            password="password",
            serveraddress="serveraddress",
            email="email",
            identitytoken="identitytoken",
        ),
        render.one,
    ),
    Route("GET", "/images/get", "image_export", query_args("names"), render.tar),
    Route("POST", "/images/load", "load", query("quiet"), render.progress),
    Route("GET", "/images/{name:.+}/json", "image_inspect", path_args("name"), render.one),
    Route("GET", "/images/{name:.+}/history", "history", path_args("name"), render.array),
    Route("GET", "/images/{name:.+}/get", "image_export", path_args("name"), render.tar),
    Route("POST", "/images/{name:.+}/tag", "tag", tag_target(), render.created),
    Route("POST", "/images/{name:.+}/push", "push", image_push(), render.progress),
    Route(
        "GET",
        "/distribution/{name:.+}/json",
        "distribution_inspect",
        with_auth("name"),
        render.one,
    ),
    Route(
        "DELETE",
        "/images/{name:.+}",
        "image_delete",
        with_path("name", binder=query("force", "noprune")),
        render.array,
    ),
    Route("GET", "/graph/tree", "image_tree", nothing(), render.array),
    Route("GET", "/graph/viz", "image_viz", query("format"), render.one),
    Route("GET", "/graph/images/{name:.+}/lineage", "image_lineage", path_args("name"), render.one),
    Route("GET", "/volumes", "volumes", query("filters"), render.one),
    Route(
        "POST",
        "/volumes/create",
        "volume_create",
        body_fields(name="Name", driver="Driver", labels="Labels", driver_opts="DriverOpts"),
        created_one,
    ),
    Route("POST", "/volumes/prune", "volume_prune", query("filters"), render.one),
    Route("GET", "/volumes/{name}", "volume_inspect", path_args("name"), render.one),
    Route(
        "DELETE",
        "/volumes/{name}",
        "volume_rm",
        with_path("name", binder=query("force")),
        render.empty,
    ),
)
