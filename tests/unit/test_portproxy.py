"""The userland port proxy, against local echo servers on 127.0.0.1 (no root needed).

Every scenario runs on the default asyncio loop and on uvloop (the daemon's loop), bounded by a
timeout; servers, proxies and sockets are closed in ``finally`` blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, cast

import pytest
import uvloop

from engine.errors import AlreadyExists, InvalidArgument
from jobs.portbindings import Binding
from jobs.portproxy import HIGH_WATER, PortProxy, ProxySet

TAKEN = "port is already allocated (address already in use)"
LO = "127.0.0.1"
Scenario = Callable[[], Awaitable[None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Scenario], None]:
    """Run a scenario on the chosen loop, within 30 seconds."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(scenario: Scenario) -> None:
        async def bounded() -> None:
            await asyncio.wait_for(scenario(), 30)

        with asyncio.Runner(loop_factory=factory) as r:
            r.run(bounded())

    return runner


class Echo(asyncio.Protocol):
    """Echoes what it reads; at EOF writes ``bye <count>`` and closes."""

    def __init__(self, peers: list[Echo]) -> None:
        self.count = 0
        self.lost = asyncio.get_running_loop().create_future()
        peers.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass

    def data_received(self, data: bytes) -> None:
        self.count += len(data)
        self.transport.write(data)

    def eof_received(self) -> bool:
        self.transport.write(b"bye %d" % self.count)
        self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


@contextlib.asynccontextmanager
async def echo_server(
    protocol: Callable[[list[Echo]], asyncio.Protocol] = Echo,
) -> AsyncIterator[tuple[int, list[Echo]]]:
    """A tcp echo server on 127.0.0.1: (port, the connections it accepted)."""
    peers: list[Echo] = []
    server = await asyncio.get_running_loop().create_server(lambda: protocol(peers), LO, 0)
    try:
        yield server.sockets[0].getsockname()[1], peers
    finally:
        server.close()
        for peer in peers:
            peer.transport.abort()
        await server.wait_closed()


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's do not subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(b"echo " + data, addr)


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.put_nowait(data)


@contextlib.asynccontextmanager
async def proxy(*args: Any, **kwargs: Any) -> AsyncIterator[PortProxy]:
    """An open PortProxy, closed at the end."""
    p = await PortProxy.open(*args, **kwargs)
    try:
        yield p
    finally:
        await p.close()


@contextlib.contextmanager
def held(port: int = 0, kind: int = socket.SOCK_STREAM) -> Iterator[socket.socket]:
    """A socket holding 127.0.0.1:port (listening, for tcp)."""
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.bind((LO, port))
        if kind == socket.SOCK_STREAM:
            sock.listen()
        yield sock
    finally:
        sock.close()


def free_ports(n: int) -> int:
    """The first of n consecutive ports free on 127.0.0.1, below the ephemeral range."""
    for base in range(20000, 30000, n):
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + n):
                    stack.enter_context(held(port))
                    stack.enter_context(held(port, socket.SOCK_DGRAM))
            return base
        except OSError:
            continue
    raise AssertionError("no free ports")


async def talk(port: int, data: bytes) -> bytes:
    """Send data, shut down writing, read until EOF."""
    reader, writer = await asyncio.open_connection(LO, port)
    try:

        async def send() -> None:
            writer.write(data)
            await writer.drain()
            writer.write_eof()

        _, got = await asyncio.gather(send(), reader.read())
        return got
    finally:
        writer.close()


