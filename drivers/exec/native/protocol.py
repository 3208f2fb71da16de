"""The wire between the daemon, the forking helper and the monitors: typed frames on unix sockets.

A frame is one byte of kind, four bytes of big-endian length, then the payload. ``CONTROL``
frames carry one JSON object; ``STDOUT``/``STDERR`` carry a container's output, ``STDIN`` input
for it and ``STDIN_EOF`` (empty) closes its stdin. File descriptors travel with the first frame of
a request as ``SCM_RIGHTS`` ancillary data.

Requests (first CONTROL frame a client sends):

- to the helper: ``{"op": "start", "spec": {...}, "attach": [{"stdin": b, ...}]}`` with one fd
  per attach entry; ``{"op": "exec", "spec": {...}}`` with the three stdio fds;
  ``{"op": "quit"}``.
- to a monitor (``<run_dir>/monitor.sock``): ``{"op": "watch"}``, ``{"op": "attach", "stdin":
  b, "stdout": b, "stderr": b, "stdin_once": b}``, ``{"op": "kill", "signal": n}``,
  ``{"op": "resize", "rows": r, "cols": c}``, ``{"op": "state"}``.

Replies are CONTROL frames: ``{"pid": n}`` (namespaces exist; with ``wait_for_network`` the
monitor then waits for ``{"go": true}``), ``{"started": {...}}``, ``{"exit": {...}}``,
``{"ok": true}`` or ``{"error": "message"}``.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any, Final

import orjson

CONTROL: Final = 0
STDOUT: Final = 1
STDERR: Final = 2
STDIN: Final = 3
STDIN_EOF: Final = 4

HEADER: Final = struct.Struct(">BI")
MAX_FRAME: Final = 16 << 20
MAX_FDS: Final = 16


@contextlib.contextmanager
def short_path(path: str) -> Iterator[str]:
    """A short name for the socket *path* (``/proc/self/fd/N/name``): unix socket paths are
    limited to 107 bytes, and a data root plus a container id can be longer."""
    if len(path) < 100:
        yield path
        return
    directory, name = os.path.split(path)
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


class ProcessFailed(Exception):
    """A container or exec process failed before its exec; ``code`` is the exit status it
    reports (127 command not found, 126 not executable, 128 anything else, as Docker)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def report_failure(fd: int, exc: BaseException) -> None:
    """Write why a process could not exec to its error pipe: the exit code, then the message."""
    code = getattr(exc, "exit_code", 128)
    message = str(exc) or type(exc).__name__
    with contextlib.suppress(OSError):
        os.write(fd, f"{code}\n{message}".encode(errors="replace")[:65536])


def read_failure(fd: int) -> ProcessFailed | None:
    """Read an error pipe to its end: None when it closed empty (the exec succeeded)."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    if not chunks:
        return None
    code, _, message = b"".join(chunks).decode(errors="replace").partition("\n")
    return ProcessFailed(int(code) if code.isdigit() else 128, message)


class ProtocolError(Exception):
    """The peer sent something that is not a frame, or hung up mid-frame."""


def frame(kind: int, payload: bytes = b"") -> bytes:
    """Encode one frame."""
    return HEADER.pack(kind, len(payload)) + payload


def control(message: dict[str, Any]) -> bytes:
    """Encode one CONTROL frame."""
    return frame(CONTROL, orjson.dumps(message))


# -- blocking side (helper, monitor, exec processes) -------------------------------------------


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    """Send one CONTROL frame, with *fds* attached."""
    data = control(message)
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(data)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly *n* bytes; ProtocolError at EOF."""
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ProtocolError("connection closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_request(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """Read the first CONTROL frame of a request and the fds that came with it."""
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(
        HEADER.size, socket.CMSG_SPACE(MAX_FDS * fds.itemsize)
    )
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        raise ProtocolError("connection closed")
    data += recv_exact(sock, HEADER.size - len(data)) if len(data) < HEADER.size else b""
    kind, length = HEADER.unpack(data)
    if kind != CONTROL or length > MAX_FRAME:
        raise ProtocolError(f"expected a control frame, got kind {kind}")
    return orjson.loads(recv_exact(sock, length)), list(fds)


def recv(sock: socket.socket) -> tuple[int, bytes]:
    """Read one frame."""
    kind, length = HEADER.unpack(recv_exact(sock, HEADER.size))
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes")
    return kind, recv_exact(sock, length) if length else b""


def recv_control(sock: socket.socket) -> dict[str, Any]:
    """Read one CONTROL frame."""
    kind, payload = recv(sock)
    if kind != CONTROL:
        raise ProtocolError(f"expected a control frame, got kind {kind}")
    message = orjson.loads(payload)
    assert isinstance(message, dict)
    return message


# -- asyncio side (daemon) ---------------------------------------------------------------------


class Connection:
    """An asyncio connection to the helper or a monitor."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: str) -> Connection:
        """Connect to the unix socket *path*."""
        with short_path(path) as short:
            reader, writer = await asyncio.open_unix_connection(short, limit=1 << 20)
        return cls(reader, writer)

    async def request(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        """Send the first frame of a request, with *fds* attached."""
        data = control(message)
        if fds:
            # Ancillary data needs sendmsg on the socket itself (asyncio's transport wraps it);
            # the stream is idle before a request, so a duplicate of the fd can send it.
            transport_sock = self.writer.get_extra_info("socket")
            raw = socket.socket(fileno=os.dup(transport_sock.fileno()))
            try:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                while True:
                    try:
                        sent = raw.sendmsg([data], anc)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(0.001)
            finally:
                raw.close()  # the duplicate only; the stream keeps its own fd
            if sent < len(data):
                self.writer.write(data[sent:])
        else:
            self.writer.write(data)
        await self.writer.drain()

    async def send(self, kind: int, payload: bytes = b"") -> None:
        """Send one frame."""
        self.writer.write(frame(kind, payload))
        await self.writer.drain()

    async def recv(self) -> tuple[int, bytes]:
        """Read one frame; ProtocolError at EOF."""
        try:
            header = await self.reader.readexactly(HEADER.size)
            kind, length = HEADER.unpack(header)
            if length > MAX_FRAME:
                raise ProtocolError(f"frame of {length} bytes")
            payload = await self.reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            raise ProtocolError("connection closed") from None
        return kind, payload

    async def recv_control(self) -> dict[str, Any]:
        """Read frames until a CONTROL one; return its message."""
        while True:
            kind, payload = await self.recv()
            if kind == CONTROL:
                message = orjson.loads(payload)
                assert isinstance(message, dict)
                return message

    def close(self) -> None:
        """Close the connection."""
        self.writer.close()
