"""The embedded DNS server: its codec, and a Resolver served on 127.0.0.1 sockets (no root).

The upstream servers are fakes on 127.0.0.1 that answer canned replies, stay silent or are
closed ports; every server test runs on asyncio's loop and on uvloop's (the daemon's).
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, closing
from typing import Any, cast

import pytest
import uvloop

from drivers.network.resolver import (
    CLASS_IN,
    MAX_PENDING,
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
    Resolver,
    decode,
    encode_name,
    encode_query,
    encode_response,
    reverse_name,
    upstream_servers,
)
from engine.errors import AlreadyExists

QR, AA, TC, RD = 0x8000, 0x0400, 0x0200, 0x0100
NAMES = {"web": ["172.18.0.2"], "db": ["172.18.0.3", "172.19.0.3"]}
Upstream = tuple[str, int]


def lookup(container_id: str, name: str) -> list[str]:
    return NAMES.get(name, []) if container_id == "c1" else []


def reverse(container_id: str, address: str) -> list[str]:
    return [name for name, addrs in NAMES.items() if address in addrs]


def a_query(qid: int, name: str, qtype: int = TYPE_A) -> bytes:
    return encode_query(qid, name, qtype)


# --- codec ----------------------------------------------------------------------------------


def test_query_round_trip_keeps_id_flags_and_case() -> None:
    msg = decode(encode_query(0xBEEF, "Web.Example.", TYPE_AAAA))
    assert (msg.id, msg.flags & RD, msg.answers) == (0xBEEF, RD, ())
    assert msg.question == Question((b"Web", b"Example"), TYPE_AAAA, CLASS_IN)
    assert msg.question.name == "web.example"


def test_response_round_trip_with_compressed_answers() -> None:
    query = decode(encode_query(7, "DB"))
    records = [Record("db", TYPE_A, bytes([172, 18, 0, 3])), Record("x.y", TYPE_A, b"\1\2\3\4", 5)]
    wire = encode_response(query, NOERROR, records)
    assert wire[12:15] == b"\x02DB"  # the question as asked, case kept
    assert b"\xc0\x0c" in wire  # the first answer points at the question's name
    reply = decode(wire)
    assert (reply.id, reply.flags & (QR | AA | RD), reply.rcode) == (7, QR | AA | RD, NOERROR)
    assert reply.answers == tuple(records)


def test_root_name_and_name_errors() -> None:
    assert encode_name(".") == encode_name("") == b"\0"
    assert encode_name("a.b.") == b"\1a\1b\0"
    for bad in ("a..b", "x" * 64, ".".join(["abcdefg"] * 40)):
        with pytest.raises(ValueError):
            encode_name(bad)


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00",  # header one byte short
        struct.pack("!6H", 1, 0, 1, 0, 0, 0),  # a question and no name
        struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\x03web\x00\x00",  # truncated type/class
        struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\x3fabc",  # label longer than the packet
        struct.pack("!6H", 1, 0, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 4 + b"\0\0\1\0\1",
        struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\x40abc\0\0\1\0\1",  # reserved label type
        struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c\0\1\0\1",  # pointer to itself
        struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\xc0\x20\0\1\0\1",  # pointer forwards
        struct.pack("!6H", 1, 0, 1, 0, 0, 0) + b"\xc0",  # half a pointer
        struct.pack("!6H", 1, 0, 2, 0, 0, 0) + b"\0\0\1\0\1" * 2,  # two questions
        # answers: a loop through two names (18 → 12 is fine, 12 → 18 would loop), data overrun
        struct.pack("!6H", 1, QR, 1, 1, 0, 0) + b"\x01a\xc0\x12\0\1\0\1" + b"\xc0\x0c",
        struct.pack("!6H", 1, QR, 1, 1, 0, 0)
        + b"\0\0\1\0\1\xc0\x0c"
        + struct.pack("!HHIH", 1, 1, 0, 9),
    ],
)
def test_malformed_packets_raise_malformed(packet: bytes) -> None:
    with pytest.raises(Malformed):
        decode(packet)


def test_any_truncation_or_noise_raises_only_malformed() -> None:
    query = decode(encode_query(1, "db"))
    wire = encode_response(query, NOERROR, [Record("db", TYPE_A, b"\1\2\3\4")] * 3)
    rng = random.Random(1035)
    samples = [wire[:n] for n in range(len(wire))]
    samples += [bytes(rng.randrange(256) for _ in range(rng.randrange(64))) for _ in range(2000)]
    for _ in range(2000):
        mutated = bytearray(wire)
        mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        samples.append(bytes(mutated))
    decoded = 0
    for sample in samples:
        try:
            decode(sample)
            decoded += 1
        except Malformed:
            pass
    assert 0 < decoded < len(samples)


def test_upstream_servers_and_reverse_names() -> None:
    text = "# nameserver 9.9.9.9\nsearch example.com\nnameserver 127.0.0.53\n nameserver ::1 \n"
    text += "nameserver bogus\nnameserver fe80::1%eth0\noptions ndots:0\nnameserver\n"
    assert upstream_servers(text) == [("127.0.0.53", 53), ("::1", 53), ("fe80::1%eth0", 53)]
    assert reverse_name("172.18.0.2") == "2.0.18.172.in-addr.arpa"


# --- the server on loopback sockets ---------------------------------------------------------


@pytest.fixture(params=[asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Iterator[Callable[[Awaitable[Any]], Any]]:
    with asyncio.Runner(loop_factory=request.param) as runner:
        yield lambda coro: runner.run(asyncio.wait_for(coro, 20))


def bound(kind: int, port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.setblocking(False)
        if kind == socket.SOCK_STREAM:  # not for UDP: there it would let two sockets share a port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        if kind == socket.SOCK_STREAM:
            sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


def dns_sockets() -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on one port number, as at 127.0.0.11:53."""
    for _ in range(100):
        udp = bound(socket.SOCK_DGRAM)
        try:
            return udp, bound(socket.SOCK_STREAM, udp.getsockname()[1])
        except OSError:  # that number is taken for TCP: try another
            udp.close()
    raise AssertionError("no port free for both UDP and TCP on 127.0.0.1")


