"""The bridge network driver on the real kernel: bridges, veths into namespaces, iptables rules.

Every test names its bridges ``dyt<6 hex>…`` and its veths ``vdy<6 hex>…``, uses subnets in
10.213.0.0/16 and starts its "containers" as ``unshare --net sleep 60`` processes. The fixtures
shut the drivers down, then delete any link and iptables chain or rule carrying the test's tag,
kill the processes by pid and put ``ip_forward`` back, even when a test fails. Checks from
inside a namespace use ``nsenter … ip``/``busybox ping`` (tests only; the driver uses netlink).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drivers.network.base import Interface, LinkRule, Network, PortMap, Settings
from drivers.network.bridge import BridgeDriver
from drivers.network.iptables import Rule, find_binary
from drivers.network.netlink import Netlink
from engine.errors import AlreadyExists, FailedPrecondition, NotFound

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: makes bridges, veths, namespaces and iptables rules"
)
needs_iptables = pytest.mark.skipif(find_binary() is None, reason="needs the iptables binary")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output."""
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=30)


def in_ns(pid: int, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in the network namespace of *pid*."""
    return run("nsenter", f"--net=/proc/{pid}/ns/net", *args, check=check)


def ping(pid: int, ip: str) -> bool:
    """Whether one ping from the namespace of *pid* to *ip* is answered within a second."""
    return in_ns(pid, "busybox", "ping", "-c1", "-W1", ip, check=False).returncode == 0


def rules_text() -> str:
    """Every rule of the filter and nat tables, as ``iptables -S`` prints them."""
    if find_binary() is None:
        return ""
    return run("iptables", "-w", "-S").stdout + run("iptables", "-w", "-t", "nat", "-S").stdout


@dataclass
class Lab:
    """One test's names, subnets, namespaces and drivers."""

    tag: str
    octets: list[int]
    pids: list[int] = field(default_factory=list)
    drivers: list[BridgeDriver] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def network(self, i: int = 0, **kw: Any) -> Network:
        """Network *i*: bridge dyt<tag><i>, subnet 10.213.<octet>.0/24, gateway .1."""
        n = self.octets[i]
        return Network(
            id=f"net{i}",
            name=f"net{i}",
            bridge=f"dyt{self.tag}{i}",
            subnet=f"10.213.{n}.0/24",
            gateway=f"10.213.{n}.1",
            mtu=kw.pop("mtu", 1400),
            **kw,
        )

    def iface(self, net: Network, k: int, ifname: str = "eth0", gateway: bool = True) -> Interface:
        """Interface of container *k* on *net*: address .<k+2>, MAC 02:42 + the address."""
        ip = net.gateway.rsplit(".", 1)[0] + f".{k + 2}"
        mac = "02:42:" + ":".join(f"{int(b):02x}" for b in ip.split("."))
        host = f"vdy{self.tag}{net.bridge[-1]}{k}"
        return Interface(f"c{k}", ifname, host, ip, 24, mac, net.gateway if gateway else "")

    def namespace(self) -> int:
        """Start a process in a new network namespace and return its pid once it is there."""
        proc = subprocess.Popen(["unshare", "--net", "sleep", "60"])
        self.procs.append(proc)
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{proc.pid}/ns/net") == own:
            assert time.monotonic() < deadline, "unshare did not make a namespace"
            time.sleep(0.001)
        return proc.pid

    def driver(self, **kw: Any) -> BridgeDriver:
        """A set-up driver whose default bridge is this test's."""
        d = BridgeDriver(Settings(bridge=f"dyt{self.tag}0", **kw))
        self.drivers.append(d)
        d.setup()
        return d


def _scrub(tag: str) -> None:
    """Delete every link, rule and chain that carries *tag* (what a failed test left)."""
    for line in run("ip", "-o", "link").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if tag in name:
            run("ip", "link", "del", name, check=False)
    if find_binary() is None:
        return
    for table in ("filter", "nat"):
        lines = run("iptables", "-w", "-t", table, "-S").stdout.splitlines()
        for line in lines:
            parts = line.split()
            if parts[0] == "-A" and tag in line:
                run("iptables", "-w", "-t", table, "-D", *parts[1:], check=False)
        chains = [p.split()[1] for p in lines if p.startswith("-N ") and tag in p]
        for chain in chains:
            run("iptables", "-w", "-t", table, "-F", chain, check=False)
        for chain in chains:
            run("iptables", "-w", "-t", table, "-X", chain, check=False)


@pytest.fixture
def lab() -> Iterator[Lab]:
    """A test's lab; everything it made is removed afterwards, whatever happened."""
    forward = IP_FORWARD.read_text()
    used = [ipaddress.ip_network(r) for r in Netlink().host_routes()]
    free = [
        n
        for n in range(1, 255)
        if not any(ipaddress.ip_network(f"10.213.{n}.0/24").overlaps(u) for u in used)
    ]
    lab = Lab(secrets.token_hex(3), random.sample(free, 2))
    try:
        yield lab
    finally:
        for d in lab.drivers:
            with contextlib.suppress(Exception):
                d.shutdown()
        for proc in lab.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        _scrub(lab.tag)
        if IP_FORWARD.read_text() != forward:
            IP_FORWARD.write_text(forward)


def test_create_adopt_and_delete_a_bridge(lab: Lab) -> None:
    d = lab.driver(iptables=False, ip_forward=False)
    net = lab.network()
    d.create(net)
    link = Netlink().find_link(net.bridge)
    assert link is not None and link.kind == "bridge" and link.up and link.mtu == 1400
    assert link.addresses == (f"{net.gateway}/24",)
    assert net.subnet in d.host_routes()
    assert "0.0.0.0/0" not in d.host_routes()

    lab.driver(iptables=False, ip_forward=False).create(net)  # adopted, not made again
    adopted = Netlink().find_link(net.bridge)
    assert adopted is not None and adopted.index == link.index

    other = lab.network(1)
    clash = Network("x", "clash", net.bridge, other.subnet, other.gateway)
    with pytest.raises(FailedPrecondition, match=net.bridge):
        d.create(clash)

    veth = f"dyt{lab.tag}v"
    run("ip", "link", "add", veth, "type", "veth", "peer", "name", f"dyt{lab.tag}w")
    with pytest.raises(FailedPrecondition, match=veth):
        d.create(Network("y", "veth", veth, other.subnet, other.gateway))

    d.delete(net)
    assert Netlink().find_link(net.bridge) is None


def test_netlink_calls_work_from_an_event_loop_thread(lab: Lab) -> None:
    d = lab.driver(iptables=False, ip_forward=False)
    net = lab.network()
    pid = lab.namespace()

    async def main() -> str | None:  # pyroute2's own loop cannot run inside a running one
        d.create(net)
        d.join(net, lab.iface(net, 0), pid)
        link = d.netlink.find_link(net.bridge)
        return link.name if link else None

    assert asyncio.run(main()) == net.bridge
    assert "eth0" in in_ns(pid, "ip", "-o", "link").stdout


def test_join_configures_the_namespace_quickly(lab: Lab) -> None:
    d = lab.driver(iptables=False, ip_forward=False)
    net, net1 = lab.network(), lab.network(1)
    d.create(net)
    d.create(net1)
    pids = [lab.namespace() for _ in range(6)]
    joins, leaves = [], []
    for k, pid in enumerate(pids):
        start = time.perf_counter()
        d.join(net, lab.iface(net, k), pid)
        joins.append(time.perf_counter() - start)
    iface = lab.iface(net, 0)
    pid = pids[0]
    addrs = in_ns(pid, "ip", "-o", "-4", "addr").stdout
    assert f"eth0    inet {iface.ip}/24" in addrs
    eth0 = in_ns(pid, "ip", "-o", "link", "show", "eth0").stdout
    assert "mtu 1400" in eth0 and f"link/ether {iface.mac}" in eth0 and ",UP," in eth0
    assert ",UP," in in_ns(pid, "ip", "-o", "link", "show", "lo").stdout
    assert f"default via {net.gateway} dev eth0" in in_ns(pid, "ip", "route").stdout
    host = run("ip", "-o", "link", "show", "master", net.bridge).stdout
    assert all(lab.iface(net, k).host_ifname in host for k in range(len(pids)))

    second = lab.iface(net1, 0, "eth1", gateway=False)
    d.join(net1, second, pid)
    assert f"eth1    inet {second.ip}/24" in in_ns(pid, "ip", "-o", "-4", "addr").stdout
    assert in_ns(pid, "ip", "route").stdout.count("default") == 1
    assert d.netlink.delete_in_namespace(pid, "eth1")  # network disconnect
    assert "eth1" not in in_ns(pid, "ip", "-o", "link").stdout
    assert Netlink().find_link(second.host_ifname) is None
    assert not d.netlink.delete_in_namespace(pid, "eth1")

    for k in range(len(pids)):
        start = time.perf_counter()
        d.leave(net, lab.iface(net, k))
        leaves.append(time.perf_counter() - start)
    assert "eth0" not in in_ns(pid, "ip", "-o", "link").stdout
    assert run("ip", "-o", "link", "show", "master", net.bridge).stdout == ""
    d.leave(net, iface)  # already gone: nothing to do
    ms = [round(t * 1000, 1) for t in joins]
    print(
        f"join ms: {ms} median {statistics.median(ms)}; leave median "
        f"{statistics.median(leaves) * 1000:.1f} ms"
    )
    assert statistics.median(joins) < 0.1


def test_containers_on_one_bridge_reach_each_other(lab: Lab) -> None:
    d = lab.driver(iptables=False, ip_forward=False)
    net = lab.network()
    d.create(net)
    a, b = lab.namespace(), lab.namespace()
    d.join(net, lab.iface(net, 0), a)
    d.join(net, lab.iface(net, 1), b)
    assert ping(a, lab.iface(net, 1).ip)
    assert ping(b, lab.iface(net, 0).ip)
    assert ping(a, net.gateway)


@needs_iptables
@pytest.mark.slow
def test_icc_off_blocks_containers_and_links_go_first(lab: Lab) -> None:
    d = lab.driver(ip_forward=False)
    net = lab.network(icc=False)
    d.create(net)
    a, b = lab.namespace(), lab.namespace()
    ia, ib = lab.iface(net, 0), lab.iface(net, 1)
    d.join(net, ia, a)
    d.join(net, ib, b)
    assert ping(a, net.gateway)
    assert not ping(a, ib.ip)

    d.link(net, LinkRule(ia.ip, ib.ip, 5432, "tcp"), True)
    fwd = run("iptables", "-w", "-S", d.chains.names.forward).stdout.splitlines()
    drop = fwd.index(f"-A {d.chains.names.forward} -i {net.bridge} -o {net.bridge} -j DROP")
    linked = [i for i, line in enumerate(fwd) if "5432" in line]
    assert len(linked) == 2 and max(linked) < drop
    d.link(net, LinkRule(ia.ip, ib.ip, 5432, "tcp"), False)
    assert "5432" not in rules_text()


@needs_iptables
@pytest.mark.slow
def test_bridges_of_one_daemon_are_isolated(lab: Lab) -> None:
    d = lab.driver()
    assert IP_FORWARD.read_text().strip() == "1"
    one, two = lab.network(), lab.network(1)
    d.create(one)
    d.create(two)
    a, b = lab.namespace(), lab.namespace()
    d.join(one, lab.iface(one, 0), a)
    d.join(two, lab.iface(two, 0), b)
    assert ping(a, one.gateway)
    assert not ping(a, lab.iface(two, 0).ip)
    for net in (one, two):  # without the isolation drops the host routes between the bridges
        d.chains.remove(Rule("filter", d.chains.names.isolation2, ("-o", net.bridge, "-j", "DROP")))
    assert ping(a, lab.iface(two, 0).ip)


@needs_iptables
def test_publish_forwards_a_port_and_unpublish_removes_it(lab: Lab) -> None:
    d = lab.driver(ip_forward=False)
    net = lab.network()
    d.create(net)
    pid = lab.namespace()
    iface = lab.iface(net, 0)
    d.join(net, iface, pid)
    port = PortMap("tcp", "", 18080 + lab.octets[0], iface.ip, 80)
    d.publish(net, port)
    d.publish(net, port)  # idempotent
    nat = run("iptables", "-w", "-t", "nat", "-S", d.chains.names.nat).stdout
    dnat = f"--dport {port.host_port} -j DNAT --to-destination {iface.ip}:80"
    assert nat.count(dnat) == 1
    accept = f"-d {iface.ip}/32 ! -i {net.bridge} -o {net.bridge} -p tcp -m tcp --dport 80"
    assert accept in run("iptables", "-w", "-S", d.chains.names.forward).stdout

    server = subprocess.Popen(
        [
            "nsenter",
            f"--net=/proc/{pid}/ns/net",
            "busybox",
            "nc",
            "-l",
            "-p",
            "80",
            "-e",
            "echo",
            "published",
        ]
    )
    lab.procs.append(server)
    received = b""
    deadline = time.monotonic() + 5
    while b"published" not in received and time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection((net.gateway, port.host_port), timeout=2) as conn,
        ):
            received = conn.recv(64)
        time.sleep(0.05)
    assert b"published" in received  # the host's OUTPUT hook sent it to the container

    d.unpublish(net, port)
    assert dnat not in rules_text()
    assert f"{iface.ip}/32" not in rules_text()


