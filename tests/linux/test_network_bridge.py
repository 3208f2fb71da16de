"""The default bridge network on a real daemon, checked against Docker's behaviour.

Covers a container's ``eth0`` on the daemon's bridge (address, route, MTU, MAC, inspect,
``/etc/hosts``), ``--network none|host|container:<x>``, ``--icc=false``, published ports (TCP and
UDP, fixed and picked host ports, ``-P``, a taken port, release on stop, ``port`` and ``ps``),
legacy links (env, hosts, inspect, rename, ``rm --link``, failures), a daemon restart with
running containers and what a daemon leaves on the host when it stops.

Vocabulary: *own daemon* is a daemon this file starts with its own flags, bridge ``dyt<hex>`` on
``10.215.X.0/24`` (X in 220..249, one not in use on the host); the ``own`` fixture removes its
containers, stops it and checks that no bridge, veth or iptables rule of it stays. Containers on
the shared ``containers`` daemon are named ``nb-<hex>`` and removed by the ``names`` fixture.
Busybox's ``nc`` in Debian's build has no ``-u``, so the UDP test answers datagrams with a
small echo server the test runs in the container's network namespace (``nsenter --net``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.conftest import free_port, start
from tests.linux.containerkit import (
    DOCKYARD_CMD,
    Containers,
    bridge_of,
    busybox_tar,
    containers,
    http_get,
    mounts_under,
    needs_root,
    network_leftovers,
    remove_cgroups,
)

pytestmark = needs_root
__all__ = ["containers"]

SLEEP = ("busybox", "sleep", "600")
HTTPD = (
    "busybox",
    "sh",
    "-c",
    "mkdir -p /www && echo hi > /www/index.html && httpd -f -p 80 -h /www",
)
UDP_ECHO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
s.settimeout(30)
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(b"echo:" + data, peer)
"""