@asynccontextmanager
async def served(resolver: Resolver, container_id: str = "c1") -> AsyncIterator[Upstream]:
    udp, tcp = dns_sockets()
    port = udp.getsockname()[1]
    await resolver.serve(container_id, udp, tcp)
    try:
        yield ("127.0.0.1", port)
    finally:
        await resolver.close()


async def ask(server: Upstream, packet: bytes, wait: float = 5.0) -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, server)
        await loop.sock_sendall(sock, packet)
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), wait)


async def ask_tcp(server: Upstream, *packets: bytes) -> list[bytes]:
    reader, writer = await asyncio.open_connection(*server)
    try:
        writer.write(b"".join(len(p).to_bytes(2, "big") + p for p in packets))
        replies = []
        for _ in packets:
            size = int.from_bytes(await reader.readexactly(2), "big")
            replies.append(await reader.readexactly(size))
        return replies
    finally:
        writer.close()


class FakeUpstream(asyncio.DatagramProtocol):
    """An upstream server on 127.0.0.1 that answers every query with one A record (or not)."""

    def __init__(self, answer: bool = True) -> None:
        self.answer, self.seen = answer, list[bytes]()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen.append(data)
        if self.answer:
            self.transport.sendto(canned(data), addr)


def canned(query: bytes) -> bytes:
    msg = decode(query)
    assert msg.question is not None
    return encode_response(msg, NOERROR, [Record(msg.question.name, TYPE_A, b"\x7f\1\2\3", 77)])


@asynccontextmanager
async def fake_upstream(answer: bool = True) -> AsyncIterator[tuple[Upstream, FakeUpstream]]:
    transport, proto = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: FakeUpstream(answer), local_addr=("127.0.0.1", 0)
    )
    try:
        yield transport.get_extra_info("sockname")[:2], proto
    finally:
        transport.close()


def closed_port() -> Upstream:
    with closing(bound(socket.SOCK_DGRAM)) as sock:
        return ("127.0.0.1", sock.getsockname()[1])


def addresses(msg: Message) -> list[str]:
    return [socket.inet_ntoa(rr.data) for rr in msg.answers if rr.rtype == TYPE_A]