def test_tcp_echo_and_half_close(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        async with echo_server() as (port, _), proxy("tcp", LO, 0, LO, port) as p:
            assert await talk(p.host_port, b"hello") == b"hello" + b"bye 5"
            reader, writer = await asyncio.open_connection(LO, p.host_port)
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"  # before the client's EOF
            writer.write_eof()
            assert await reader.read() == b"bye 4"  # the reply after half-close arrives
            writer.close()

    run(scenario)


def test_tcp_server_speaks_first(run: Callable[[Scenario], None]) -> None:
    class Banner(Echo):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.transport.write(b"220 ready\r\n")

    async def scenario() -> None:
        async with echo_server(Banner) as (port, _), proxy("tcp", LO, 0, LO, port) as p:
            reader, writer = await asyncio.open_connection(LO, p.host_port)
            assert await reader.readline() == b"220 ready\r\n"
            writer.close()

    run(scenario)


def test_tcp_over_ipv6_loopback(run: Callable[[Scenario], None]) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")

    async def scenario() -> None:
        async with echo_server() as (port, _), proxy("tcp", "::1", 0, LO, port) as p:
            reader, writer = await asyncio.open_connection("::1", p.host_port)
            writer.write(b"six")
            writer.write_eof()
            assert await reader.read() == b"sixbye 3"
            writer.close()

    run(scenario)


def test_address_not_on_this_host_is_invalid(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        with pytest.raises(InvalidArgument) as err:  # 192.0.2.0/24 is for documentation only
            await PortProxy.open("tcp", "192.0.2.1", 8080, LO, 80)
        assert str(err.value) == "Bind for 192.0.2.1:8080 failed: Cannot assign requested address"

    run(scenario)


def test_tcp_one_mebibyte_both_ways(run: Callable[[Scenario], None]) -> None:
    data = os.urandom(1 << 20)

    async def scenario() -> None:
        async with echo_server() as (port, _), proxy("tcp", LO, 0, LO, port) as p:
            assert await talk(p.host_port, data) == data + b"bye %d" % len(data)

    run(scenario)


def test_tcp_backpressure_bounds_buffering(run: Callable[[Scenario], None]) -> None:
    class Stalled(Echo):
        def data_received(self, data: bytes) -> None:
            self.transport.pause_reading()  # and never resumes

    async def scenario() -> None:
        async with echo_server(Stalled) as (port, _), proxy("tcp", LO, 0, LO, port) as p:
            _, writer = await asyncio.open_connection(LO, p.host_port)
            writer.write(bytes(32 << 20))
            with pytest.raises(TimeoutError):  # the proxy stopped reading from the client
                await asyncio.wait_for(writer.drain(), 1.0)
            (pair,) = p.pairs
            assert pair.client.peer is not None and pair.client.peer.transport is not None
            assert pair.client.peer.transport.get_write_buffer_size() < 4 * HIGH_WATER
            writer.transport.abort()

    run(scenario)


def test_port_in_use_fails_with_nothing_left(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        fds = len(os.listdir("/proc/self/fd"))
        for kind, proto in ((socket.SOCK_STREAM, "tcp"), (socket.SOCK_DGRAM, "udp")):
            with held(kind=kind) as sock:
                port = sock.getsockname()[1]
                with pytest.raises(AlreadyExists) as err:
                    await PortProxy.open(proto, LO, port, LO, 9)  # type: ignore[arg-type]
                assert str(err.value) == f"Bind for {LO}:{port} failed: {TAKEN}"
                with pytest.raises(AlreadyExists) as err:  # "" is 0.0.0.0, which overlaps
                    await PortProxy.open(proto, "", port, LO, 9)  # type: ignore[arg-type]
                assert str(err.value) == f"Bind for 0.0.0.0:{port} failed: {TAKEN}"
            assert len(os.listdir("/proc/self/fd")) == fds
            with held(port, kind):  # the port is free again: the proxy kept nothing
                pass

    run(scenario)


def test_port_zero_comes_from_the_ephemeral_range(run: Callable[[Scenario], None]) -> None:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = map(int, f.read().split())

    async def scenario() -> None:
        for proto in ("tcp", "udp"):
            async with proxy(proto, LO, 0, LO, 9) as p:
                assert low <= p.host_port <= high
                assert p.port_map.host_port == p.host_port

    run(scenario)


def test_range_skips_a_taken_port_and_fails_when_all_are(
    run: Callable[[Scenario], None],
) -> None:
    base = free_ports(2)

    async def scenario() -> None:
        with held(base):
            async with proxy("tcp", LO, base, LO, 9, base + 1) as p:
                assert p.host_port == base + 1
                with pytest.raises(AlreadyExists) as err:
                    await PortProxy.open("tcp", LO, base, LO, 9, base + 1)
                want = f"Bind for {LO}:{base}-{base + 1} failed: {TAKEN}"
                assert str(err.value) == want

    run(scenario)


def test_close_drops_live_connections(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        async with echo_server() as (port, peers):
            p = await PortProxy.open("tcp", LO, 0, LO, port)
            try:
                reader, writer = await asyncio.open_connection(LO, p.host_port)
                writer.write(b"x")
                assert await reader.readexactly(1) == b"x"
                assert p.live == 1
            finally:
                await p.close()
            assert p.live == 0
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""
            await asyncio.wait_for(peers[0].lost, 5)  # the container side is closed too
            writer.close()
            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection(LO, p.host_port)

    run(scenario)


def test_connect_refused_closes_the_client(run: Callable[[Scenario], None]) -> None:
    with held() as sock:
        dead = sock.getsockname()[1]  # nothing listens there once closed

    async def scenario() -> None:
        async with proxy("tcp", LO, 0, LO, dead) as p:
            reader, writer = await asyncio.open_connection(LO, p.host_port)
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""
            writer.close()
            for _ in range(100):
                if not p.live:
                    break
                await asyncio.sleep(0.01)
            assert p.live == 0

    run(scenario)


async def udp_client(port: int) -> tuple[asyncio.DatagramTransport, UdpClient]:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(UdpClient, remote_addr=(LO, port))


def test_udp_echo_two_clients_and_idle_expiry(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        server, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=(LO, 0))
        clients: list[asyncio.DatagramTransport] = []
        try:
            port = server.get_extra_info("sockname")[1]
            async with proxy("udp", LO, 0, LO, port, udp_timeout=0.3) as p:
                (a, pa), (b, pb) = [await udp_client(p.host_port) for _ in range(2)]
                clients += [a, b]
                for i in range(3):
                    a.sendto(b"a%d" % i)
                    b.sendto(b"b%d" % i)
                assert [await pa.got.get() for _ in range(3)] == [
                    b"echo a0",
                    b"echo a1",
                    b"echo a2",
                ]
                assert [await pb.got.get() for _ in range(3)] == [
                    b"echo b0",
                    b"echo b1",
                    b"echo b2",
                ]
                assert p.live == 2
                for _ in range(300):
                    if not p.live:
                        break
                    await asyncio.sleep(0.01)
                assert p.live == 0  # both associations expired
                a.sendto(b"again")
                assert await pa.got.get() == b"echo again"
                assert p.live == 1
            assert p.live == 0
        finally:
            for t in [server, *clients]:
                t.close()

    run(scenario)


def test_proxy_set_all_or_nothing(run: Callable[[Scenario], None]) -> None:
    async def scenario() -> None:
        async with echo_server() as (port, _):
            proxies = ProxySet()
            maps = await proxies.publish(
                [Binding("tcp", port, LO, 0), Binding("udp", 53, LO, 0)], LO
            )
            first, udp = proxies.proxies
            assert maps == [first.port_map, udp.port_map] == proxies.port_maps()
            assert (maps[0].proto, maps[0].container_port, maps[0].container_ip) == (
                "tcp",
                port,
                LO,
            )
            assert await talk(first.host_port, b"hi") == b"hibye 2"
            with held() as sock, pytest.raises(AlreadyExists):
                await proxies.add(Binding("tcp", port, LO, sock.getsockname()[1]), LO)
            assert proxies.proxies == []
            with held(first.host_port), held(udp.host_port, socket.SOCK_DGRAM):
                pass  # what was added before the failure was closed

    run(scenario)
