"""Blocking views of a job's streams, for handler code that runs in a thread.

A handler hands blocking work (applying a layer, writing a tar) to a thread. That code wants a
file object; these adapt the job's async stdin and raw output to ``read``/``write`` calls that
wait on the event loop, so data streams through with the loop's backpressure and no copy on disk.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

Read = Callable[[int], Coroutine[Any, Any, bytes]]
Write = Callable[[bytes], Coroutine[Any, Any, None]]


class BlockingReader(io.RawIOBase):
    """Read an async source from a worker thread: ``read(n)`` waits for the loop to supply."""

    def __init__(self, read: Read, loop: asyncio.AbstractEventLoop):
        super().__init__()
        self._read, self._loop = read, loop

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = asyncio.run_coroutine_threadsafe(self._read(len(view)), self._loop).result()
        view[: len(data)] = data
        return len(data)


class BlockingWriter(io.RawIOBase):
    """Write to an async sink from a worker thread: ``write`` returns once the sink took it."""

    def __init__(self, write: Write, loop: asyncio.AbstractEventLoop):
        super().__init__()
        self._write, self._loop = write, loop

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        chunk = bytes(data)
        if chunk:
            asyncio.run_coroutine_threadsafe(self._write(chunk), self._loop).result()
        return len(chunk)


def reader(read: Read) -> io.BufferedReader:
    """A buffered blocking reader over *read*, for use in a thread started from the loop."""
    return io.BufferedReader(BlockingReader(read, asyncio.get_running_loop()), 1 << 20)


def writer(write: Write) -> io.BufferedWriter:
    """A buffered blocking writer over *write*, for use in a thread started from the loop."""
    return io.BufferedWriter(BlockingWriter(write, asyncio.get_running_loop()), 1 << 20)
