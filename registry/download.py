"""Downloading blobs: verified, resumable, and readable while they arrive.

A layer blob is written into a *spool* file (in the daemon's ``tmp/``) by the event loop, and a
worker thread reads the same file while it grows, to decompress and apply the layer at once. The
reader only sees the end of the blob once the whole blob has been hashed and found to be the
digest it was asked for, so a layer made from other bytes fails before it is ever marked ready.

Faults, as Docker handles them: a connection dropped mid-blob resumes with ``Range: bytes=N-``;
a registry that ignores ``Range`` (200 with the whole blob) or answers 416 has its first N bytes
skipped again; each failed attempt waits ``delay x attempt`` seconds, up to ``attempts`` tries.
More bytes than the descriptor's size abort at once. The spool is never truncated while a reader
may have used it: a digest mismatch after a resumed download is reported as such
(``Resumed``), so the caller can start the layer again from nothing, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import aiohttp

from engine.errors import (
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
)
from registry.body import read_capped
from registry.client import RegistryError, Repository, brief
from registry.manifest import Descriptor

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_CHUNK: Final = 1 << 18
_POLL: Final = 0.25


class DigestMismatch(InvalidArgument):
    """A blob's bytes do not hash to its digest."""

    def __init__(self, message: str, resumed: bool) -> None:
        super().__init__(message)
        self.resumed = resumed


class _Short(Exception):
    """The body ended before the descriptor's size."""


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how patiently a blob is tried."""

    attempts: int = 5
    delay: float = 5.0  # seconds x attempt number
    read_timeout: float = 60.0


class Spool:
    """A file being downloaded into, that one thread reads while it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by finish/fail
        self._cond = threading.Condition()
        self.written = 0
        self.consumed = 0
        self.done = False
        self._error: BaseException | None = None

    def write(self, data: bytes) -> None:
        """Append *data* (from the event loop) and wake the reader."""
        view = memoryview(data)
        while view:
            n = self._file.write(view)
            view = view[n or 0 :]
        with self._cond:
            self.written += len(data)
            self._cond.notify_all()

    def finish(self) -> None:
        """The blob is complete and verified: let the reader reach its end."""
        self._file.close()
        with self._cond:
            self.done = True
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        """The download failed: the reader raises *exc*."""
        if not self._file.closed:
            self._file.close()
        with self._cond:
            self._error = exc
            self._cond.notify_all()

    def reader(self, stop: threading.Event) -> io.BufferedReader:
        """A reader of the blob for a worker thread; it waits for bytes that are yet to come."""
        return io.BufferedReader(_SpoolReader(self, stop), _CHUNK)

    def _wait(self, position: int, stop: threading.Event) -> int:
        """Wait until there is something past *position*; return how much (0 = the end)."""
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                if self.written > position:
                    return self.written - position
                if self.done:
                    return 0
                if stop.is_set():
                    raise Cancelled("the job was cancelled")
                self._cond.wait(_POLL)


class _SpoolReader(io.RawIOBase):
    def __init__(self, spool: Spool, stop: threading.Event) -> None:
        super().__init__()
        self._spool, self._stop = spool, stop
        self._file = open(spool.path, "rb", buffering=0)  # noqa: SIM115 - closed with the reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        available = self._spool._wait(self._spool.consumed, self._stop)
        if not available:
            return 0
        n = self._file.readinto(view[: min(len(view), available)]) or 0
        self._spool.consumed += n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


