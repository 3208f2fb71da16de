"""Streaming decompression of layer blobs (plain, gzip, zstd, xz by magic) and their diff_id.

Nothing here holds a whole layer in memory: data flows in chunks from the blob through the
decompressor and a sha256 into the tar reader. No size cap is applied; callers that want one
(a pull with a known size) wrap the input stream.
"""

from __future__ import annotations

import gzip
import io
import lzma
import zlib
from typing import BinaryIO, Final, Protocol

import zstandard

from engine.errors import InvalidArgument

from .hashing import BackgroundSha256

GZIP_MAGIC: Final = b"\x1f\x8b"
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
XZ_MAGIC: Final = b"\xfd7zXZ\x00"
_CHUNK: Final = 1 << 16
_INPUT: Final = 1 << 20  # compressed bytes read at a time
# A tar ends with two zero blocks, padded to its record size (10 KiB by default); far more than
# that after the end is junk or a decompression bomb, refused rather than read and kept.
TRAILING_MAX: Final = 1 << 20

# What a broken compressed stream raises; a tar that lies is handled by the tar reader.
_CORRUPT: Final = (gzip.BadGzipFile, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError)


class Readable(Protocol):
    """Anything with ``read(n)`` returning at most n bytes, b"" at end of stream."""

    def read(self, size: int = -1, /) -> bytes: ...


class _Prefixed(io.RawIOBase):
    """Give back bytes already peeked from *stream*, then the rest of *stream*."""

    def __init__(self, head: bytes, stream: Readable) -> None:
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._head:
            data, self._head = self._head[: len(buf)], self._head[len(buf) :]
        else:
            data = self._stream.read(len(buf))
        buf[: len(data)] = data
        return len(data)


class HashingReader(io.RawIOBase):
    """Read-only view of the decompressed stream that hashes and counts every byte read."""

    def __init__(self, source: Readable) -> None:
        self._source = source
        self._sha = BackgroundSha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        try:
            data = self._source.read(len(buf))
        except _CORRUPT as exc:
            raise InvalidArgument(f"layer: corrupt compressed stream: {exc}") from exc
        self._sha.update(data)
        self.count += len(data)
        buf[: len(data)] = data
        return len(data)

    def drain(self, limit: int | None = None) -> None:
        """Read to the end of the stream so the digest covers trailing blocks and junk;
        InvalidArgument if more than *limit* bytes are left (a decompression bomb)."""
        buf = bytearray(_CHUNK)
        left = 0
        while n := self.readinto(buf):
            left += n
            if limit is not None and left > limit:
                raise InvalidArgument(f"layer: more than {limit} bytes after the tar archive's end")

    def digest(self) -> str:
        """Return ``sha256:<hex>`` of the bytes read so far."""
        return "sha256:" + self._sha.hexdigest()


def _peek(stream: Readable, size: int) -> bytes:
    head = b""
    while len(head) < size:
        data = stream.read(size - len(head))
        if not data:
            break
        head += data
    return head


class _Gunzip(io.RawIOBase):
    """gzip (one member or several) decompressed in large chunks, with zlib checking each
    member's CRC and length; much less per-call work than ``gzip.GzipFile``'s 8 KiB reads."""

    def __init__(self, raw: Readable) -> None:
        super().__init__()
        self._raw = raw
        self._z = zlib.decompressobj(31)
        self._input = b""  # compressed bytes not yet given to zlib

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        while True:
            if self._z.eof:
                rest = (self._z.unused_data or self._input).lstrip(b"\0")
                while not rest:  # zero padding after a member is allowed, as by gzip(1)
                    more = self._raw.read(_INPUT)
                    if not more:
                        return 0
                    rest = more.lstrip(b"\0")
                self._z, self._input = zlib.decompressobj(31), rest  # the next member
            if not self._input:
                self._input = self._raw.read(_INPUT)
                if not self._input:
                    raise EOFError("the gzip stream ended before its end-of-stream marker")
            data = self._z.decompress(self._input, len(buf))
            self._input = self._z.unconsumed_tail
            if data:
                buf[: len(data)] = data
                return len(data)


def _decompressor(head: bytes, raw: BinaryIO) -> Readable:
    if head.startswith(GZIP_MAGIC):
        return io.BufferedReader(_Gunzip(raw), _CHUNK)
    if head.startswith(ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    if head.startswith(XZ_MAGIC):
        return lzma.LZMAFile(raw, mode="rb")
    return raw


def decompressed(stream: Readable) -> Readable:
    """Return the uncompressed tar inside *stream* (compression by magic), without hashing it."""
    head = _peek(stream, len(XZ_MAGIC))
    return _decompressor(head, io.BufferedReader(_Prefixed(head, stream)))


def is_compressed(head: bytes) -> bool:
    """Whether *head* (the first bytes of a stream) starts a gzip, zstd or xz stream."""
    return head.startswith((GZIP_MAGIC, ZSTD_MAGIC, XZ_MAGIC))


def open_layer(stream: Readable) -> HashingReader:
    """Return a hashing reader of the uncompressed tar inside *stream* (compression by magic)."""
    head = _peek(stream, len(XZ_MAGIC))
    return HashingReader(_decompressor(head, io.BufferedReader(_Prefixed(head, stream))))


def diff_id_of(stream: BinaryIO) -> str:
    """Return ``sha256:<hex>`` of the decompressed *stream*, read to its end."""
    reader = open_layer(stream)
    reader.drain()
    return reader.digest()
