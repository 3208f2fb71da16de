"""A file written on a worker thread, so the caller's own work overlaps the kernel's.

Writing a layer's tar beside its extracted files costs as much kernel time as the files
themselves; on a machine with two cores the copy is written by a second thread instead of
between two reads of the stream. Chunks are queued in order (a bounded queue, so memory stays
flat); an error of the worker (a full disk) is raised by the next ``write`` or by ``close``.
"""

from __future__ import annotations

import queue
import threading
from typing import BinaryIO, Final

_DEPTH: Final = 16  # chunks in flight at most (callers write chunks of up to 1 MiB)


class BackgroundWriter:
    """``write`` queues a chunk for *file*; ``close`` waits until all are written."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._queue: queue.Queue[bytes | None] = queue.Queue(_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="tar-copy", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        """Write *data* after every chunk queued before it."""
        if self._error is not None:
            raise self._error
        if data:
            self._queue.put(bytes(data))

    def close(self) -> None:
        """Wait for the queued chunks to be written; raise the worker's error, if any."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._file.write(data)
                except BaseException as exc:
                    self._error = exc
