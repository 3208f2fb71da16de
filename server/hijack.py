"""Hijacked connections (attach, exec start): ``101 UPGRADED``, then raw bytes both ways.

The job runs first and emits ``{"attached": true, "tty": bool}`` once its stream is connected
(for a container not yet started: registered, so no output of the start is lost); only then do
the headers go out, exactly as dockerd sends them. Output the job writes before that is held,
and released a few milliseconds after the headers, because docker-py reads the socket under
http.client's buffer and loses bytes that arrive together with the headers. After the headers
the client's bytes are the job's stdin; a client that half-closes its side still gets every
byte of output; the connection is closed when the job ends.

A client that hangs up (closes the connection) looks like a half-close until something is
written, so once its side has ended the socket is checked every HANGUP_POLL seconds: on a unix
socket the peer's close shows as POLLHUP, and the connection is then dropped, which cancels the
handler and with it the job. Over TCP a close cannot be told from a half-close without writing;
there the job ends at its next output (or when the container ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from typing import Any, Final

from aiohttp import web

from engine import Job
from server.render import raise_failure

HOLD_BACK: Final = 0.05  # seconds between the headers and the first output byte
HIGH_WATER: Final = 1 << 20
HANGUP_POLL: Final = 0.1  # seconds between checks for a client gone after its EOF


class _Parser:
    """Takes the connection's bytes after the upgrade: they are the job's stdin."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.stream = stream

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.stream.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        if not self.stream.at_eof():
            self.stream.feed_eof()


class _KeepOpen(asyncio.Protocol):
    """Wraps aiohttp's protocol so that a client's half-close ends stdin, not the connection:
    output still flows after the client shut down its writing side. After the EOF it watches
    for the client hanging up (see the module docstring)."""

    def __init__(self, inner: Any, parser: _Parser, transport: asyncio.Transport) -> None:
        self.inner, self.parser, self.transport = inner, parser, transport
        self.check: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool:
        self.parser.feed_eof()
        if self.check is None:
            self._check_hangup()
        return True

    def _check_hangup(self) -> None:
        if self.transport.is_closing():
            self.check = None
            return
        if _hung_up(self.transport):
            self.check = None
            self.transport.abort()  # connection_lost follows: aiohttp cancels the handler
            return
        loop = asyncio.get_running_loop()
        self.check = loop.call_later(HANGUP_POLL, self._check_hangup)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.check is not None:
            self.check.cancel()
            self.check = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def _hung_up(transport: asyncio.Transport) -> bool:
    """Tell whether the peer of *transport* closed its end (POLLHUP or an error pending)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        poller = select.poll()
        poller.register(sock.fileno(), 0)  # POLLHUP and POLLERR are always reported
        events = poller.poll(0)
    except (OSError, ValueError):
        return True
    return any(mask & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, mask in events)


def content_type(request: web.Request, tty: bool) -> str:
    """Docker's stream content type: multiplexed without a TTY from API 1.42 on, else raw."""
    version = request.match_info.get("api_version", "")
    modern = not version or tuple(int(x) for x in version.split(".")) >= (1, 42)
    if tty or not modern:
        return "application/vnd.docker.raw-stream"
    return "application/vnd.docker.multiplexed-stream"


async def hijack(request: web.Request, job: Job[Any]) -> web.StreamResponse:
    """Run an attaching job over a hijacked connection; see the module docstring."""
    stdin = asyncio.StreamReader(limit=1 << 20)
    job.stdin.attach(stdin)
    ready = asyncio.Event()
    info: dict[str, Any] = {}
    held: list[bytes] = []
    transport = request.transport
    live = False

    def on_record(record: Any) -> None:
        if "attached" in record:
            info.update(record)
            ready.set()

    async def write(data: bytes) -> None:
        if not live:
            held.append(data)
            return
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        transport.write(data)
        while transport.get_write_buffer_size() > HIGH_WATER and not transport.is_closing():
            await asyncio.sleep(0.005)

    job.stdout.attach(on_record)
    job.stdout.attach_writer(write)
    task = asyncio.ensure_future(job.run())
    waiter = asyncio.ensure_future(ready.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the client went away before the job attached
        task.cancel()
        raise
    finally:
        waiter.cancel()
    if not ready.is_set():
        await asyncio.wait([task])
        raise_failure(job, task)
        return web.Response(status=200)  # a detached exec: nothing to stream
    upgrade = request.headers.get("Upgrade", "").lower() == "tcp"
    response = web.StreamResponse(
        status=101 if upgrade else 200,
        reason="UPGRADED" if upgrade else "OK",
        headers={"Content-Type": content_type(request, bool(info.get("tty")))},
    )
    if upgrade:
        response.headers["Connection"] = "Upgrade"
        response.headers["Upgrade"] = "tcp"
    try:
        await response.prepare(request)
        parser = _Parser(stdin)
        protocol = request.protocol
        protocol.set_parser(parser)  # type: ignore[arg-type]
        protocol.keep_alive(False)

        if transport is not None:
            transport.set_protocol(_KeepOpen(protocol, parser, transport))
        await asyncio.sleep(HOLD_BACK)
        live = True
        for data in held:
            await write(data)
        held.clear()
        await asyncio.wait([task])
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait([task])
        with contextlib.suppress(Exception):
            if transport is not None:
                transport.close()
    return response
