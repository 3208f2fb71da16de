"""The userland proxy: forwards a published host port to a container's port, inside the daemon.

Vocabulary: a *proxy* listens on one host address (``host_ip:host_port/proto``; "" host IP is
0.0.0.0) and forwards to ``container_ip:container_port``. For tcp each accepted *connection* is
paired with a connection to the container and bytes are copied both ways; for udp each client
address gets an *association*: a connected udp socket to the container whose replies go back to
that client, dropped after ``udp_timeout`` seconds without traffic either way (the udp side
lives in ``jobs.udpproxy``).

Lifecycle: ``PortProxy.open`` binds the host socket before anything else starts, so a port that
is taken fails at once (``AlreadyExists``, in Docker's words) and leaves nothing behind;
``close`` stops listening and drops every live connection and association. A container's
proxies live in one ``ProxySet``: ``add``/``publish`` all of them or none, ``close_all`` at stop.

Only public asyncio APIs that uvloop also implements are used (protocols and transports, their
flow control through ``pause_writing``/``resume_writing``): copying is O(bytes), and a reader is
paused while the other side's write buffer is above the high-water mark.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Sequence
from typing import Final, cast

from drivers.network.base import PortMap, Proto
from engine.errors import AlreadyExists, InvalidArgument, Unavailable
from jobs.portbindings import ANY_IPV4, Binding
from jobs.udpproxy import UDP_TIMEOUT, UdpListener

__all__ = ["CONNECT_TIMEOUT", "HIGH_WATER", "UDP_TIMEOUT", "PortProxy", "ProxySet"]

CONNECT_TIMEOUT: Final = 30.0  # seconds to reach the container before the client is closed
HIGH_WATER: Final = 512 * 1024  # bytes buffered towards one side before its peer stops reading


def _bind(proto: Proto, host_ip: str, low: int, high: int) -> socket.socket:
    """A socket bound to the first free port of low..high (listening, for tcp)."""
    ip = host_ip or ANY_IPV4
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    for port in range(low, max(low, high) + 1):
        sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, kind)
        try:
            if proto == "tcp":  # not for udp: there it would let two sockets share the port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((ip, port))
            if proto == "tcp":
                sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            where = f"{ip}:{low}" + (f"-{high}" if high > low else "")
            if exc.errno != errno.EADDRINUSE:
                kind_of = InvalidArgument if exc.errno == errno.EADDRNOTAVAIL else Unavailable
                raise kind_of(f"Bind for {where} failed: {exc.strerror}") from None
            if port >= high:
                raise AlreadyExists(
                    f"Bind for {where} failed: port is already allocated (address already in use)"
                ) from None
    raise AssertionError("unreachable")


class _Side(asyncio.Protocol):
    """One end of a forwarded tcp connection; ``peer`` is the other end once both exist."""

    def __init__(self, pair: _Pair, upstream: bool) -> None:
        self.pair, self.upstream = pair, upstream
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = pair.client if upstream else None
        self.pending: list[bytes] = []
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass
        self.transport.set_write_buffer_limits(high=HIGH_WATER)
        if self.upstream:
            self.pair.connected(self)
        else:
            self.pair.accepted()

    def data_received(self, data: bytes) -> None:
        if self.peer is None:  # kept until the container side is connected
            self.pending.append(data)
            self.pause()
            return
        out = self.peer.transport
        if out is not None and not out.is_closing():
            out.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.peer is None:  # forwarded once the container side is connected
            return True
        out = self.peer.transport
        if out is None or out.is_closing() or self.peer.eof:
            self.pair.close()
        else:
            out.write_eof()  # sent once the bytes buffered before it are written
        return True

    def pause(self, paused: bool = True) -> None:
        """Stop (or go on) reading from this end."""
        t = self.transport
        if t is None or t.is_closing() or (self.eof and not paused):  # nothing left to read
            return
        if t.is_reading() == paused:
            t.pause_reading() if paused else t.resume_reading()

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pair.lost(self, exc)


class _Pair:
    """A client connection and its connection to the container."""

    def __init__(self, proxy: PortProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self, upstream=False)
        self.done = asyncio.get_running_loop().create_future()
        self.connecting: asyncio.Task[None] | None = None

    def accepted(self) -> None:
        """The client is connected: connect to the container, reading little until then."""
        if self.proxy.closed:
            self.close(abort=True)
            return
        self.client.pause()  # uvloop starts reading after connection_made all the same
        self.connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        p = self.proxy
        try:
            connect = loop.create_connection(
                lambda: _Side(self, upstream=True), p.container_ip, p.container_port
            )
            await asyncio.wait_for(connect, CONNECT_TIMEOUT)
        except Exception:  # refused, unreachable, timed out: Docker's proxy closes the client
            self.close()

    def connected(self, upstream: _Side) -> None:
        """The container side is connected: start copying."""
        client, out = self.client.transport, upstream.transport
        assert client is not None and out is not None
        if client.is_closing():
            out.close()
            return
        self.client.peer = upstream
        self.client.pause(False)  # first: writing the pending bytes may pause it again
        for data in self.client.pending:
            out.write(data)
        self.client.pending.clear()
        if self.client.eof:
            out.write_eof()

    def close(self, abort: bool = False) -> None:
        """Close both ends (abort: drop buffered bytes and reset the connections)."""
        task = self.connecting
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        for side in (self.client, self.client.peer):
            if side is not None and side.transport is not None:
                side.transport.abort() if abort else side.transport.close()

    def lost(self, side: _Side, exc: Exception | None) -> None:
        """One end is gone: close the other; the pair is over once the client end is gone."""
        self.close(abort=exc is not None)
        if side is self.client:
            self.proxy.pairs.discard(self)
            if not self.done.done():
                self.done.set_result(None)


class PortProxy:
    """One published port, forwarding host_ip:host_port/proto to container_ip:container_port."""

    def __init__(
        self, proto: Proto, host_ip: str, host_port: int, container_ip: str, container_port: int
    ) -> None:
        self.proto, self.host_ip, self.host_port = proto, host_ip, host_port
        self.container_ip, self.container_port = container_ip, container_port
        self.udp_timeout = UDP_TIMEOUT
        self.closed = False
        self.pairs: set[_Pair] = set()
        self.server: asyncio.AbstractServer | None = None
        self.udp: UdpListener | None = None

    @classmethod
    async def open(
        cls,
        proto: Proto,
        host_ip: str,
        host_port: int,
        container_ip: str,
        container_port: int,
        host_port_end: int = 0,
        *,
        udp_timeout: float = UDP_TIMEOUT,
    ) -> PortProxy:
        """Bind the host port (the first free one of a range) and start forwarding."""
        sock = _bind(proto, host_ip, host_port, host_port_end)
        self = cls(proto, host_ip, sock.getsockname()[1], container_ip, container_port)
        self.udp_timeout = udp_timeout
        loop = asyncio.get_running_loop()
        try:
            if proto == "tcp":
                self.server = await loop.create_server(
                    self._accept, sock=sock, backlog=socket.SOMAXCONN
                )
            else:
                self.udp = UdpListener(sock, container_ip, container_port, udp_timeout)
        except BaseException:
            sock.close()
            raise
        return self

    def _accept(self) -> _Side:
        pair = _Pair(self)
        self.pairs.add(pair)
        return pair.client

    @property
    def port_map(self) -> PortMap:
        """What this proxy forwards, with the host port actually bound."""
        return PortMap(
            self.proto, self.host_ip, self.host_port, self.container_ip, self.container_port
        )

    @property
    def live(self) -> int:
        """How many connections (tcp) or associations (udp) are being forwarded."""
        return len(self.pairs) + (len(self.udp.associations) if self.udp is not None else 0)

    async def close(self) -> None:
        """Stop listening and drop every live connection and association."""
        self.closed = True
        if self.server is not None:
            self.server.close()
        if self.udp is not None:
            self.udp.close()
        pairs = list(self.pairs)
        for pair in pairs:
            pair.close(abort=True)
        if pairs:
            await asyncio.wait([p.done for p in pairs], timeout=5)
        if self.server is not None:
            await self.server.wait_closed()


class ProxySet:
    """The proxies of one container: all of them are published or none is."""

    def __init__(self, udp_timeout: float = UDP_TIMEOUT) -> None:
        self.udp_timeout = udp_timeout
        self.proxies: list[PortProxy] = []

    async def add(self, b: Binding, container_ip: str) -> PortProxy:
        """Open a proxy for one more binding; on failure close every proxy of the set, raise."""
        try:
            proxy = await PortProxy.open(
                b.proto, b.host_ip, b.host_port, container_ip, b.container_port, b.host_port_end,
                udp_timeout=self.udp_timeout,
            )  # fmt: skip
        except BaseException:
            await self.close_all()
            raise
        self.proxies.append(proxy)
        return proxy

    async def publish(self, bindings: Sequence[Binding], container_ip: str) -> list[PortMap]:
        """Open a proxy for each binding (all or none) and return what was bound."""
        for b in bindings:
            await self.add(b, container_ip)
        return self.port_maps()

    def port_maps(self) -> list[PortMap]:
        """The ports this set forwards, with the host ports actually bound."""
        return [proxy.port_map for proxy in self.proxies]

    async def close_all(self) -> None:
        """Close every proxy of the set."""
        proxies, self.proxies = self.proxies, []
        await asyncio.gather(*(proxy.close() for proxy in proxies))
