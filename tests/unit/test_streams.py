"""Worker threads that stop with their job, and the blocking stream views they use."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from engine.errors import Cancelled
from engine.streams import in_thread, reader, writer


def test_cancel_stops_the_thread_and_waits_for_its_cleanup() -> None:
    log: list[str] = []

    def work(stop: threading.Event) -> None:
        try:
            while not stop.wait(0.01):
                pass
            raise Cancelled("stopped")
        finally:
            time.sleep(0.1)  # cleanup that must finish before the cancellation propagates
            log.append("cleaned up")

    async def scenario() -> None:
        task = asyncio.ensure_future(in_thread(work))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        log.append("cancelled")

    asyncio.run(scenario())
    assert log == ["cleaned up", "cancelled"]


def test_a_blocked_read_gives_up_when_stopped() -> None:
    async def scenario() -> None:
        never = asyncio.Event()

        async def read(n: int) -> bytes:
            await never.wait()  # a client that sends nothing more
            return b""

        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(in_thread(lambda stop: reader(read, stop, loop).read(10)))
        await asyncio.sleep(0.05)
        task.cancel()
        started = loop.time()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.time() - started < 2

    asyncio.run(scenario())


def test_reader_gathers_and_writer_delivers_in_order() -> None:
    async def scenario() -> tuple[bytes, list[bytes]]:
        chunks = [b"a" * 70_000, b"b" * 70_000, b"c" * 10]

        async def read(n: int) -> bytes:
            if not chunks:
                return b""
            head = chunks[0][:n]
            chunks[0] = chunks[0][n:]
            if not chunks[0]:
                chunks.pop(0)
            return head

        got: list[bytes] = []

        async def write(data: bytes) -> None:
            got.append(data)

        loop = asyncio.get_running_loop()

        def work(stop: threading.Event) -> bytes:
            data = reader(read, stop, loop).read()
            out = writer(write, stop, loop)
            out.write(data)
            out.flush()
            return data

        return await in_thread(work), got

    data, got = asyncio.run(scenario())
    assert data == b"a" * 70_000 + b"b" * 70_000 + b"c" * 10
    assert b"".join(got) == data
