"""One layer of a pull: its blob downloading into a spool, and the layer applied from it.

``start`` begins the download (it waits for one of the pull's download slots, saying
``Waiting``); ``apply`` registers the layer from the spool in a worker thread while the blob
arrives, and gives back the ready layer. If the blob's digest fails after a resumed download,
the whole layer is pulled once more from nothing (the resumed bytes may have come from a
registry that changed its mind); any other failure ends the pull with a message naming the
registry and the blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from engine.crashpoint import reach
from engine.errors import Cancelled, InvalidArgument
from engine.streams import in_thread
from graph.layers import DiffIdMismatch, Layer, LayerStore
from jobs.progress import Emit, Throttle, short, status
from registry.client import Repository
from registry.download import DigestMismatch, Retry, Spool, fetch, remove
from registry.manifest import Descriptor


class LayerPull:
    """Download and apply one layer blob."""

    def __init__(
        self,
        repo: Repository,
        blob: Descriptor,
        diff_id: str,
        path: Path,
        slots: asyncio.Semaphore,
        retry: Retry,
        emit: Emit,
    ) -> None:
        self.repo, self.blob, self.diff_id, self.path = repo, blob, diff_id, path
        self._slots, self._retry, self._emit = slots, retry, emit
        self.id = short(blob.digest)
        self._spool: Spool | None = None
        self._task: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()

    def start(self) -> None:
        """Begin downloading (in the background)."""
        self._spool = Spool(self.path)
        self._task = asyncio.ensure_future(self._download(self._spool))

    async def _download(self, spool: Spool) -> None:
        if self._slots.locked():
            self._emit(status("Waiting", self.id))
        async with self._slots:
            shown = Throttle(self._emit, "Downloading", self.id, self.blob.size)
            half = self.blob.size // 2

            def progress(n: int) -> None:
                shown(n)
                if n > half:
                    reach("pull.blob_midstream")

            def retrying(seconds: int) -> None:
                self._emit(status(f"Retrying in {seconds} second{'s' * (seconds != 1)}", self.id))

            try:
                await fetch(self.repo, self.blob, spool, progress, retrying, self._retry)
            except asyncio.CancelledError:
                spool.fail(Cancelled("the pull was cancelled"))
                raise
            except Exception as exc:
                spool.fail(exc)
                return
        self._emit(status("Verifying Checksum", self.id))
        self._emit(status("Download complete", self.id))

    async def apply(self, layers: LayerStore, parent: str) -> Layer:
        """Apply the layer on *parent* as it downloads; return it once it is ready."""
        for attempt in (1, 2):
            spool = self._spool
            assert spool is not None
            try:
                layer = await in_thread(functools.partial(self._register, spool, layers, parent))
            except DigestMismatch as exc:
                if not exc.resumed or attempt == 2:
                    raise
                await self.stop()
                self.path = self.path.with_name(self.path.name + "-again")
                self.start()
                continue
            except DiffIdMismatch as exc:
                raise InvalidArgument(
                    f"{self.repo.endpoint.registry}: layers from manifest don't match image "
                    f"configuration: blob {self.blob.digest} is not layer {self.diff_id} ({exc})"
                ) from None
            except InvalidArgument as exc:
                if str(exc).startswith(self.repo.endpoint.registry):
                    raise
                raise InvalidArgument(
                    f"{self.repo.endpoint.registry}: {self.repo.path}: blob {self.blob.digest}: "
                    f"{exc}"
                ) from None
            self._emit(status("Pull complete", self.id))
            await self.stop()
            return layer
        raise AssertionError("unreachable")

    def _register(
        self, spool: Spool, layers: LayerStore, parent: str, stop: threading.Event
    ) -> Layer:
        def emit(message: dict[str, object]) -> None:  # from the worker thread
            self._loop.call_soon_threadsafe(self._emit, message)

        shown = Throttle(emit, "Extracting", self.id, self.blob.size)
        with spool.reader(stop) as stream:
            watched = _Watched(stream, self.blob.size, spool, shown)
            return layers.register(cast(BinaryIO, watched), parent, self.diff_id)

    async def stop(self) -> None:
        """Stop the download if it still runs, and remove its spool."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await asyncio.to_thread(remove, self.path)


class _Watched(io.RawIOBase):
    """A reader of a spool that reports extraction progress once the download is complete."""

    def __init__(
        self, source: Any, total: int, spool: Spool, report: Callable[[int], None]
    ) -> None:
        super().__init__()
        self._source, self._total, self._spool, self._report = source, total, spool, report
        self._count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = self._source.read(size)
        self._count += len(data)
        if self._count > self._total // 2:
            reach("pull.mid_extract")
        if self._spool.done:  # before that, the download's own progress is shown
            self._report(self._count)
        return data

    def readinto(self, buffer: Any, /) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