def test_owned_names_answer_a_with_ttl_600(run: Callable[[Awaitable[Any]], Any]) -> None:
    asked: list[tuple[str, str]] = []

    def recording(container_id: str, name: str) -> list[str]:
        asked.append((container_id, name))
        return lookup(container_id, name)

    async def main() -> None:
        async with served(Resolver(recording, [])) as server:
            for name in ("web", "web.", "WEB"):
                reply = decode(await ask(server, a_query(0x1234, name)))
                assert (reply.id, reply.rcode, reply.flags & (QR | AA)) == (
                    0x1234,
                    NOERROR,
                    QR | AA,
                )
                assert addresses(reply) == ["172.18.0.2"]
                assert [rr.ttl for rr in reply.answers] == [TTL] == [600]
                assert reply.question == decode(a_query(0, name)).question  # echoed as asked
            reply = decode(await ask(server, a_query(9, "db")))
            assert addresses(reply) == ["172.18.0.3", "172.19.0.3"]

    run(main())
    assert asked == [("c1", "web")] * 3 + [("c1", "db")]


def test_aaaa_of_an_owned_name_is_nodata(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def main() -> None:
        async with served(Resolver(lookup, [closed_port()])) as server:
            reply = decode(await ask(server, a_query(5, "web", TYPE_AAAA)))
            assert (reply.id, reply.rcode, reply.answers) == (5, NOERROR, ())
            assert reply.question is not None and reply.question.qtype == TYPE_AAAA

    run(main())


def test_ptr_of_an_owned_address(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def main() -> None:
        async with served(Resolver(lookup, [], reverse=reverse)) as server:
            reply = decode(await ask(server, a_query(3, reverse_name("172.19.0.3"), TYPE_PTR)))
            assert [(rr.rtype, rr.data, rr.ttl) for rr in reply.answers] == [
                (TYPE_PTR, encode_name("db"), TTL)
            ]
            assert reply.answers[0].name == "3.0.19.172.in-addr.arpa"

    run(main())


def test_unknown_names_are_forwarded_and_relayed_as_they_came(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    async def main() -> None:
        async with (
            fake_upstream() as (address, upstream),
            served(Resolver(lookup, [address], timeout=1.0), "c9") as server,
        ):
            query = a_query(0xCAFE, "Example.COM")
            wire = await ask(server, query)
            assert upstream.seen == [query]  # forwarded byte for byte
            assert wire == canned(query)  # relayed byte for byte: the client's id kept
            assert decode(wire).id == 0xCAFE and addresses(decode(wire)) == ["127.1.2.3"]
            # "web" is owned on c1's networks only: for c9 it goes upstream
            assert decode(await ask(server, a_query(2, "web"))).answers[0].ttl == 77
            assert len(upstream.seen) == 2

    run(main())


def test_next_upstream_after_a_silent_or_closed_one(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def main() -> None:
        async with (
            fake_upstream(answer=False) as (silent, mute),
            fake_upstream() as (good, upstream),
        ):
            resolver = Resolver(lookup, [closed_port(), silent, good], timeout=0.4)
            async with served(resolver) as server:
                started = time.monotonic()
                reply = decode(await ask(server, a_query(11, "example.org")))
                assert addresses(reply) == ["127.1.2.3"] and reply.id == 11
                assert 0.4 <= time.monotonic() - started < 2.0
                assert len(mute.seen) == len(upstream.seen) == 1

    run(main())


def test_servfail_when_no_upstream_answers(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def main() -> None:
        async with (
            fake_upstream(answer=False) as (silent, _),
            served(Resolver(lookup, [silent, closed_port()], timeout=0.3)) as server,
        ):
            started = time.monotonic()
            reply = decode(await ask(server, a_query(0x4242, "nowhere.example")))
            assert 0.3 <= time.monotonic() - started < 2.0
            assert (reply.id, reply.rcode, reply.flags & (QR | AA)) == (0x4242, SERVFAIL, QR)
            assert reply.question is not None and reply.question.name == "nowhere.example"
        async with served(Resolver(lookup, [])) as server:
            assert decode(await ask(server, a_query(1, "example.net"))).rcode == SERVFAIL

    run(main())


def test_malformed_queries_and_responses_are_dropped(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def main() -> None:
        async with served(Resolver(lookup, [])) as server:
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                await loop.sock_connect(sock, server)
                response = encode_response(decode(a_query(8, "web")), NOERROR)
                for junk in (b"", b"\0" * 11, b"\xc0" * 40, a_query(7, "web")[:-1], response):
                    await loop.sock_sendall(sock, junk)
                await loop.sock_sendall(sock, a_query(9, "web"))
                reply = decode(await asyncio.wait_for(loop.sock_recv(sock, 65535), 5))
                assert reply.id == 9  # nothing came back for the junk before it
            notify = bytearray(a_query(6, "web"))
            notify[2] |= 0x20  # opcode 4 (NOTIFY)
            reply = decode(await ask(server, bytes(notify)))
            assert (reply.id, reply.rcode) == (6, NOTIMP)

    run(main())


def test_a_failing_lookup_is_servfail_and_serving_goes_on(
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    def broken(container_id: str, name: str) -> list[str]:
        if name == "boom":
            raise RuntimeError("graph is gone")
        return lookup(container_id, name)

    async def main() -> None:
        async with served(Resolver(broken, [])) as server:
            assert decode(await ask(server, a_query(1, "boom"))).rcode == SERVFAIL
            assert addresses(decode(await ask(server, a_query(2, "web")))) == ["172.18.0.2"]

    run(main())


def test_tcp_queries_pipelined_and_forwarded(run: Callable[[Awaitable[Any]], Any]) -> None:
    seen: list[bytes] = []

    async def upstream_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readexactly(int.from_bytes(await reader.readexactly(2), "big"))
        seen.append(data)
        writer.write(len(canned(data)).to_bytes(2, "big") + canned(data))
        await writer.drain()
        writer.close()

    async def main() -> None:
        tcp_upstream = await asyncio.start_server(upstream_client, "127.0.0.1", 0)
        try:
            address = tcp_upstream.sockets[0].getsockname()[:2]
            async with served(Resolver(lookup, [address], timeout=1.0)) as server:
                queries = [a_query(1, "web"), a_query(2, "db", TYPE_AAAA), a_query(3, "x.test")]
                replies = {decode(r).id: r for r in await ask_tcp(server, *queries)}
                assert addresses(decode(replies[1])) == ["172.18.0.2"]
                assert decode(replies[2]).answers == ()
                assert replies[3] == canned(queries[2]) and seen == [queries[2]]
        finally:
            tcp_upstream.close()

    run(main())


def test_big_owned_answers_truncate_over_udp_only(run: Callable[[Awaitable[Any]], Any]) -> None:
    many = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(60)]

    async def main() -> None:
        async with served(Resolver(lambda cid, name: many, [])) as server:
            udp = decode(await ask(server, a_query(1, "crowd")))
            assert (udp.flags & TC, udp.rcode, udp.answers) == (TC, NOERROR, ())
            [wire] = await ask_tcp(server, a_query(2, "crowd"))
            assert addresses(decode(wire)) == many

    run(main())


def test_stop_closes_the_sockets_and_cancels_forwards(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def main() -> None:
        async with fake_upstream(answer=False) as (silent, mute):
            resolver = Resolver(lookup, [silent], timeout=30)
            async with served(resolver, "c2") as server:
                with pytest.raises(AlreadyExists):
                    await resolver.serve("c2", *dns_sockets())
                loop = asyncio.get_running_loop()
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.setblocking(False)
                    await loop.sock_connect(sock, server)
                    await loop.sock_sendall(sock, a_query(1, "pending.example"))
                    while not mute.seen:
                        await asyncio.sleep(0.01)
                    resolver.stop("c2")
                    resolver.stop("c2")  # a second stop is a no-op
                    await asyncio.sleep(0.05)
                    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):  # the port is free again
                        bound(kind, server[1]).close()

    run(main())


def test_a_flood_of_forwards_is_capped_per_container(run: Callable[[Awaitable[Any]], Any]) -> None:
    async def main() -> None:
        async with (
            fake_upstream(answer=False) as (silent, mute),
            served(Resolver(lookup, [silent], timeout=30)) as server,
        ):
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                await loop.sock_connect(sock, server)
                for qid in range(MAX_PENDING + 50):
                    await loop.sock_sendall(sock, a_query(qid, f"n{qid}.example"))
                    await asyncio.sleep(0)  # the server shares this loop: let it read
                reply = await ask(server, a_query(1, "web"))  # owned names still answered
                assert addresses(decode(reply)) == ["172.18.0.2"]
                await asyncio.sleep(0.2)
                assert len(mute.seen) == MAX_PENDING

    run(main())
