"""The embedded DNS server of user-defined networks: ``nameserver 127.0.0.11`` in each container.

Vocabulary:

- *owned name*: a name the daemon answers itself, because ``lookup(container_id, name)`` gives
  it IPv4 addresses (the names and aliases of containers on that container's networks; *name*
  is lower-case, without the trailing dot). ``A`` gets those addresses (TTL 600, as Docker),
  ``AAAA`` gets NOERROR with no answer (NODATA, so clients fall back to ``A``), and ``PTR`` of
  an owned address gets its names when a *reverse* lookup is given.
- *upstream*: the host's nameservers (``upstream_servers`` of its /etc/resolv.conf). Every
  other query is forwarded to them as it came, from the daemon's own namespace (UDP for a UDP
  query, TCP for a TCP one), and their reply is relayed as it came, client's id included. A
  server that does not answer within *timeout* is skipped; when none answers: SERVFAIL. At
  most MAX_PENDING queries of one container wait for upstream at a time; more are dropped.

Lifecycle: one ``Resolver`` per daemon → ``serve(container_id, udp, tcp)`` when a container on
a user-defined network starts, with sockets made in its namespace by ``netns.sockets_in`` (the
resolver owns them from then on) → ``stop(container_id)`` when it stops → ``close()`` at exit.

Messages are read and written by ``dnswire`` (its names are re-exported here): a packet it
cannot read completely is ``Malformed``; the server drops such packets and never raises.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

from drivers.network.dnswire import (
    CLASS_IN,
    FLAG_OPCODE,
    FLAG_QR,
    FLAG_TC,
    HEADER,
    NOERROR,
    NOTIMP,
    SERVFAIL,
    TTL,
    TYPE_A,
    TYPE_AAAA,
    TYPE_PTR,
    Malformed,
    Message,
    Question,
    Record,
    address_of,
    decode,
    encode_name,
    encode_query,
    encode_response,
    reverse_name,
)
from engine.errors import AlreadyExists

__all__ = [
    "ADDRESS", "CLASS_IN", "MAX_PENDING", "NOERROR", "NOTIMP", "SERVFAIL", "TCP_IDLE", "TTL",
    "TYPE_A", "TYPE_AAAA", "TYPE_PTR", "UDP_LIMIT", "Lookup", "Malformed", "Message", "Question",
    "Record", "Resolver", "decode", "encode_name", "encode_query", "encode_response",
    "reverse_name", "upstream_servers",
]  # fmt: skip

log = logging.getLogger(__name__)

ADDRESS: Final = ("127.0.0.11", 53)
UDP_LIMIT: Final = 512  # bytes of an owned answer over UDP; past it: TC, the client retries on TCP
TCP_IDLE: Final = 10.0  # seconds a TCP client may stay silent before it is hung up on
MAX_PENDING: Final = 256  # queries of one container waiting for upstream; more are dropped

Lookup = Callable[[str, str], list[str]]


def upstream_servers(resolv_text: str) -> list[tuple[str, int]]:
    """The ``nameserver`` addresses of a resolv.conf text, port 53; loopback ones kept."""
    servers = []
    for line in resolv_text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                ipaddress.ip_address(fields[1])
            except ValueError:
                continue
            servers.append((fields[1], 53))
    return servers


@dataclass(slots=True)
class _Served:
    """One container's server: its transports and the tasks answering for it."""

    udp: asyncio.DatagramTransport | None = None
    tcp: asyncio.Server | None = None
    clients: set[asyncio.Transport] = field(default_factory=set)
    tasks: set[asyncio.Future[None]] = field(default_factory=set)

    def spawn(self, job: Coroutine[Any, Any, None]) -> None:
        """Run *job* as a task that ``Resolver.stop`` cancels; drop it past MAX_PENDING."""
        if len(self.tasks) >= MAX_PENDING:
            job.close()  # a flood from one container must not eat the daemon's descriptors
            return
        task = asyncio.ensure_future(job)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class _UdpServer(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver, container_id: str, served: _Served) -> None:
        self.resolver, self.container_id, self.served = resolver, container_id, served

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        here = self.resolver._here(self.container_id, data, tcp=False)
        if isinstance(here, bytes) and self.served.udp:
            self.served.udp.sendto(here, addr)
        elif isinstance(here, Message):
            self.served.spawn(self.relay(data, here, addr))

    async def relay(self, data: bytes, query: Message, addr: tuple[str, int]) -> None:
        reply = await self.resolver._forward(data, query, tcp=False)
        if self.served.udp:
            self.served.udp.sendto(reply, addr)


