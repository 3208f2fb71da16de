"""Renderers: run a job and turn its records into an HTTP response.

The HTTP status is decided before the first byte of the body: a job that fails before emitting
anything raises, and ``server/app.py`` maps the error class to a status. Once a stream has started,
its end is an in-band status record (``lines``).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import orjson
from aiohttp import web

from engine import Job
from engine.errors import kind_of

log = logging.getLogger(__name__)
Renderer = Callable[[web.Request, Job[Any]], Awaitable[web.StreamResponse]]
JSON: Final = "application/json"
NDJSON: Final = "application/x-ndjson"
EVENT_BACKLOG: Final = 4096  # messages an /events client may lag behind before it is cut off


def json_response(value: object, status: int = 200) -> web.Response:
    """A JSON body with ``Content-Type: application/json`` exactly, as Docker's clients need."""
    return web.Response(body=orjson.dumps(value), status=status, headers={"Content-Type": JSON})


async def collect(job: Job[Any]) -> list[Mapping[str, object]]:
    records: list[Mapping[str, object]] = []
    job.stdout.attach(records.append)
    task = asyncio.ensure_future(job.run())
    await settle(task)
    raise_failure(job, task)
    return records


async def settle(task: asyncio.Future[None]) -> None:
    # The job runs in its own task: cancelling it by id does not cancel this request, and the
    # request going away (the client hung up) cancels the job.
    try:
        await asyncio.wait([task])
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait([task])


def raise_failure(job: Job[Any], task: asyncio.Future[None]) -> None:
    if task.cancelled() and job.error is not None:
        raise job.error
    if not task.cancelled() and (exc := task.exception()) is not None:
        raise exc


async def one(request: web.Request, job: Job[Any]) -> web.StreamResponse:
    """Respond with the job's single record as a JSON object."""
    records = await collect(job)
    return json_response(records[0] if records else {})


async def array(request: web.Request, job: Job[Any]) -> web.StreamResponse:
    """Respond with the job's records as a JSON array."""
    return json_response(await collect(job))


async def empty(request: web.Request, job: Job[Any]) -> web.StreamResponse:
    """Run the job and respond 204 No Content."""
    await collect(job)
    return web.Response(status=204)


async def created(request: web.Request, job: Job[Any]) -> web.StreamResponse:
    """Run the job and respond 201 Created with no body."""
    await collect(job)
    return web.Response(status=201)


def status_record(job: Job[Any]) -> dict[str, object]:
    """The record that ends a stream: the job's id, state, status and error."""
    error = job.error
    return {
        "job": job.id,
        "state": job.state,
        "status": job.status,
        "error": None if error is None else {"kind": kind_of(error), "message": str(error)},
    }


async def lines(request: web.Request, job: Job[Any]) -> web.StreamResponse:
    """Stream each record as a JSON line, then a status record; headers wait for the first.

    Raw output (a job that writes bytes) arrives as records ``{"data": <base64>}``.
    """
    return await _stream(request, job, NDJSON, end=True)


async def progress(request: web.Request, job: Job[Any]) -> web.StreamResponse:
    """Docker's JSON message stream: records as JSON lines; a late error as an error message."""
    return await _stream(request, job, JSON, end=False)


async def _stream(
    request: web.Request, job: Job[Any], content_type: str, end: bool
) -> web.StreamResponse:
    queue: asyncio.Queue[Mapping[str, object] | None] = asyncio.Queue()
    job.stdout.attach(queue.put_nowait)

    async def raw(data: bytes) -> None:
        queue.put_nowait({"data": base64.b64encode(data).decode()})

    job.stdout.attach_writer(raw)
    task = asyncio.ensure_future(job.run())
    task.add_done_callback(lambda _: queue.put_nowait(None))
    response: web.StreamResponse | None = None
    try:
        while (record := await queue.get()) is not None:
            if response is None:
                response = await _start(request, content_type)
            await response.write(orjson.dumps(record) + b"\n")
    finally:  # the client went away or a write failed: stop the job
        if not task.done():
            task.cancel()
            await asyncio.wait([task])
    if response is None:
        if job.state != "cancelled":
            raise_failure(job, task)
        response = await _start(request, content_type)
    elif not task.cancelled():
        task.exception()  # reported in the stream below
    if end:
        await response.write(orjson.dumps(status_record(job)) + b"\n")
    elif job.error is not None:
        message = str(job.error)
        await response.write(orjson.dumps({"errorDetail": {"message": message}, "error": message}))
    await response.write_eof()
    return response


async def tar(request: web.Request, job: Job[Any]) -> web.StreamResponse:
    """Stream the job's raw output as ``application/x-tar``; headers wait for the first bytes."""
    response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})

    async def write(data: bytes) -> None:
        if not response.prepared:
            await response.prepare(request)
        await response.write(data)

    job.stdout.attach_writer(write)
    task = asyncio.ensure_future(job.run())
    await settle(task)
    if not response.prepared:
        raise_failure(job, task)
        await response.prepare(request)
    elif job.error is not None:
        # Too late for an HTTP status: cut the connection so the client sees a broken stream,
        # never a short tar that looks whole.
        log.error("%s %s failed after sending data: %s", request.method, request.path, job.error)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


async def _start(request: web.Request, content_type: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": content_type})
    await response.prepare(request)
    return response


async def events(request: web.Request, job: Job[Any]) -> web.StreamResponse:
    """Docker's ``/events``: headers as soon as the job has subscribed (before any event), then
    one JSON message a line as they come; a client ``EVENT_BACKLOG`` behind is cut off."""
    subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    wake, backlog = asyncio.Event(), collections.deque[Mapping[str, object]]()

    def sink(record: Mapping[str, object]) -> None:
        if "subscribed" in record:
            if not subscribed.done():
                subscribed.set_result(None)
        elif len(backlog) < EVENT_BACKLOG:
            backlog.append(record)
            wake.set()
        else:
            task.cancel()  # the client does not keep up: end its stream

    job.stdout.attach(sink)
    task = asyncio.ensure_future(job.run())
    task.add_done_callback(lambda _: wake.set())
    try:
        await asyncio.wait([task, subscribed], return_when=asyncio.FIRST_COMPLETED)
        if not subscribed.done():
            await settle(task)
            raise_failure(job, task)
        response = web.StreamResponse(headers={"Content-Type": JSON})
        await response.prepare(request)
        while backlog or not task.done():
            while backlog:
                await response.write(orjson.dumps(backlog.popleft()) + b"\n")
            wake.clear()
            if not task.done():
                await wake.wait()
    finally:  # the client went away or a write failed: stop the job
        if not task.done():
            task.cancel()
            await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # a late failure is in the job's log and history; the stream just ends
    await response.write_eof()
    return response