async def fetch(
    repo: Repository,
    blob: Descriptor,
    spool: Spool,
    progress: Callable[[int], None],
    retrying: Callable[[int], None],
    retry: Retry = Retry(),
    what: str = "filesystem layer",
) -> None:
    """Download *blob* into *spool*, resuming and retrying; verify it, then ``spool.finish()``."""
    sha = hashlib.sha256()
    resumed = use_range = False
    where = f"{repo.endpoint.registry}: {repo.path}: blob {blob.digest}"
    for attempt in range(1, retry.attempts + 1):
        try:
            await _attempt(repo, blob, spool, sha, progress, use_range, retry.read_timeout)
            break
        except FailedPrecondition:  # 416: the registry will not give a range; start over
            use_range = False
            error: BaseException = Unavailable(f"{where}: the registry refused the range")
        except (Unavailable, RegistryError, _Short, aiohttp.ClientError, TimeoutError) as exc:
            error = exc
            use_range = True
        if spool.written:
            resumed = True
        if attempt == retry.attempts:
            raise Unavailable(
                f"{where}: download failed after {retry.attempts} attempts: {_text(error)}"
            ) from None
        seconds = retry.delay * attempt
        retrying(round(seconds))
        await asyncio.sleep(seconds)
    got = "sha256:" + sha.hexdigest()
    if got != blob.digest:
        raise DigestMismatch(
            f"{repo.endpoint.registry}: {what} verification failed for digest {blob.digest} "
            f"(the bytes served hash to {got})",
            resumed,
        )
    spool.finish()


async def _attempt(
    repo: Repository,
    blob: Descriptor,
    spool: Spool,
    sha: hashlib._Hash,
    progress: Callable[[int], None],
    use_range: bool,
    read_timeout: float,
) -> None:
    start = spool.written
    headers = {"Range": f"bytes={start}-"} if start and use_range else {}
    timeout = aiohttp.ClientTimeout(sock_connect=30, sock_read=read_timeout)
    url = repo.url(f"blobs/{blob.digest}")
    async with repo.request("GET", url, headers, ok=(200, 206), timeout=timeout) as response:
        skip = start
        if response.status == 206:
            first = _range_start(response.headers.get("Content-Range", ""))
            if first != start:
                raise Unavailable(f"asked for bytes from {start}, got a range from {first}")
            skip = 0
        length = response.content_length
        if length is not None and length + (start - skip) > blob.size:
            raise InvalidArgument(
                f"{repo.endpoint.registry}: blob {blob.digest}: unexpected size: the registry "
                f"sends {length + start - skip} bytes, the manifest says {blob.size}"
            )
        async for chunk in response.content.iter_chunked(_CHUNK):
            if skip:
                dropped = min(skip, len(chunk))
                chunk, skip = chunk[dropped:], skip - dropped
                if not chunk:
                    continue
            if spool.written + len(chunk) > blob.size:
                raise InvalidArgument(
                    f"{repo.endpoint.registry}: blob {blob.digest}: unexpected size: more than "
                    f"the {blob.size} bytes the manifest says"
                )
            sha.update(chunk)
            spool.write(chunk)
            progress(spool.written)
    if spool.written < blob.size:
        raise _Short(f"the connection ended after {spool.written} of {blob.size} bytes")


def _range_start(header: str) -> int:
    # "bytes 100-199/200"
    try:
        return int(header.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


def _text(exc: BaseException) -> str:
    return brief(exc)


async def fetch_small(repo: Repository, blob: Descriptor, limit: int, what: str) -> bytes:
    """Download a small blob (a config) whole, check its size and digest; return its bytes."""
    if blob.size > limit:
        raise InvalidArgument(f"{repo.endpoint.registry}: {what} {blob.digest} is too large")
    async with repo.request("GET", repo.url(f"blobs/{blob.digest}")) as response:
        data = await read_capped(response, blob.size)
    if len(data) != blob.size:
        raise InvalidArgument(
            f"{repo.endpoint.registry}: {what} {blob.digest}: unexpected size {len(data)}, "
            f"expected {blob.size}"
        )
    if "sha256:" + hashlib.sha256(data).hexdigest() != blob.digest:
        raise InvalidArgument(
            f"{repo.endpoint.registry}: {what} verification failed for digest {blob.digest}"
        )
    return data


def remove(path: Path) -> None:
    """Remove a spool file if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
