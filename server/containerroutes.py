"""Docker's container and exec routes, with the renderers only they need.

Each route binds one job (``jobs/containers.py``, ``containerinfo.py``, ``containerio.py``,
``execs.py``). The renderers here turn a job's first record into Docker's status codes (304 for
a start of a running container), send headers at once for ``wait``, and stream raw output with
Docker's content types (``logs``, ``archive``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

import orjson
from aiohttp import web

from engine import Job
from engine.errors import InvalidArgument
from server import render
from server.hijack import content_type, hijack
from server.render import collect, raise_failure, settle
from server.routes import (
    Binder,
    Bound,
    Route,
    body_fields,
    created_one,
    json_body,
    path_args,
    query,
    with_path,
)


def whole_body(*query_names: str) -> Binder:
    """Bind the JSON body as the ``body`` param (Docker's create, update and exec bodies), plus
    the query keys *query_names* as params."""

    async def bind(request: web.Request) -> Bound:
        body = await json_body(request)
        if not isinstance(body, Mapping):
            raise InvalidArgument("body: expected a JSON object")
        params: dict[str, object] = {"body": dict(body)}
        params.update((k, request.query[k]) for k in query_names if request.query.get(k))
        return (), params

    return bind


def rename_args() -> Binder:
    """Bind ``POST /containers/{id}/rename?name=`` as args (id, name)."""

    async def bind(request: web.Request) -> Bound:
        name = request.query.get("name", "")
        if not name:
            raise InvalidArgument("name: the new name is required")
        return (request.match_info["id"], name), {}

    return bind


def stats_query() -> Binder:
    """Bind ``stream`` and ``one-shot``."""

    async def bind(request: web.Request) -> Bound:
        params: dict[str, object] = {}
        if "stream" in request.query:
            params["stream"] = request.query["stream"]
        if "one-shot" in request.query:
            params["one_shot"] = request.query["one-shot"]
        return (request.match_info["id"],), params

    return bind


def commit_query() -> Binder:
    """Bind ``POST /commit?container=&repo=&tag=&comment=&author=&pause=&changes=`` + config."""

    async def bind(request: web.Request) -> Bound:
        q = request.query
        if not q.get("container"):
            raise InvalidArgument("container: the container to commit is required")
        params: dict[str, object] = {
            k: q[k] for k in ("repo", "tag", "comment", "author", "pause") if k in q
        }
        params["changes"] = q.getall("changes", [])
        body = await json_body(request)
        if isinstance(body, Mapping) and body:
            params["config"] = dict(body)
        return (q["container"],), params

    return bind


def flagged(key: str, unchanged: int, changed: int = 204) -> render.Renderer:
    """204 (or *changed*) when the record's *key* is true, *unchanged* (304) when false."""

    async def respond(request: web.Request, job: Job[Any]) -> web.StreamResponse:
        records = await collect(job)
        done = bool(records[0].get(key, True)) if records else True
        return web.Response(status=changed if done else unchanged)

    return respond


async def ok_empty(request: web.Request, job: Job[Any]) -> web.StreamResponse:
    """200 with no body."""
    await collect(job)
    return web.Response(status=200)


async def wait(request: web.Request, job: Job[Any]) -> web.StreamResponse:
    """Docker's wait: headers at once (after the container was found), the body at the end."""
    first: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    result: list[Mapping[str, object]] = []

    def sink(record: Mapping[str, object]) -> None:
        if "waiting" in record:
            if not first.done():
                first.set_result(None)
        else:
            result.append(record)

    job.stdout.attach(sink)
    task = asyncio.ensure_future(job.run())
    await asyncio.wait([task, first], return_when=asyncio.FIRST_COMPLETED)
    if not first.done():
        await settle(task)
        raise_failure(job, task)
    response = web.StreamResponse(headers={"Content-Type": render.JSON})
    await response.prepare(request)
    await settle(task)
    if result:
        body = result[0]
    else:
        error = job.error
        body = {"StatusCode": -1, "Error": {"Message": str(error) if error else "wait failed"}}
    await response.write(orjson.dumps(body) + b"\n")
    await response.write_eof()
    return response


async def raw_stream(request: web.Request, job: Job[Any]) -> web.StreamResponse:
    """Stream raw output (logs) with Docker's stream content type; headers on the first record
    (``{"tty": bool}``) or at the end."""
    response: web.StreamResponse | None = None
    tty = [False]

    async def start() -> web.StreamResponse:
        nonlocal response
        if response is None:
            response = web.StreamResponse(headers={"Content-Type": content_type(request, tty[0])})
            await response.prepare(request)
        return response

    def sink(record: Mapping[str, object]) -> None:
        if "tty" in record:
            tty[0] = bool(record["tty"])

    async def write(data: bytes) -> None:
        out = await start()
        await out.write(data)

    job.stdout.attach(sink)
    job.stdout.attach_writer(write)
    task = asyncio.ensure_future(job.run())
    await settle(task)
    if response is None:
        raise_failure(job, task)
    out = await start()
    await out.write_eof()
    return out


async def archive(request: web.Request, job: Job[Any]) -> web.StreamResponse:
    """GET/HEAD archive: the path's stat in ``X-Docker-Container-Path-Stat``, then a tar."""
    header: list[str] = []
    got: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})

    def sink(record: Mapping[str, object]) -> None:
        header.append(str(record.get("stat", "")))
        if not got.done():
            got.set_result(None)

    async def write(data: bytes) -> None:
        if not response.prepared:
            response.headers["X-Docker-Container-Path-Stat"] = header[0]
            await response.prepare(request)
        await response.write(data)

    job.stdout.attach(sink)
    job.stdout.attach_writer(write)
    task = asyncio.ensure_future(job.run())
    await settle(task)
    if not response.prepared:
        raise_failure(job, task)
        response.headers["X-Docker-Container-Path-Stat"] = header[0] if header else ""
        await response.prepare(request)
    await response.write_eof()
    return response


