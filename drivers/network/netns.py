"""Sockets bound inside another process's network namespace, served from the daemon's own loop.

A socket belongs to the network namespace it was created in, for its whole life, whichever
thread later reads it. So the daemon can listen *inside* a container (the embedded DNS server
at 127.0.0.11:53) without NAT rules: a short-lived thread joins the container's namespace
(``setns``), creates and binds the sockets, and ends; the namespace switch ends with the thread
and the rest of the daemon never leaves the host namespace. The sockets come back non-blocking
and close-on-exec, ready for ``loop.create_datagram_endpoint(sock=…)`` or
``asyncio.start_server(sock=…)``.

Vocabulary: a *spec* is ``(family, type, address)`` as for ``socket.socket`` and ``bind``,
e.g. ``(AF_INET, SOCK_DGRAM, ("127.0.0.11", 53))``. Stream sockets are also put listening.

Nothing here configures the namespace: ``lo`` is brought up by the exec driver. All of
127.0.0.0/8 is local on ``lo``, so 127.0.0.11 needs no address of its own; but while ``lo`` is
down nothing reaches it, so a loopback spec in a namespace whose ``lo`` is down is an error.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Sequence
from typing import Final

from drivers.exec.native.linux import CLONE_NEWNET, setns
from engine.errors import NotFound, Unavailable

Address = tuple[str, int]
Spec = tuple[int, int, Address]

BACKLOG: Final = 128
_SIOCGIFFLAGS: Final = 0x8913
_IFF_UP: Final = 0x1


def sockets_in(pid: int, specs: Sequence[Spec]) -> list[socket.socket]:
    """Create and bind *specs* in the network namespace of *pid*; NotFound/Unavailable on error."""
    path = f"/proc/{pid}/ns/net"
    try:
        ns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise NotFound(f"process {pid}: no network namespace to open ({path}): gone?") from exc
    except OSError as exc:
        raise Unavailable(f"cannot open {path}: {exc.strerror}") from exc
    made: list[socket.socket] = []
    failure: list[Exception] = []

    def run() -> None:
        try:
            _make(pid, ns_fd, specs, made)
        except Exception as exc:  # handed to the calling thread, raised there
            failure.append(exc)

    try:
        worker = threading.Thread(target=run, name=f"netns-{pid}")
        worker.start()
        worker.join()
    finally:
        os.close(ns_fd)
    if failure:
        for sock in made:
            sock.close()
        raise failure[0]
    return made


def _make(pid: int, ns_fd: int, specs: Sequence[Spec], made: list[socket.socket]) -> None:
    """Thread body: join the namespace, then create and bind each spec, appending to *made*."""
    try:
        setns(ns_fd, CLONE_NEWNET)
    except OSError as exc:
        raise Unavailable(f"cannot join the network namespace of {pid}: {exc.strerror}") from exc
    if any(_loopback(address[0]) for _, _, address in specs) and not _lo_up():
        # binding would work, but nothing could reach the sockets
        raise Unavailable(f"the loopback interface lo is down in the network namespace of {pid}")
    for family, type_, address in specs:
        kind = "tcp" if type_ == socket.SOCK_STREAM else "udp"
        where = f"{address[0]}:{address[1]}/{kind} in the network namespace of {pid}"
        try:
            sock = socket.socket(family, type_)  # close-on-exec by default (PEP 446)
        except OSError as exc:
            raise Unavailable(f"cannot create a socket for {where}: {exc.strerror}") from exc
        made.append(sock)
        try:
            sock.setblocking(False)
            if type_ == socket.SOCK_STREAM:
                # a restarted daemon rebinds while old connections linger in TIME_WAIT
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            if type_ == socket.SOCK_STREAM:
                sock.listen(BACKLOG)
        except OSError as exc:
            raise Unavailable(f"cannot bind {where}: {exc.strerror}") from exc


def _loopback(host: str) -> bool:
    """Whether *host* is a loopback address (127.0.0.0/8, ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _lo_up() -> bool:
    """Whether ``lo`` is up in this thread's network namespace."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            request = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(probe, _SIOCGIFFLAGS, request))[1]
    except OSError:
        return False
    return bool(flags & _IFF_UP)
