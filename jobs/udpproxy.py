"""The udp side of the userland proxy: a host socket whose clients each get an association.

Vocabulary: the *listener* is the host socket a udp port is published on (bound by
``jobs.portproxy``, which owns the ``PortProxy`` around it). Each client address that sends to it
gets an *association*: a connected udp socket to ``container_ip:container_port``, whose replies
go back to that client through the listener. An association is dropped after ``udp_timeout``
seconds without traffic either way (Docker's conntrack timeout), or when the listener closes.

Lifecycle: ``UdpListener(sock, container_ip, container_port, udp_timeout)`` starts reading the
bound socket at once → associations come and go with their clients → ``close`` stops reading,
closes the socket and drops every association. Sockets are read through the loop's
``add_reader`` (which uvloop implements too), at most BATCH datagrams per turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, Final

UDP_TIMEOUT: Final = 90.0  # seconds an idle udp association lives (Docker's conntrack timeout)
DATAGRAM: Final = 65535  # the largest udp payload read
BATCH: Final = 64  # datagrams read from one socket before other callbacks get a turn


class Association:
    """One udp client's connected socket to the container, read through the loop's reader."""

    def __init__(self, listener: UdpListener, client: Any) -> None:
        self.listener, self.client = listener, client
        ip = listener.container_ip
        self.sock = socket.socket(
            socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM
        )
        try:
            self.sock.setblocking(False)
            self.sock.connect((ip, listener.container_port))
        except OSError:
            self.sock.close()
            raise
        loop = asyncio.get_running_loop()
        loop.add_reader(self.sock.fileno(), self._readable)
        self.last = loop.time()
        self.timer = loop.call_later(listener.udp_timeout, self._expire)

    def send(self, data: bytes) -> None:
        """Forward a datagram from the client to the container."""
        self.last = asyncio.get_running_loop().time()
        with contextlib.suppress(OSError):  # a full buffer or an ICMP error: udp may drop it
            self.sock.send(data)

    def _readable(self) -> None:
        for _ in range(BATCH):
            try:
                data = self.sock.recv(DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # port unreachable, reported for an earlier send
                continue
            self.last = asyncio.get_running_loop().time()
            self.listener.reply(data, self.client)

    def _expire(self) -> None:
        idle = asyncio.get_running_loop().time() - self.last
        if idle >= self.listener.udp_timeout:
            self.close()
        else:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.listener.udp_timeout - idle, self._expire)

    def close(self) -> None:
        """Drop the association and its socket."""
        if self.listener.associations.get(self.client) is self:
            del self.listener.associations[self.client]
        self.timer.cancel()
        if self.sock.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()


class UdpListener:
    """A bound udp host socket (owned from now on) forwarding to container_ip:container_port."""

    def __init__(
        self, sock: socket.socket, container_ip: str, container_port: int, udp_timeout: float
    ) -> None:
        self.sock, self.udp_timeout = sock, udp_timeout
        self.container_ip, self.container_port = container_ip, container_port
        self.associations: dict[Any, Association] = {}
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(BATCH):
            try:
                data, client = self.sock.recvfrom(DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error for an earlier reply
                continue
            assoc = self.associations.get(client)
            if assoc is None:
                try:
                    assoc = self.associations[client] = Association(self, client)
                except OSError:  # no route to the container: the datagram is lost
                    continue
            assoc.send(data)

    def reply(self, data: bytes, client: Any) -> None:
        """Send a datagram from the container back to *client*."""
        if self.sock.fileno() >= 0:
            with contextlib.suppress(OSError):  # udp may drop it
                self.sock.sendto(data, client)

    def close(self) -> None:
        """Stop listening, close the host socket and drop every association."""
        if self.sock.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
        for assoc in list(self.associations.values()):
            assoc.close()
