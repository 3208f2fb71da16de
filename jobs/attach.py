"""The ``attach`` job: a client joins a container's stdio (``docker attach``, ``run``,
``start -a``).

With ``logs`` the container's log is replayed first, then, with ``stream`` and a running container,
live output follows; the seam between the two is fitted so that no line is lost or repeated (see
``_Seam``). Without a TTY each chunk is framed as Docker multiplexes streams (``mux``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

from drivers.exec.base import AttachRequest
from drivers.exec.native import protocol
from drivers.logging import jsonfile
from engine import ArgSpec, Engine, Job
from engine.errors import EngineError, FailedPrecondition, InvalidArgument, NotFound
from graph.containers import Container
from jobs.containerio import STREAM_IDS, mux
from jobs.runtime import Runtime
from jobs.services import RUNTIME


def parse_detach_keys(text: str) -> bytes:
    """Docker's ``--detach-keys`` (``ctrl-p,ctrl-q``, letters, ``ctrl-@``…) as bytes."""
    out = bytearray()
    for key in filter(None, text.split(",")):
        if key.startswith("ctrl-") and len(key) == 6:
            code = ord(key[5].upper()) - 64
            if 0 <= code < 32 or key[5] in "@[\\]^_":
                out.append(code & 0x1F)
                continue
        elif len(key) == 1:
            out.append(ord(key))
            continue
        raise InvalidArgument(f"detachKeys: invalid detach key: {key!r}")
    return bytes(out)


@dataclass(frozen=True, slots=True)
class AttachParams:
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    stream: bool = True
    logs: bool = False
    detachKeys: str = ""


async def attach(job: Job[AttachParams]) -> None:
    """Attach to a container's stdio: emit ``{"attached": true}`` once connected; with ``logs``
    replay its log first; with ``stream`` then copy stdin in and output out until the container
    ends or stdin's detach keys arrive (``_connect`` tells which cases stream)."""
    rt, p = job.engine[RUNTIME], job.params
    c = rt.get(job.args[0])
    if c.state.paused:
        raise FailedPrecondition(f"Container {c.id} is paused. Unpause the container first")
    if p.stdin and not c.config.get("OpenStdin"):
        p = AttachParams(False, p.stdout, p.stderr, p.stream, p.logs, p.detachKeys)
    keys = parse_detach_keys(p.detachKeys or "ctrl-p,ctrl-q")
    tty = bool(c.config.get("Tty"))
    path, max_file = _log_file(rt, c)
    links = await _connect(rt, c, p, path)
    inbox = _Inbox()
    tasks: list[asyncio.Future[Any]] = []
    try:
        rt.event(c, "attach")
        job.emit({"attached": True, "tty": tty})
        if links.out is not None:  # read live output at once: the monitor must not wait on us
            tasks.append(asyncio.ensure_future(_pump(links.out, inbox)))
        if links.into is not None:
            tasks.append(asyncio.ensure_future(_feed(job, links.into, keys)))
        seams: dict[int, _Seam] = {}
        if p.logs and (p.stdout or p.stderr):
            window = await _replay(job, path, max_file, links, p, tty)
            if links.out is not None and links.seam:
                early = links.opened + SEAM_FIRST
                seams = {kind: _Seam(window.get(kind, b""), early) for kind in STREAM_IDS}
        inbox.limit = QUEUED_FRAMES

        async def out(kind: int, data: bytes) -> None:
            if data:
                await job.stdout.write(data if tty else mux(STREAM_IDS[kind], data))

        async def fit(kinds: list[int]) -> None:
            for kind in kinds:
                after = await asyncio.to_thread(_first_after, path, max_file, links.end, kind)
                await out(kind, seams.pop(kind).fitted(after))

        while links.out is not None:
            due = min((seam.due for seam in seams.values() if seam.held), default=None)
            try:
                async with asyncio.timeout_at(due):
                    item = await inbox.get()
            except TimeoutError:
                now = asyncio.get_running_loop().time()
                await fit([k for k, seam in seams.items() if seam.held and seam.due <= now])
                continue
            if item is None or (item[0] == protocol.CONTROL and b'"exit"' in item[1]):
                await fit([k for k, seam in seams.items() if seam.held])
                break
            kind, payload = item
            if kind in seams and inbox.first_at[kind] > links.opened + SEAM_WAIT:
                del seams[kind]  # began late: too much may be logged since to look its line up
            if kind in seams:
                if seams[kind].take(payload, inbox.first_at[kind]):
                    await fit([kind])
            elif kind in STREAM_IDS:
                await out(kind, payload)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        links.close(rt, c)


QUEUED_FRAMES: Final = 64  # live frames read ahead of the client once the replay is out
SEAM_WAIT: Final = 1.0  # seconds the first live bytes of a stream may be held for the seam
SEAM_FIRST: Final = 0.1  # seconds after subscribing by which frames of the window come
REPLAY_BATCH: Final = 512  # log records read per step of a replay
OVERLAP_CHECKS: Final = 1000  # candidate overlaps compared at most at the seam
_Item = tuple[int, bytes] | None  # a frame from the container, or None at the end
_KIND: Final = {"stdout": protocol.STDOUT, "stderr": protocol.STDERR}