@needs_iptables
def test_shutdown_leaves_nothing_behind(lab: Lab) -> None:
    forward = IP_FORWARD.read_text()
    d = lab.driver()
    one, two = lab.network(), lab.network(1, internal=True)
    d.create(one)
    d.create(two)
    pid = lab.namespace()
    iface = lab.iface(one, 0)
    d.join(one, iface, pid)
    d.publish(one, PortMap("udp", "127.0.0.1", 5353, iface.ip, 53))
    d.link(one, LinkRule(iface.ip, "10.213.0.9", 80, "tcp"), True)
    assert lab.tag in rules_text()
    d.leave(one, iface)
    d.shutdown()
    assert lab.tag not in rules_text()
    assert lab.tag not in run("ip", "-o", "link").stdout
    assert IP_FORWARD.read_text() == forward


@needs_iptables
def test_shutdown_keeps_a_bridge_in_use_and_the_next_daemon_adopts_it(lab: Lab) -> None:
    d = lab.driver(ip_forward=False)
    net = lab.network()
    d.create(net)
    pid = lab.namespace()
    iface = lab.iface(net, 0)
    d.join(net, iface, pid)
    d.shutdown()
    assert lab.tag not in rules_text()
    assert iface.host_ifname in run("ip", "-o", "link", "show", "master", net.bridge).stdout
    again = lab.driver(ip_forward=False)
    again.create(net)
    assert f"-s {net.subnet} ! -o {net.bridge} -j MASQUERADE" in rules_text()
    assert ping(pid, net.gateway)


def test_join_errors_name_what_is_wrong(lab: Lab) -> None:
    d = lab.driver(iptables=False, ip_forward=False)
    net = lab.network()
    d.create(net)
    pid = lab.namespace()
    d.join(net, lab.iface(net, 0), pid)
    with pytest.raises(AlreadyExists, match=lab.iface(net, 0).host_ifname):
        d.join(net, lab.iface(net, 0), lab.namespace())
    twin = lab.iface(net, 2)  # another host end, but eth0 exists in that namespace already
    with pytest.raises(AlreadyExists):
        d.join(net, twin, pid)
    assert Netlink().find_link(twin.host_ifname) is None
    gone = lab.procs[0]
    os.kill(gone.pid, signal.SIGKILL)
    gone.wait()
    with pytest.raises(NotFound, match=f"pid {gone.pid}"):
        d.join(net, lab.iface(net, 1), gone.pid)
    assert Netlink().find_link(lab.iface(net, 1).host_ifname) is None
