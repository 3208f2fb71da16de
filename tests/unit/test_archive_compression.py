"""Compression detection, diff_id over the uncompressed bytes, streaming without buffering."""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from engine.errors import InvalidArgument
from graph.archive import apply_layer, diff_id_of
from tests.unit.test_archive_kit import build, reg

Compress = Callable[[bytes], bytes]
FORMATS: dict[str, Compress] = {
    "plain": lambda data: data,
    "gzip": lambda data: gzip.compress(data),
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    "xz": lambda data: lzma.compress(data),
}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_is_detected_and_diff_id_is_of_the_tar(tmp_path: Path, fmt: str) -> None:
    tar = build(reg("etc/hostname", b"box\n"))
    blob = FORMATS[fmt](tar)
    applied = apply_layer(tmp_path, io.BytesIO(blob))
    assert (tmp_path / "etc/hostname").read_bytes() == b"box\n"
    assert applied.diff_id == sha(tar)
    assert diff_id_of(io.BytesIO(blob)) == sha(tar)


def test_diff_id_covers_trailing_bytes(tmp_path: Path) -> None:
    tar = build(reg("f", b"x")) + b"\0" * 4096 + b"trailing junk"
    assert apply_layer(tmp_path, io.BytesIO(gzip.compress(tar))).diff_id == sha(tar)


def test_multi_member_gzip_and_multi_frame_zstd(tmp_path: Path) -> None:
    tar = build(reg("a", b"1" * 3000), reg("b", b"2"))
    half = len(tar) // 2
    gz = gzip.compress(tar[:half]) + gzip.compress(tar[half:])
    zc = zstandard.ZstdCompressor()
    zs = zc.compress(tar[:half]) + zc.compress(tar[half:])
    assert diff_id_of(io.BytesIO(gz)) == sha(tar)
    assert diff_id_of(io.BytesIO(zs)) == sha(tar)
    apply_layer(tmp_path, io.BytesIO(zs))
    assert (tmp_path / "b").read_bytes() == b"2"


def test_empty_stream_is_an_empty_layer(tmp_path: Path) -> None:
    applied = apply_layer(tmp_path, io.BytesIO(b""))
    assert applied.diff_id == sha(b"")
    assert applied.size == 0


@pytest.mark.parametrize("fmt", ["gzip", "zstd", "xz"])
def test_corrupt_compressed_stream_is_invalid(tmp_path: Path, fmt: str) -> None:
    blob = bytearray(FORMATS[fmt](build(reg("f", bytes(range(256)) * 64))))
    blob[len(blob) // 2 :] = b"\xff" * (len(blob) - len(blob) // 2)
    with pytest.raises(InvalidArgument):
        apply_layer(tmp_path, io.BytesIO(bytes(blob)))


class _Chunks(io.RawIOBase):
    """A one-way stream fed from a generator, like a socket: no seek, no length."""

    def __init__(self, chunks: Callable[[], bytes]) -> None:
        self._next = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview | bytearray) -> int:  # type: ignore[override]
        while not self._buf:
            self._buf = self._next()
            if self._buf == b"END":
                self._buf = b""
                return 0
        data, self._buf = self._buf[: len(buf)], self._buf[len(buf) :]
        buf[: len(data)] = data
        return len(data)


def test_large_gzip_layer_streams_in_bounded_memory(tmp_path: Path) -> None:
    size = 256 << 20
    info = reg("big", b"")[0]
    info.size = size
    zeros = bytes(1 << 20)
    comp = zlib.compressobj(wbits=31)
    parts = [comp.compress(info.tobuf())]
    parts += [comp.compress(zeros) for _ in range(size >> 20)]
    parts += [comp.compress(bytes(1024)), comp.flush()]
    pieces = iter(parts)
    total = sum(len(p) for p in parts)
    assert total < size // 100  # a small blob that expands 100-fold
    stream = _Chunks(lambda: next(pieces, b"END"))
    tracemalloc.start()
    try:
        applied = apply_layer(tmp_path, io.BufferedReader(stream))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    assert applied.size == size
    assert (tmp_path / "big").stat().st_size == size