@dataclass
class _Links:
    """An attach's connections: ``out`` brings output and the end of the run, ``into`` takes
    stdin (the same connection, or none). The replay covers the log up to ``start`` (None: all
    of it), then the *window* up to ``end``: lines logged while subscribing, which may also
    arrive live. With ``seam`` the container was writing its log when we subscribed (at loop
    time ``opened``): the first live bytes of each stream are then fitted to the replay
    (``_Seam``)."""

    out: protocol.Connection | None = None
    into: protocol.Connection | None = None
    start: jsonfile.LogMark | None = None
    end: jsonfile.LogMark | None = None
    seam: bool = False
    opened: float = 0.0

    def close(self, rt: Runtime, c: Container) -> None:
        """Close the connection (one still pending is unregistered)."""
        if self.out is not None:
            rt.end_attach(c, self.out)


class _Inbox:
    """Frames read ahead of the client: without a limit while the replay goes out (a monitor
    that cannot send stalls its container, and drops the client after 5 s), then ``limit``;
    ``first_at`` is when the first frame of each kind came (loop time)."""

    def __init__(self) -> None:
        self.items: collections.deque[_Item] = collections.deque()
        self.limit: int | None = None
        self.changed = asyncio.Event()
        self.first_at: dict[int, float] = {}

    async def put(self, item: _Item) -> None:
        """Add *item*; wait while the inbox is full."""
        while self.limit is not None and len(self.items) >= self.limit:
            self.changed.clear()
            await self.changed.wait()
        if item is not None and item[0] not in self.first_at:
            self.first_at[item[0]] = asyncio.get_running_loop().time()
        self.items.append(item)
        self.changed.set()

    async def get(self) -> _Item:
        """Take the oldest item; wait for one."""
        while not self.items:
            self.changed.clear()
            await self.changed.wait()
        self.changed.set()
        return self.items.popleft()


def _log_file(rt: Runtime, c: Container) -> tuple[Path, int]:
    """The container's json-file log and its max-file."""
    options = (c.host_config.get("LogConfig") or {}).get("Config") or {}
    try:
        max_file = jsonfile.validate_options(options)[1]
    except EngineError:
        max_file = 1
    return rt.store.dir(c.id) / f"{c.id}-json.log", max_file


async def _connect(rt: Runtime, c: Container, p: AttachParams, path: Path) -> _Links:
    """Subscribe as *p* asks. Without ``logs`` a stream attaches at once, or before the start
    of a container not running (``start -a``, ``run``). With ``logs`` only a running (or
    restarting) container streams; the others have their log replayed, then the attach ends.

    The replay joins live output without a line lost or repeated (see ``_Seam``): the log is
    marked before and after subscribing (``log_mark``). Lines logged before the first mark
    were never sent to us, lines logged after the second will come live; those in between
    (none, unless the container wrote during the handshake) are replayed and dropped from the
    live output.
    """
    once = bool(c.config.get("StdinOnce"))
    if not p.stream or (p.logs and not c.state.running):
        return _Links()  # nothing live: a never started or exited container has its log only
    direct = c.state.running and not c.state.restarting  # else pending: nothing writes the log
    before = jsonfile.log_mark(path) if p.logs else None
    try:
        conn = await rt.attach(c, AttachRequest(-1, p.stdin, p.stdout, p.stderr, once))
    except NotFound:
        if not p.logs:
            raise
        return _Links()  # it ended meanwhile: its whole log is the replay
    after = jsonfile.log_mark(path) if p.logs and direct else before
    opened = asyncio.get_running_loop().time()
    return _Links(conn, conn if p.stdin else None, before, after, p.logs and direct, opened)


async def _replay(
    job: Job[Any], path: Path, max_file: int, links: _Links, p: AttachParams, tty: bool
) -> dict[int, bytes]:
    """Write the log (up to ``links.start``, then its window); return the window's bytes by
    stream."""

    def read(start: jsonfile.LogMark | None, end: jsonfile.LogMark | None) -> Any:
        if end is None:
            return jsonfile.read_logs(path, max_file=max_file, stdout=p.stdout, stderr=p.stderr)
        return jsonfile.read_until(
            path, max_file=max_file, start=start, end=end, stdout=p.stdout, stderr=p.stderr
        )

    await _send(job, read(None, links.start), tty)
    if links.start is None or links.end is None or links.end == links.start:
        return {}
    return await _send(job, read(links.start, links.end), tty)


async def _send(job: Job[Any], found: Iterator[jsonfile.LogRecord], tty: bool) -> dict[int, bytes]:
    """Write *found* records (framed unless *tty*), read in a thread; return what was sent of
    each stream."""
    records = cast(Generator[jsonfile.LogRecord, None, None], found)
    step = lambda: list(itertools.islice(records, REPLAY_BATCH))  # noqa: E731
    sent: dict[int, bytearray] = {}
    try:
        while batch := await asyncio.to_thread(step):
            for record in batch:
                kind = _KIND.get(record.stream, protocol.STDOUT)
                sent.setdefault(kind, bytearray()).extend(record.data)
                await job.stdout.write(record.data if tty else mux(STREAM_IDS[kind], record.data))
    finally:
        with contextlib.suppress(ValueError):  # still in its thread if cancelled: GC closes it
            records.close()
    return {kind: bytes(data) for kind, data in sent.items()}


