"""The client side of a hijacked connection: send stdin, show output, honour a terminal.

``open_hijack`` sends the request with ``Connection: Upgrade`` / ``Upgrade: tcp`` and returns the
socket once ``101 UPGRADED`` arrived (any bytes that came with the headers are kept). ``pump``
copies the local stdin to the socket (raw, or nothing) and the socket's output to stdout and
stderr (demultiplexing Docker's frames unless there is a TTY) until the daemon closes it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import struct
import sys
import termios
import tty as ttymod
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from cli.client import Client, _error
from engine.errors import EngineError


def open_hijack(client: Client, path: str, body: object = None) -> tuple[socket.socket, bytes]:
    """POST *path* asking for an upgrade; return the raw socket and bytes already read."""
    conn = client._connection(None)
    payload = orjson.dumps(body) if body is not None else b""
    headers = {"Host": "localhost", "Connection": "Upgrade", "Upgrade": "tcp",
               "Content-Type": "application/json", "Content-Length": str(len(payload))}  # fmt: skip
    try:
        conn.request("POST", path, body=payload, headers=headers)
        response = conn.getresponse()
    except OSError as exc:
        conn.close()
        raise EngineError(f"cannot attach: {exc}") from None
    if response.status >= 400:
        raise _error(response)
    if response.status not in (101, 200):
        raise EngineError(f"unable to upgrade to tcp, received {response.status}")
    sock = conn.sock
    assert sock is not None
    # Output may have arrived with the headers and sit in http.client's buffer: take it without
    # waiting for more (the container may not even be started yet).
    sock.setblocking(False)
    try:
        early = response.fp.read1(65536) or b""
    except (BlockingIOError, OSError, ValueError):
        early = b""
    finally:
        sock.setblocking(True)
    return sock, early


def demux(buffer: bytearray) -> Iterator[tuple[int, bytes]]:
    """Take whole Docker frames off the front of *buffer*."""
    while len(buffer) >= 8:
        stream, size = struct.unpack(">BxxxL", buffer[:8])
        if len(buffer) < 8 + size:
            return
        data = bytes(buffer[8 : 8 + size])
        del buffer[: 8 + size]
        yield stream, data


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    """Put the local terminal in raw mode while attached with a TTY."""
    if not enabled or not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    ttymod.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def terminal_size() -> tuple[int, int]:
    """Rows and columns of the local terminal (0, 0 if none)."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return 0, 0
    return size.lines, size.columns


def pump(
    sock: socket.socket,
    early: bytes,
    *,
    tty: bool,
    send_stdin: bool,
    on_resize: Callable[[], Any] | None = None,
) -> None:
    """Copy stdin → socket and socket → stdout/stderr until the socket closes."""
    out, err = sys.stdout.buffer, sys.stderr.buffer
    buffer = bytearray(early)
    stdin_fd = sys.stdin.fileno() if send_stdin else -1
    if not send_stdin:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
    if on_resize is not None and tty:
        signal.signal(signal.SIGWINCH, lambda *_: on_resize())

    def flush() -> None:
        if tty:
            out.write(bytes(buffer))
            buffer.clear()
            out.flush()
            return
        for stream, data in demux(buffer):
            target = err if stream == 2 else out
            target.write(data)
            target.flush()

    flush()
    watching = [sock] + ([stdin_fd] if stdin_fd >= 0 else [])
    while True:
        try:
            ready, _, _ = select.select(watching, [], [])
        except InterruptedError:
            continue
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                break
            buffer += data
            flush()
        if stdin_fd in ready:
            chunk = os.read(stdin_fd, 65536)
            if not chunk:
                watching.remove(stdin_fd)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
            else:
                with contextlib.suppress(OSError):
                    sock.sendall(chunk)
    sock.close()
