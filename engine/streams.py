"""Blocking work for jobs: a worker thread that stops when its job is cancelled, and blocking
views of the job's streams for the code running in it.

A handler hands blocking work (applying a layer, writing a tar) to a thread with ``in_thread``.
That code wants file objects; ``reader`` and ``writer`` adapt the job's async stdin and raw
output to ``read``/``write`` calls that wait on the event loop, so data streams through with
the loop's backpressure and no copy on disk. When the job is cancelled, the thread is told to
stop (its reads and writes raise ``Cancelled``) and the cancellation propagates only once the
thread has returned, so whatever cleanup it does on the way out has happened.

Example::

    async def load(job):
        def work(stop: threading.Event) -> None:
            apply_archive(reader(job.stdin.read, stop, loop), stop)
        await in_thread(work)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, TypeVar

from engine.errors import Cancelled

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

T = TypeVar("T")
Read = Callable[[int], Coroutine[Any, Any, bytes]]
Write = Callable[[bytes], Coroutine[Any, Any, None]]
_POLL: Final = 0.2  # seconds between looks at the stop flag while waiting on the loop


async def in_thread(work: Callable[[threading.Event], T]) -> T:
    """Run ``work(stop)`` in a worker thread; on cancellation set *stop*, wait for it, re-raise."""
    stop = threading.Event()
    future = asyncio.get_running_loop().run_in_executor(None, work, stop)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(BaseException):
            await future
        raise


def _wait(future: concurrent.futures.Future[T], stop: threading.Event | None) -> T:
    while True:
        try:
            return future.result(_POLL)
        except concurrent.futures.TimeoutError:
            if stop is not None and stop.is_set():
                future.cancel()
                raise Cancelled("the job was cancelled") from None


class BlockingReader(io.RawIOBase):
    """Read an async source from a worker thread: ``read(n)`` waits for the loop to supply."""

    def __init__(
        self, read: Read, loop: asyncio.AbstractEventLoop, stop: threading.Event | None = None
    ) -> None:
        super().__init__()
        self._read, self._loop, self._stop = read, loop, stop

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        if self._stop is not None and self._stop.is_set():
            raise Cancelled("the job was cancelled")
        view = memoryview(buffer).cast("B")
        data = _wait(
            asyncio.run_coroutine_threadsafe(self._fill(len(view)), self._loop), self._stop
        )
        view[: len(data)] = data
        return len(data)

    async def _fill(self, n: int) -> bytes:
        # One hop to the loop gathers up to n bytes (a socket hands out ~64 KiB at a time).
        chunks, size = [], 0
        while size < n and (chunk := await self._read(n - size)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)


class BlockingWriter(io.RawIOBase):
    """Write to an async sink from a worker thread: ``write`` returns once the sink took it."""

    def __init__(
        self, write: Write, loop: asyncio.AbstractEventLoop, stop: threading.Event | None = None
    ) -> None:
        super().__init__()
        self._write, self._loop, self._stop = write, loop, stop

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        if self._stop is not None and self._stop.is_set():
            raise Cancelled("the job was cancelled")
        chunk = bytes(data)
        if chunk:
            _wait(asyncio.run_coroutine_threadsafe(self._write(chunk), self._loop), self._stop)
        return len(chunk)


def reader(
    read: Read, stop: threading.Event | None = None, loop: asyncio.AbstractEventLoop | None = None
) -> io.BufferedReader:
    """A buffered blocking reader over *read* for a worker thread (*loop*: the running one)."""
    raw = BlockingReader(read, loop or asyncio.get_running_loop(), stop)
    return io.BufferedReader(raw, 1 << 20)


def writer(
    write: Write, stop: threading.Event | None = None, loop: asyncio.AbstractEventLoop | None = None
) -> io.BufferedWriter:
    """A buffered blocking writer over *write* for a worker thread (*loop*: the running one)."""
    raw = BlockingWriter(write, loop or asyncio.get_running_loop(), stop)
    return io.BufferedWriter(raw, 1 << 20)