async def stats(request: web.Request, job: Job[Any]) -> web.StreamResponse:
    """One stats record, or a JSON-lines stream of them."""
    if request.query.get("stream", "1").lower() in ("0", "false"):
        return await render.one(request, job)
    return await render.progress(request, job)


ROUTES: Final[tuple[Route, ...]] = (
    Route("POST", "/containers/create", "create", whole_body("name"), created_one),
    Route(
        "GET",
        "/containers/json",
        "containers",
        query("all", "limit", "size", "filters"),
        render.array,
    ),
    Route("GET", "/containers/{id}/json", "container_inspect", path_args("id"), render.one),
    Route("POST", "/containers/{id}/start", "start", path_args("id"), flagged("started", 304)),
    Route(
        "POST",
        "/containers/{id}/stop",
        "stop",
        with_path("id", binder=query("t", "signal")),
        flagged("stopped", 304),
    ),
    Route(
        "POST",
        "/containers/{id}/restart",
        "restart",
        with_path("id", binder=query("t", "signal")),
        render.empty,
    ),
    Route(
        "POST",
        "/containers/{id}/kill",
        "kill",
        with_path("id", binder=query("signal")),
        render.empty,
    ),
    Route(
        "POST", "/containers/{id}/wait", "wait", with_path("id", binder=query("condition")), wait
    ),
    Route(
        "POST",
        "/containers/{id}/attach",
        "attach",
        with_path("id", binder=query("stdin", "stdout", "stderr", "stream", "logs", "detachKeys")),
        hijack,
    ),
    Route(
        "GET",
        "/containers/{id}/logs",
        "logs",
        with_path(
            "id", binder=query("follow", "stdout", "stderr", "since", "until", "timestamps", "tail")
        ),
        raw_stream,
    ),
    Route(
        "GET", "/containers/{id}/top", "top", with_path("id", binder=query("ps_args")), render.one
    ),
    Route("GET", "/containers/{id}/stats", "stats", stats_query(), stats),
    Route("GET", "/containers/{id}/changes", "changes", path_args("id"), render.array),
    Route("GET", "/containers/{id}/export", "export", path_args("id"), render.tar),
    Route(
        "GET",
        "/containers/{id}/archive",
        "archive_get",
        with_path("id", binder=query("path")),
        archive,
    ),
    Route(
        "HEAD",
        "/containers/{id}/archive",
        "archive_stat",
        with_path("id", binder=query("path")),
        archive,
    ),
    Route(
        "PUT",
        "/containers/{id}/archive",
        "archive_put",
        with_path("id", binder=query("path", "noOverwriteDirNonDir", "copyUIDGID")),
        ok_empty,
    ),
    Route(
        "POST",
        "/containers/{id}/resize",
        "resize",
        with_path("id", binder=query("h", "w")),
        ok_empty,
    ),
    Route("POST", "/containers/{id}/pause", "pause", path_args("id"), render.empty),
    Route("POST", "/containers/{id}/unpause", "unpause", path_args("id"), render.empty),
    Route("POST", "/containers/{id}/rename", "rename", rename_args(), render.empty),
    Route(
        "POST",
        "/containers/{id}/update",
        "update",
        with_path("id", binder=whole_body()),
        render.one,
    ),
    Route(
        "DELETE",
        "/containers/{id:.+}",  # with ?link=1 the id is a link's path: /containers//web/db
        "container_delete",
        with_path("id", binder=query("v", "force", "link")),
        render.empty,
    ),
    Route("POST", "/commit", "commit", commit_query(), created_one),
    Route(
        "POST",
        "/containers/{id}/exec",
        "exec_create",
        with_path("id", binder=whole_body()),
        created_one,
    ),
    Route(
        "POST",
        "/exec/{id}/start",
        "exec_start",
        with_path("id", binder=body_fields(Detach="Detach", Tty="Tty", ConsoleSize="ConsoleSize")),
        hijack,
    ),
    Route(
        "POST",
        "/exec/{id}/resize",
        "exec_resize",
        with_path("id", binder=query("h", "w")),
        ok_empty,
    ),
    Route("GET", "/exec/{id}/json", "exec_inspect", path_args("id"), render.one),
)
