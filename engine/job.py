"""A job: one named run of a handler with typed params, an input stream and records out.

Lifecycle: ``Engine.job()`` builds it (state ``created``); ``await job.run()`` runs it once
(``running``) and ends it as ``ok`` (status 0), ``error`` (1), ``cancelled`` (1) or ``not found``
(127). ``run`` re-raises what the handler raised; a cancelled run re-raises ``CancelledError`` as
asyncio requires. Records are dicts, one JSON object a line on the wire, fanned out to the sinks
attached to ``job.stdout`` before the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, Literal, Protocol, TypeVar

from engine.errors import Cancelled, EngineError, JobNotFound

if TYPE_CHECKING:
    from engine.engine import Engine

log = logging.getLogger("engine")
# What the history shows for a param declared with ``metadata={"secret": True}``.
REDACTED: Final = "<redacted>"

P = TypeVar("P")
Record = Mapping[str, object]
Sink = Callable[[Record], None]
Writer = Callable[[bytes], Awaitable[None]]
State = Literal["created", "running", "ok", "error", "cancelled", "not found"]


class Reader(Protocol):
    """Where a job's stdin comes from (an HTTP body, a file, a pipe)."""

    async def read(self, n: int = -1) -> bytes:
        """Return up to *n* bytes (all if -1); b"" at the end."""
        ...


class Input:
    """A job's stdin: at most one source; empty when none is attached."""

    def __init__(self) -> None:
        self._source: Reader | None = None

    def attach(self, source: Reader) -> None:
        """Read from *source*; a second source is an error."""
        if self._source is not None:
            raise EngineError("stdin already has a source")
        self._source = source

    async def read(self, n: int = -1) -> bytes:
        """Return up to *n* bytes of input, b"" at its end."""
        return b"" if self._source is None else await self._source.read(n)


class Output:
    """What a job produces: records, delivered in order to every sink, and raw bytes (a tar
    being saved, say), written to every writer with backpressure."""

    def __init__(self) -> None:
        self._sinks: list[Sink] = []
        self._writers: list[Writer] = []
        self.count = 0

    def attach(self, sink: Sink) -> None:
        """Deliver every later record to *sink* (a cheap, non-blocking callable)."""
        self._sinks.append(sink)

    def attach_writer(self, writer: Writer) -> None:
        """Send every later chunk of raw output to *writer*, awaiting it."""
        self._writers.append(writer)

    async def write(self, data: bytes) -> None:
        """Write raw bytes to every writer; returns once each has taken them."""
        for writer in self._writers:
            await writer(data)

    def emit(self, record: Record) -> None:
        """Send one record to every sink."""
        self.count += 1
        for sink in self._sinks:
            sink(record)


@dataclass(frozen=True, slots=True)
class JobSummary:
    """What is kept of a job once it ended (and shown for running ones)."""

    id: str
    name: str
    args: tuple[str, ...]
    params: Mapping[str, object]
    state: State
    status: int | None
    error: str | None
    started: float | None
    ended: float | None


Handler = Callable[["Job[P]"], Awaitable[None]]


class Job(Generic[P]):
    """One run of a named handler; see the module docstring for its lifecycle."""

    def __init__(
        self,
        engine: Engine,
        id: str,
        name: str,
        args: tuple[str, ...],
        params: P,
        handler: Handler[P] | None,
    ) -> None:
        self.engine = engine
        self.id = id
        self.name = name
        self.args = args
        self.params = params
        self.stdin = Input()
        self.stdout = Output()
        self.state: State = "created"
        self.status: int | None = None
        self.error: BaseException | None = None
        self.started: float | None = None
        self.ended: float | None = None
        self._handler = handler
        self._task: asyncio.Task[object] | None = None
        self._done = asyncio.Event()

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(self.args)})"

    def emit(self, record: Record) -> None:
        """Send one record (a JSON-able mapping) to the job's output."""
        self.stdout.emit(record)

    async def run(self) -> None:
        """Run the handler once; raise what it raised (JobNotFound for an unknown name)."""
        if self.state != "created":
            raise EngineError(f"job {self.id} has already run")
        self.engine._admit(self)
        self._task = asyncio.current_task()
        self.state, self.started = "running", time.time()
        log.debug("+job %r", self)
        try:
            if self._handler is None:
                raise JobNotFound(f"no such job: {self.name}")
            await self._handler(self)
        except asyncio.CancelledError:
            self._end("cancelled", 1, Cancelled(f"job {self.name} ({self.id}) was cancelled"))
            raise
        except JobNotFound as exc:
            self._end("not found", 127, exc)
            raise
        except Exception as exc:
            self._end("error", 1, exc)
            raise
        else:
            self._end("ok", 0, None)

    def cancel(self) -> bool:
        """Ask the running job to stop; return False if it is not running."""
        if self._task is None or self._done.is_set():
            return False
        self._task.cancel()
        return True

    async def wait(self) -> None:
        """Return once the job has ended."""
        await self._done.wait()

    def summary(self) -> JobSummary:
        """Return what is recorded of this job in the history."""
        params = self.params
        fields: dict[str, object] = {}
        if dataclasses.is_dataclass(params):
            for f in dataclasses.fields(params):
                value = getattr(params, f.name)
                # Secrets (passwords, registry credentials) are never kept in the history.
                fields[f.name] = REDACTED if f.metadata.get("secret") and value else value
        return JobSummary(
            id=self.id,
            name=self.name,
            args=self.args,
            params=fields,
            state=self.state,
            status=self.status,
            error=None if self.error is None else str(self.error),
            started=self.started,
            ended=self.ended,
        )

    def _end(self, state: State, status: int, error: BaseException | None) -> None:
        self.state, self.status, self.error, self.ended = state, status, error, time.time()
        word = {"ok": "OK", "cancelled": "CANCELLED", "not found": "NOT FOUND"}.get(state, "ERR")
        log.debug("-job %r = %s (%d)", self, word, status)
        self._done.set()
        self.engine._release(self)