class _Seam:
    """The first live bytes of one stream, held until they can be fitted to the replay
    (``_fit``): until no longer end of the window could match them and they hold a whole line
    (or record) that the log can be asked about, or for SEAM_WAIT seconds at most. The
    window's lines came live at once if at all: for bytes that came later it does not count.
    """

    def __init__(self, covered: bytes, early: float) -> None:
        self.covered, self.early = covered, early
        self.held = bytearray()
        self.due = 0.0

    def take(self, data: bytes, came: float) -> bool:
        """Hold *data* (the stream's first came at loop time *came*); tell if it can be fitted."""
        if not self.held:
            self.due = asyncio.get_running_loop().time() + SEAM_WAIT
            if came > self.early:
                self.covered = b""
        self.held += data
        covered, held = self.covered, bytes(self.held)
        if covered and covered.find(held, 0, len(covered) - 1) >= 0:
            return False  # a longer end of the window may still match
        return b"\n" in held or len(held) >= jsonfile.MAX_MESSAGE

    def fitted(self, after: bytes | None) -> bytes:
        """The held bytes as they continue the replay (*after*: see ``_fit``)."""
        skip, lead = _fit(self.covered, bytes(self.held), after)
        return lead + bytes(self.held[skip:])


def _fit(covered: bytes, live: bytes, after: bytes | None) -> tuple[int, bytes]:
    """How *live* continues the replay: (bytes to drop, bytes to put first). An end of the
    window (*covered*) that *live* starts with was replayed already, if what follows it agrees
    with *after*, the first record logged after the window; else *after* may be the start of
    a line begun before we subscribed, then the rest of it (the first line of *live*)."""
    for skip in (*_overlaps(covered, live), 0):
        rest = live[skip:]
        if not rest or (after is None and b"\n" not in rest):
            return skip, b""
        if after is not None and (rest.startswith(after) or after.startswith(rest)):
            return skip, b""
    if after is None:
        return 0, b""
    shared = next(iter(_overlaps(after, live)), 0)
    lead = after[: len(after) - shared]
    whole = live[:shared].endswith(b"\n") or len(after) >= jsonfile.MAX_MESSAGE
    return 0, lead if shared and whole and b"\n" not in lead else b""


def _first_after(
    path: Path, max_file: int, mark: jsonfile.LogMark | None, kind: int
) -> bytes | None:
    """The first record of stream *kind* logged after *mark* (None if there is none yet)."""
    if mark is None:
        return None
    found = jsonfile.read_until(
        path, max_file=max_file, start=mark, end=jsonfile.log_mark(path),
        stdout=kind == protocol.STDOUT, stderr=kind == protocol.STDERR,
    )  # fmt: skip
    records = cast(Generator[jsonfile.LogRecord, None, None], found)
    try:
        record = next(records, None)
    finally:
        records.close()
    return None if record is None else record.data


def _overlaps(covered: bytes, live: bytes) -> Iterator[int]:
    """The lengths of the ends of *covered* that *live* starts with, longest first."""
    probe = live[: min(len(covered), len(live), 64)]
    if not probe:
        return
    at = covered.find(probe, len(covered) - min(len(covered), len(live)))
    for _ in range(OVERLAP_CHECKS):  # ends at least as long as the probe
        if at < 0:
            break
        if live.startswith(covered[at:]):
            yield len(covered) - at
        at = covered.find(probe, at + 1)
    for size in range(len(probe) - 1, 0, -1):  # shorter ends
        if covered.endswith(live[:size]):
            yield size


async def _pump(conn: protocol.Connection, inbox: _Inbox) -> None:
    """Put the frames of *conn* in *inbox*; None at its end."""
    try:
        while True:
            await inbox.put(await conn.recv())
    except (protocol.ProtocolError, OSError):
        await inbox.put(None)


async def _feed(job: Job[Any], conn: protocol.Connection, keys: bytes) -> str:
    """Copy the client's input to *conn* until its end, or the detach keys (then close it)."""
    matched = 0
    while True:
        data = await job.stdin.read(65536)
        if not data:
            await conn.send(protocol.STDIN_EOF)
            return "eof"
        if keys:
            for i, byte in enumerate(data):
                matched = matched + 1 if byte == keys[matched] else (1 if byte == keys[0] else 0)
                if matched == len(keys):
                    if i + 1 - len(keys) > 0:
                        await conn.send(protocol.STDIN, data[: i + 1 - len(keys)])
                    conn.close()
                    return "detached"
        await conn.send(protocol.STDIN, data)


def install(engine: Engine) -> None:
    """Register attach."""
    engine.register("attach", attach, params=AttachParams, args=ArgSpec(("container",)))
