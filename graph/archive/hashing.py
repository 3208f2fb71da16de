"""A sha256 computed on a worker thread, so hashing overlaps the caller's own work.

hashlib releases the GIL while it hashes a large buffer, so on a machine with two cores a layer
is hashed while it is being written out, instead of before. Chunks are queued in order (a
bounded queue, so memory stays flat) and the digest is read once every chunk is hashed.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from typing import Final

_DEPTH: Final = 8  # chunks in flight at most (callers feed chunks of up to 1 MiB)


class BackgroundSha256:
    """``update`` queues a chunk; ``hexdigest`` waits for the worker and returns the digest."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(_DEPTH)
        self._thread: threading.Thread | None = None
        self._digest = ""

    def update(self, data: bytes) -> None:
        """Hash *data* after every chunk queued before it."""
        if self._digest:
            raise ValueError("update after hexdigest")
        if len(data) < 65536:  # not worth a hop to the worker
            self._drain()
            self._sha.update(data)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="sha256", daemon=True)
            self._thread.start()
        self._queue.put(bytes(data))

    def hexdigest(self) -> str:
        """Return the hex digest of everything given to ``update``."""
        if not self._digest:
            self._drain()
            self._digest = self._sha.hexdigest()
        return self._digest

    def _drain(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _work(self) -> None:
        while (data := self._queue.get()) is not None:
            self._sha.update(data)