class _TcpServer(asyncio.Protocol):
    """DNS over TCP: 2-byte length, message; replies may come out of order (RFC 7766)."""

    def __init__(self, resolver: Resolver, container_id: str, served: _Served) -> None:
        self.resolver, self.container_id, self.served = resolver, container_id, served
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.served.clients.add(self.transport)
        self.idle = asyncio.get_running_loop().call_later(TCP_IDLE, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.served.clients.discard(self.transport)
        self.idle.cancel()

    def data_received(self, data: bytes) -> None:
        self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(TCP_IDLE, self.transport.close)
        self.buffer += data
        while len(self.buffer) >= 2 and len(self.buffer) >= 2 + (
            size := int.from_bytes(self.buffer[:2], "big")
        ):
            message = bytes(self.buffer[2 : 2 + size])
            del self.buffer[: 2 + size]
            self.served.spawn(self.reply(message))

    async def reply(self, data: bytes) -> None:
        here = self.resolver._here(self.container_id, data, tcp=True)
        if isinstance(here, Message):
            here = await self.resolver._forward(data, here, tcp=True)
        if self.transport.is_closing():
            return
        if here is None:
            self.transport.close()  # malformed: hang up, as the stream can no longer be trusted
        else:
            self.transport.write(len(here).to_bytes(2, "big") + here)


class Resolver:
    """Answers DNS for containers on user-defined networks; see the module doc for the rules."""

    def __init__(
        self,
        lookup: Lookup,
        upstream: Sequence[tuple[str, int]],
        timeout: float = 2.0,
        *,
        reverse: Lookup | None = None,
    ) -> None:
        self._lookup, self._reverse = lookup, reverse
        self._upstream, self._timeout = list(upstream), timeout
        self._served: dict[str, _Served] = {}

    async def serve(self, container_id: str, udp: socket.socket, tcp: socket.socket) -> None:
        """Answer on these sockets for *container_id* (owns them now); AlreadyExists if served."""
        if container_id in self._served:
            udp.close()
            tcp.close()
            raise AlreadyExists(f"DNS for container {container_id} is served already")
        served = self._served[container_id] = _Served()
        loop = asyncio.get_running_loop()
        try:
            served.udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpServer(self, container_id, served), sock=udp
            )
            served.tcp = await loop.create_server(
                lambda: _TcpServer(self, container_id, served), sock=tcp
            )
        except BaseException:
            self.stop(container_id)
            udp.close()
            tcp.close()
            raise

    def stop(self, container_id: str) -> None:
        """Stop answering for *container_id* and close its sockets; no-op if not served."""
        served = self._served.pop(container_id, None)
        if served is None:
            return
        if served.udp:
            served.udp.close()
        if served.tcp:
            served.tcp.close()
        for client in list(served.clients):
            client.close()
        for task in list(served.tasks):
            task.cancel()

    async def close(self) -> None:
        """Stop answering for every container and wait until nothing is left running."""
        tasks = [task for served in self._served.values() for task in served.tasks]
        for container_id in list(self._served):
            self.stop(container_id)
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # closed transports let go of their sockets on the next iteration

    def _here(self, container_id: str, data: bytes, *, tcp: bool) -> bytes | Message | None:
        """The reply when it is made here, the query when it goes upstream, None to drop."""
        try:
            query = decode(data)
        except Malformed:
            return None
        if query.flags & FLAG_QR or query.question is None:
            return None
        if query.flags & FLAG_OPCODE:
            return encode_response(query, NOTIMP)
        try:
            answers = self._owned(container_id, query.question)
        except Exception:
            log.exception("DNS lookup of %r for %s failed", query.question.name, container_id)
            return encode_response(query, SERVFAIL)
        if answers is None:
            return query
        reply = encode_response(query, NOERROR, answers)
        if not tcp and len(reply) > UDP_LIMIT:
            reply = encode_response(query, NOERROR)  # no answer, TC: the client asks over TCP
            reply = reply[:2] + bytes([reply[2] | FLAG_TC >> 8]) + reply[3:]
        return reply

    def _owned(self, container_id: str, q: Question) -> list[Record] | None:
        """The answers to *q* when its name is owned here, None when it goes upstream."""
        name = q.name
        if q.qclass != CLASS_IN or not name:
            return None
        if q.qtype in (TYPE_A, TYPE_AAAA):
            addresses = self._lookup(container_id, name)
            if not addresses:
                return None
            if q.qtype == TYPE_AAAA:
                return []
            return [Record(name, TYPE_A, ipaddress.IPv4Address(a).packed) for a in addresses]
        if q.qtype != TYPE_PTR or self._reverse is None or not (address := address_of(name)):
            return None
        names = self._reverse(container_id, address)
        return [Record(name, TYPE_PTR, encode_name(n)) for n in names] or None

    async def _forward(self, data: bytes, query: Message, *, tcp: bool) -> bytes:
        """The first upstream reply to *data* as it came, or SERVFAIL when none answers."""
        for server in self._upstream:
            try:
                return await asyncio.wait_for(self._ask(server, data, tcp), self._timeout)
            except (OSError, EOFError, TimeoutError) as exc:
                log.debug("DNS upstream %s port %d: %r", server[0], server[1], exc)
        return encode_response(query, SERVFAIL)

    async def _ask(self, server: tuple[str, int], data: bytes, tcp: bool) -> bytes:
        """Send *data* to one upstream server and wait for its reply with the same id."""
        loop = asyncio.get_running_loop()
        if not tcp:
            family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                await loop.sock_connect(sock, server)  # replies from elsewhere never arrive
                await loop.sock_sendall(sock, data)
                while True:  # ICMP "port unreachable" raises ConnectionRefusedError here
                    reply = await loop.sock_recv(sock, 65535)
                    if len(reply) >= HEADER.size and reply[:2] == data[:2] and reply[2] & 0x80:
                        return reply
        reader, writer = await asyncio.open_connection(*server)
        try:
            writer.write(len(data).to_bytes(2, "big") + data)
            reply = await reader.readexactly(int.from_bytes(await reader.readexactly(2), "big"))
        finally:
            writer.close()
        if len(reply) < HEADER.size or reply[:2] != data[:2]:
            raise ConnectionError("upstream reply does not match the query")
        return reply
