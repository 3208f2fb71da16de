"""The embedded DNS server inside a real network namespace: sockets made there with
``netns.sockets_in`` at 127.0.0.11:53, served from this process's (uvloop) event loop, asked by
busybox's nslookup running in the namespace."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from drivers.network.netns import sockets_in
from drivers.network.resolver import ADDRESS, Resolver, decode
from engine.errors import NotFound, Unavailable

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: network namespaces (unshare, setns)"
)

ROOT = Path(__file__).resolve().parents[2]
DNS_SPECS = [
    (socket.AF_INET, socket.SOCK_DGRAM, ADDRESS),
    (socket.AF_INET, socket.SOCK_STREAM, ADDRESS),
]
HEX_ADDRESS = "0B00007F:0035"  # 127.0.0.11:53 as /proc/net/{udp,tcp} write it


def lookup(container_id: str, name: str) -> list[str]:
    return {"web": ["172.18.0.2"], "db": ["172.18.0.3"]}.get(name, [])


def in_netns(pid: int, *argv: str) -> list[str]:
    return ["nsenter", f"--net=/proc/{pid}/ns/net", *argv]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def netns() -> Iterator[int]:
    """The pid of a ``sleep`` in a new network namespace whose ``lo`` is down."""
    proc = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        host = os.stat("/proc/self/ns/net").st_ino
        deadline = time.monotonic() + 10
        while os.stat(f"/proc/{proc.pid}/ns/net").st_ino == host:  # until unshare ran
            assert time.monotonic() < deadline, "unshare --net did not unshare in 10s"
            time.sleep(0.01)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def container(netns: int) -> int:
    """As ``netns``, with ``lo`` up (as the exec driver leaves a container's namespace)."""
    subprocess.run(in_netns(netns, "ip", "link", "set", "lo", "up"), check=True)
    return netns


def test_sockets_are_bound_inside_the_namespace_only(container: int) -> None:
    before = os.readlink("/proc/thread-self/ns/net")
    udp, tcp = sockets_in(container, DNS_SPECS)
    try:
        assert os.readlink("/proc/thread-self/ns/net") == before  # this thread never moved
        for sock in (udp, tcp):
            assert sock.getsockname() == ADDRESS
            assert not sock.getblocking() and not os.get_inheritable(sock.fileno())
        for proto in ("udp", "tcp"):
            assert HEX_ADDRESS in Path(f"/proc/{container}/net/{proto}").read_text()
            assert HEX_ADDRESS not in Path("/proc/self/net/" + proto).read_text()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as host:
            host.bind(ADDRESS)  # the host's 127.0.0.11:53 is still free
        with pytest.raises(Unavailable, match="127.0.0.11:53/udp .*: Address already in use"):
            sockets_in(container, DNS_SPECS[:1])
    finally:
        udp.close()
        tcp.close()


def test_errors_name_the_cause_and_leak_no_descriptors(netns: int) -> None:
    fds = open_fds()
    with pytest.raises(Unavailable, match="lo is down"):
        sockets_in(netns, DNS_SPECS)
    gone = subprocess.Popen(["true"])
    gone.wait()
    with pytest.raises(NotFound, match=f"process {gone.pid}"):
        sockets_in(gone.pid, DNS_SPECS)
    assert open_fds() == fds
    assert not [t for t in threading.enumerate() if t.name.startswith("netns-")]


async def nslookup(pid: int, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *in_netns(pid, "/bin/busybox", "nslookup", *args, "127.0.0.11"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


TCP_CLIENT = """
import socket, sys
from drivers.network.resolver import encode_query
query = encode_query(0x7777, "DB")
with socket.create_connection(("127.0.0.11", 53), timeout=10) as sock:
    sock.sendall(len(query).to_bytes(2, "big") + query)
    size = int.from_bytes(sock.recv(2), "big")
    reply = b""
    while len(reply) < size:
        reply += sock.recv(size - len(reply))
sys.stdout.buffer.write(reply)
"""


async def tcp_query(pid: int) -> bytes:
    client = await asyncio.create_subprocess_exec(
        *in_netns(pid, sys.executable, "-c", TCP_CLIENT), cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        wire, _ = await asyncio.wait_for(client.communicate(), 30)
    finally:
        if client.returncode is None:
            client.kill()
            await client.wait()
    return wire


def test_busybox_resolves_names_in_the_namespace(container: int) -> None:
    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))  # an upstream that never answers
            resolver = Resolver(lookup, [silent.getsockname()], timeout=0.5)
            try:
                await resolver.serve("c1", *sockets_in(container, DNS_SPECS))
                status, out = await nslookup(container, "web")
                assert status == 0 and "172.18.0.2" in out, out
                started = time.monotonic()
                status, out = await nslookup(container, "nope.invalid")
                assert status != 0 and "172.18" not in out, out
                assert time.monotonic() - started < 15, "a name nobody answers must not hang"
                reply = decode(await tcp_query(container))
                assert reply.id == 0x7777 and [rr.data for rr in reply.answers] == [
                    socket.inet_aton("172.18.0.3")
                ]
            finally:
                await resolver.close()
            assert HEX_ADDRESS not in Path(f"/proc/{container}/net/udp").read_text()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