def host(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command on the host."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)


def subnet_of(kit: Containers) -> ipaddress.IPv4Interface:
    """The daemon's ``--bip`` (gateway address and prefix)."""
    args = [str(a) for a in kit.daemon.proc.args]  # type: ignore[union-attr]
    return ipaddress.IPv4Interface(args[args.index("--bip") + 1])


def inspect_json(kit: Containers, name: str) -> dict[str, Any]:
    """The whole inspect object of one container."""
    data = json.loads(kit.ok("inspect", name, timeout=20))
    return dict(data[0])


def ping(kit: Containers, name: str, ip: str, wait: int = 2) -> bool:
    """Whether one ping from container *name* to *ip* is answered."""
    return kit.cli("exec", name, "ping", "-c1", f"-W{wait}", ip, timeout=20).returncode == 0


def host_veth(kit: Containers, name: str) -> str:
    """The host end of the container's eth0 (found by the peer's ifindex)."""
    index = kit.ok("exec", name, "cat", "/sys/class/net/eth0/iflink", timeout=20).strip()
    for line in host("ip", "-o", "link").stdout.splitlines():
        if line.split(":")[0] == index:
            return line.split(":")[1].strip().split("@")[0]
    raise AssertionError(f"no host link with index {index} for {name}")


def link_line(name: str) -> str:
    """The ``ip -o link`` line of a host link, or ""."""
    return host("ip", "-o", "link", "show", "dev", name).stdout.strip()


def nat_rules(bridge: str) -> str:
    """The daemon's nat chain ``DY-<bridge>`` as ``iptables -S`` prints it."""
    return host("iptables", "-w", "-t", "nat", "-S", f"DY-{bridge}").stdout


def default_mtu() -> int:
    """The MTU of the host's default-route device (1500 without one), early Docker's default."""
    words = host("ip", "-4", "route", "show", "default").stdout.split()
    if "dev" not in words:
        return 1500
    return int(Path(f"/sys/class/net/{words[words.index('dev') + 1]}/mtu").read_text())


def published(kit: Containers, name: str, key: str = "80/tcp") -> int:
    """The host port of 127.0.0.1 published for *key*, from ``dockyard port``."""
    out = kit.ok("port", name, key, timeout=20).split()
    assert len(out) == 1 and out[0].startswith("127.0.0.1:"), out
    return int(out[0].rsplit(":", 1)[1])


def proc_env(kit: Containers, name: str) -> dict[str, str]:
    """The environment of the container's main process (pid 1)."""
    raw = kit.ok("exec", name, "cat", "/proc/1/environ", timeout=20)
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def port_free(port: int) -> bool:
    """Whether the test can bind 127.0.0.1:*port* itself and listen on it (SO_REUSEADDR: the
    closed connections of an earlier GET may linger in TIME_WAIT, a listener may not)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


@pytest.fixture
def names(containers: Containers) -> Iterator[Callable[[], str]]:
    """Fresh container names on the shared daemon, removed at teardown."""
    made: list[str] = []

    def new() -> str:
        made.append(f"nb-{secrets.token_hex(4)}")
        return made[-1]

    yield new
    if made:
        containers.cli("rm", "-f", *made, timeout=60)


def run_d(kit: Containers, name: str, *flags: str, cmd: tuple[str, ...] = SLEEP) -> str:
    """Start a detached container; return its name."""
    kit.ok("run", "-d", "--name", name, *flags, *cmd, timeout=30)
    return name


# --- own daemons ----------------------------------------------------------------------------


def unused_subnet() -> int:
    """An X in 220..249 with no 10.215.X.0/24 address or route on the host."""
    text = host("ip", "-4", "addr").stdout + host("ip", "-4", "route").stdout
    free = [x for x in range(220, 250) if f"10.215.{x}." not in text]
    assert free, "no free 10.215.X.0/24 for a test daemon"
    return random.choice(free)


class OwnDaemon:
    """A daemon with this test's flags on its own bridge; can stop and start on one data root."""

    def __init__(self, base: Path, tar: Path, flags: tuple[str, ...]) -> None:
        self.base, self.tar = base, tar
        self.parent = f"dockyard-test-{secrets.token_hex(4)}"
        self.bridge = "dyt" + secrets.token_hex(4)
        self.bip = f"10.215.{unused_subnet()}.1/24"
        self.flags = ("--cgroup-parent", self.parent, "--bridge", self.bridge, "--bip", self.bip,
                      "--ip-forward=false", *flags)  # fmt: skip
        self.kit: Containers | None = None
        self.closed = False

    def start(self) -> Containers:
        """Start the daemon (importing busybox the first time); return its CLI helper."""
        first = self.kit is None
        self.kit = Containers(start(self.base / "d", *self.flags), self.parent)
        if first:
            with open(self.tar) as f:
                proc = subprocess.run(
                    [*DOCKYARD_CMD, "-H", self.kit.daemon.hosts[0], "import", "-",
                     "busybox:latest", "-c", 'CMD ["sh"]'],
                    stdin=f, capture_output=True, text=True, env=self.kit.daemon.env,
                    timeout=120, check=False,
                )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
        return self.kit

    @property
    def containers(self) -> Containers:
        """The CLI helper of the daemon as last started."""
        assert self.kit is not None
        return self.kit

    def running(self) -> bool:
        """Whether the daemon process is alive."""
        return self.kit is not None and self.kit.daemon.proc.poll() is None

    def stop(self) -> None:
        """Stop the daemon with SIGTERM (its containers keep running)."""
        if self.running():
            assert self.kit is not None
            self.kit.daemon.stop(signal.SIGTERM)

    def close(self) -> None:
        """Remove every container, stop the daemon and check nothing of it stays on the host."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.kit is not None and not self.running():
                self.start()
            if self.kit is not None:
                self.kit.remove_all()
        finally:
            self.stop()
            left = network_leftovers(self.bridge)
            remove_cgroups(self.parent)
            mounts = mounts_under(self.base)
            for mount in reversed(mounts):
                host("umount", "-l", mount)
            shutil.rmtree(self.base, ignore_errors=True)
            assert not mounts, f"mounts left behind: {mounts}"
            assert not left, f"network left behind: {left}"


@pytest.fixture
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., OwnDaemon]]:
    """Start daemons with extra flags; each is emptied, stopped and checked at teardown."""
    made: list[OwnDaemon] = []
    tar = busybox_tar(tmp_path_factory.getbasetemp())

    def new(*flags: str) -> OwnDaemon:
        made.append(OwnDaemon(tmp_path_factory.mktemp("own"), tar, flags))
        made[-1].start()
        return made[-1]

    try:
        yield new
    finally:
        errors = []
        for d in made:
            try:
                d.close()
            except Exception as exc:  # close them all, then report
                errors.append(exc)
        if errors:
            raise errors[0]


# --- 1. the default bridge -------------------------------------------------------------------


@pytest.mark.slow
def test_eth0_on_the_bridge_matches_inspect(containers: Containers, names: Any) -> None:
    bip = subnet_of(containers)
    name = run_d(containers, names())
    info = inspect_json(containers, name)
    ns = info["NetworkSettings"]
    ip = ipaddress.IPv4Address(ns["IPAddress"])
    assert ip in bip.network and ip != bip.ip, (ip, bip)
    assert ns["Gateway"] == str(bip.ip) and ns["IPPrefixLen"] == bip.network.prefixlen
    assert ns["MacAddress"] == "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)
    assert ns["Bridge"] == bridge_of(containers.daemon)
    net = ns["Networks"]["bridge"]
    assert (net["IPAddress"], net["Gateway"], net["MacAddress"], net["IPPrefixLen"]) == (
        ns["IPAddress"], ns["Gateway"], ns["MacAddress"], ns["IPPrefixLen"])  # fmt: skip
    addr = containers.ok("exec", name, "ip", "-o", "-4", "addr", "show", "eth0").split()
    assert addr[addr.index("inet") + 1] == f"{ip}/{bip.network.prefixlen}", addr
    routes = containers.ok("exec", name, "ip", "route").splitlines()
    assert any(r.split()[:5] == ["default", "via", str(bip.ip), "dev", "eth0"] for r in routes)
    mac = containers.ok("exec", name, "cat", "/sys/class/net/eth0/address").strip()
    assert mac == ns["MacAddress"]
    mtu = containers.ok("exec", name, "cat", "/sys/class/net/eth0/mtu").strip()
    assert int(mtu) == default_mtu()
    hosts = containers.ok("exec", name, "cat", "/etc/hosts").splitlines()
    assert f"{ip}\t{info['Id'][:12]}" in hosts, hosts
    assert containers.ok("exec", name, "hostname").strip() == info["Id"][:12]


@pytest.mark.slow
def test_two_containers_ping_each_other(containers: Containers, names: Any) -> None:
    a, b = run_d(containers, names()), run_d(containers, names())
    ip_a = containers.inspect(a, ".NetworkSettings.IPAddress")
    ip_b = containers.inspect(b, ".NetworkSettings.IPAddress")
    assert ip_a != ip_b
    assert ping(containers, a, ip_b) and ping(containers, b, ip_a)


def test_network_none_has_only_lo(containers: Containers) -> None:
    out = containers.ok("run", "--rm", "--network", "none", "busybox", "ls", "/sys/class/net")
    assert out.split() == ["lo"]


def test_network_host_sees_host_interfaces(containers: Containers) -> None:
    before = set(os.listdir("/sys/class/net"))
    out = containers.ok("run", "--rm", "--network", "host", "busybox", "ls", "/sys/class/net")
    after = set(os.listdir("/sys/class/net"))
    seen = set(out.split())
    # Other tests may add or remove links meanwhile: compare with what was there throughout.
    assert before & after <= seen <= before | after, (seen, before, after)


@pytest.mark.slow
def test_network_container_shares_its_interfaces(containers: Containers, names: Any) -> None:
    x = run_d(containers, names())
    ip = containers.inspect(x, ".NetworkSettings.IPAddress")
    script = "ip -o -4 addr show eth0; cat /sys/class/net/eth0/address; readlink /proc/self/ns/net"
    mine = containers.ok("exec", x, "sh", "-c", script)
    shared = containers.ok("run", "--rm", "--network", f"container:{x}", "busybox", "sh", "-c",
                           script)  # fmt: skip
    assert f"inet {ip}/" in shared and shared == mine


# --- 2. --icc=false --------------------------------------------------------------------------


@pytest.mark.slow
def test_icc_false_blocks_containers_but_not_the_gateway(own: Any) -> None:
    d = own("--icc=false")
    kit = d.containers
    a, b = run_d(kit, "a1"), run_d(kit, "b1")
    ip_a, ip_b = (kit.inspect(n, ".NetworkSettings.IPAddress") for n in (a, b))
    gateway = kit.inspect(a, ".NetworkSettings.Gateway")
    assert gateway == d.bip.split("/")[0]
    assert ping(kit, a, gateway) and ping(kit, b, gateway)
    assert not ping(kit, a, ip_b, wait=1) and not ping(kit, b, ip_a, wait=1)


# --- 3. published ports ----------------------------------------------------------------------


@pytest.mark.slow
def test_published_port_answers_http(containers: Containers, names: Any) -> None:
    web = run_d(containers, names(), "-p", "127.0.0.1:0:80", cmd=HTTPD)
    port = published(containers, web)
    assert containers.ok("port", web).strip() == f"80/tcp -> 127.0.0.1:{port}"
    ports = inspect_json(containers, web)["NetworkSettings"]["Ports"]
    assert ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert http_get(port) == "hi\n"


@pytest.mark.slow
def test_ps_shows_published_ports(containers: Containers, names: Any) -> None:
    web = run_d(containers, names(), "-p", "127.0.0.1:0:80", cmd=HTTPD)
    port = published(containers, web)
    rows = [r for r in containers.ok("ps", "--no-trunc").splitlines() if r.endswith(f" {web}")]
    assert len(rows) == 1 and f"127.0.0.1:{port}->80/tcp" in rows[0], rows


@pytest.mark.slow
def test_fixed_host_port(containers: Containers, names: Any) -> None:
    port = free_port()
    web = run_d(containers, names(), "-p", f"127.0.0.1:{port}:80", cmd=HTTPD)
    assert published(containers, web) == port
    assert http_get(port) == "hi\n"


@pytest.mark.slow
def test_udp_published_port_gets_datagrams(containers: Containers, names: Any) -> None:
    box = run_d(containers, names(), "-p", "127.0.0.1:0:9999/udp")
    port = published(containers, box, "9999/udp")
    assert containers.ok("port", box).strip() == f"9999/udp -> 127.0.0.1:{port}"
    pid = containers.inspect(box, ".State.Pid")
    server = subprocess.Popen(
        ["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", UDP_ECHO],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            s.connect(("127.0.0.1", port))
            deadline, got = time.monotonic() + 10, b""
            while not got and time.monotonic() < deadline:
                s.send(b"hello-udp")
                with contextlib.suppress(TimeoutError):
                    got = s.recv(2048)
        assert got == b"echo:hello-udp"
    finally:
        server.kill()
        server.wait(10)


def test_publish_all_uses_the_ephemeral_range(containers: Containers, names: Any) -> None:
    box = run_d(containers, names(), "-P", "--expose", "80", "--expose", "81")
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    lines = containers.ok("port", box).splitlines()
    assert {line.split(" -> ")[0] for line in lines} == {"80/tcp", "81/tcp"}, lines
    by_key = {line.split(" -> ")[0]: int(line.rsplit(":", 1)[1]) for line in lines}
    assert all(low <= p <= high for p in by_key.values()) and len(set(by_key.values())) == 2


def test_taken_host_port_fails_the_run(containers: Containers, names: Any) -> None:
    bridge = bridge_of(containers.daemon)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        name = names()
        proc = containers.cli("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:80", *SLEEP)
        state = containers.cli("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
        assert state in ("", "false"), state
        assert f"--dport {port} " not in nat_rules(bridge)
    assert "port is already allocated" in proc.stderr and str(port) in proc.stderr, proc.stderr
    assert proc.returncode == 125, proc.stderr


@pytest.mark.slow
def test_stop_frees_the_port_and_its_rule(containers: Containers, names: Any) -> None:
    bridge = bridge_of(containers.daemon)
    web = run_d(containers, names(), "-p", "127.0.0.1:0:80", cmd=HTTPD)
    port = published(containers, web)
    assert http_get(port) == "hi\n"
    ip = containers.inspect(web, ".NetworkSettings.IPAddress")
    assert f"--dport {port} -j DNAT --to-destination {ip}:80" in nat_rules(bridge)
    assert not port_free(port)
    containers.ok("stop", "-t", "1", web)
    assert port_free(port)
    assert f"--dport {port} " not in nat_rules(bridge)


# --- 4. links --------------------------------------------------------------------------------


def linked_pair(kit: Containers, names: Any) -> tuple[str, str, str, str]:
    """A running ``db`` (PASSWORD=x, 5432 exposed) and a parent linked to it as ``database``:
    (db name, db ip, db id, parent name)."""
    db = run_d(kit, names(), "-e", "PASSWORD=x", "--expose", "5432")
    parent = run_d(kit, names(), "--link", f"{db}:database")
    return db, kit.inspect(db, ".NetworkSettings.IPAddress"), kit.inspect(db, ".Id"), parent


def hosts_of(kit: Containers, name: str) -> list[str]:
    """The lines of a container's /etc/hosts."""
    return kit.ok("exec", name, "cat", "/etc/hosts", timeout=20).splitlines()


@pytest.mark.slow
def test_link_env_hosts_and_inspect(containers: Containers, names: Any) -> None:
    db, ip, db_id, parent = linked_pair(containers, names)
    env = proc_env(containers, parent)
    assert env["DATABASE_PORT_5432_TCP"] == f"tcp://{ip}:5432"
    assert env["DATABASE_PORT"] == f"tcp://{ip}:5432"
    assert env["DATABASE_PORT_5432_TCP_ADDR"] == ip
    assert env["DATABASE_PORT_5432_TCP_PORT"] == "5432"
    assert env["DATABASE_PORT_5432_TCP_PROTO"] == "tcp"
    assert env["DATABASE_NAME"] == f"/{parent}/database"
    assert env["DATABASE_ENV_PASSWORD"] == "x"
    assert f"{ip}\tdatabase {db_id[:12]} {db}" in hosts_of(containers, parent)
    links = inspect_json(containers, parent)["HostConfig"]["Links"]
    assert links == [f"/{db}:/{parent}/database"]


@pytest.mark.slow
def test_links_follow_renames_and_restart(containers: Containers, names: Any) -> None:
    db, ip, db_id, parent = linked_pair(containers, names)
    db2, parent2 = names(), names()
    containers.ok("rename", db, db2)
    links = inspect_json(containers, parent)["HostConfig"]["Links"]
    assert links == [f"/{db2}:/{parent}/database"]
    containers.ok("restart", "-t", "1", parent)
    env = proc_env(containers, parent)
    assert env["DATABASE_PORT_5432_TCP"] == f"tcp://{ip}:5432"
    assert env["DATABASE_ENV_PASSWORD"] == "x"
    assert f"{ip}\tdatabase {db_id[:12]} {db2}" in hosts_of(containers, parent)
    containers.ok("rename", parent, parent2)
    links = inspect_json(containers, parent2)["HostConfig"]["Links"]
    assert links == [f"/{db2}:/{parent2}/database"]
    containers.ok("restart", "-t", "1", parent2)
    assert proc_env(containers, parent2)["DATABASE_NAME"] == f"/{parent2}/database"


@pytest.mark.slow
def test_rm_link_removes_the_link(containers: Containers, names: Any) -> None:
    db, _, _, parent = linked_pair(containers, names)
    containers.ok("rm", "--link", f"/{parent}/database")
    assert inspect_json(containers, parent)["HostConfig"]["Links"] in (None, [])
    containers.ok("restart", "-t", "1", parent)
    assert not [k for k in proc_env(containers, parent) if k.startswith("DATABASE_")]
    assert not [line for line in hosts_of(containers, parent) if "database" in line]
    assert containers.inspect(db, ".State.Running") == "true"


def test_link_to_a_stopped_container_fails_the_start(containers: Containers, names: Any) -> None:
    db, parent = names(), names()
    containers.ok("create", "--name", db, *SLEEP)
    proc = containers.cli("run", "--name", parent, "--link", f"{db}:dbx", "busybox", "true")
    assert "Cannot link to a non running container" in proc.stderr, proc.stderr
    assert f"/{db} AS /{parent}/dbx" in proc.stderr, proc.stderr
    assert containers.inspect(parent, ".State.Running") == "false"
    assert proc.returncode == 125


def test_link_to_a_missing_container_fails_the_create(containers: Containers, names: Any) -> None:
    parent, missing = names(), names()
    proc = containers.cli("create", "--name", parent, "--link", f"{missing}:dbx", *SLEEP)
    assert proc.returncode == 125
    assert f"could not get container for {missing}" in proc.stderr.lower(), proc.stderr
    assert containers.cli("inspect", parent).returncode != 0


# --- 5. daemon restart -----------------------------------------------------------------------


@pytest.mark.slow
def test_daemon_restart_keeps_addresses_and_ports(own: Any) -> None:
    d = own("--mtu", "1380")
    kit = d.containers
    web = run_d(kit, "web", "-p", "127.0.0.1:0:80", cmd=HTTPD)
    ip = kit.inspect(web, ".NetworkSettings.IPAddress")
    port = published(kit, web)
    assert http_get(port) == "hi\n"
    d.stop()
    kit = d.start()
    assert kit.inspect(web, ".State.Running") == "true"
    assert kit.inspect(web, ".NetworkSettings.IPAddress") == ip
    assert f"inet {ip}/24 " in kit.ok("exec", web, "ip", "-o", "-4", "addr", "show", "eth0")
    assert published(kit, web) == port
    assert http_get(port) == "hi\n"
    assert f"--dport {port} -j DNAT --to-destination {ip}:80" in nat_rules(d.bridge)
    new = run_d(kit, "new")
    new_ip = kit.inspect(new, ".NetworkSettings.IPAddress")
    assert new_ip not in (ip, d.bip.split("/")[0])
    assert ipaddress.IPv4Address(new_ip) in ipaddress.IPv4Interface(d.bip).network
    assert kit.ok("exec", new, "cat", "/sys/class/net/eth0/mtu").strip() == "1380"
    assert ping(kit, new, ip)


# --- 6. what a stopped daemon leaves ---------------------------------------------------------


@pytest.mark.slow
def test_daemon_stop_after_rm_leaves_nothing(own: Any) -> None:
    d = own()
    kit = d.containers
    a, b = run_d(kit, "a1"), run_d(kit, "b1")
    veths = [host_veth(kit, n) for n in (a, b)]
    assert all(f"master {d.bridge} " in link_line(v) for v in veths), veths
    kit.ok("stop", "-t", "1", a)
    assert not link_line(veths[0]), "a stopped container's veth stays"
    kit.ok("rm", "-f", a, b)
    assert not link_line(veths[1])
    d.close()
    assert network_leftovers(d.bridge) == []
    assert [v for v in veths if link_line(v)] == []


@pytest.mark.slow
def test_daemon_stop_keeps_a_running_container_s_network(own: Any) -> None:
    d = own()
    kit = d.containers
    box = run_d(kit, "keep")
    veth = host_veth(kit, box)
    pid = kit.inspect(box, ".State.Pid")
    gateway = kit.inspect(box, ".NetworkSettings.Gateway")
    d.stop()
    assert link_line(d.bridge), "the bridge went with the daemon"
    assert f"master {d.bridge} " in link_line(veth)
    status = Path(f"/proc/{pid}/status").read_text()
    assert "\nState:\tS" in status or "\nState:\tR" in status, status
    kit = d.start()
    assert kit.inspect(box, ".State.Running") == "true"
    assert host_veth(kit, box) == veth
    assert ping(kit, box, gateway)
    kit.ok("rm", "-f", box)
    d.close()
    assert not link_line(veth) and network_leftovers(d.bridge) == []
