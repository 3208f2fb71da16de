"""User-defined bridge networks on a real daemon, checked against Docker's behaviour.

Covers ``network create/ls/inspect/rm/prune``, the embedded DNS (names, short ids, aliases,
``resolv.conf``), ``network connect/disconnect``, isolation between networks with forwarding on,
``--internal`` networks, fixed and exhausted addresses, and a daemon restart. Where dockerd's
behaviour is surprising the test follows dockerd and says so: ``network prune`` counts only
running containers, and ``-p`` on an internal network is accepted and publishes nothing.

Every network here is ``dyn-<hex>`` on ``10.215.X.0/24`` (X in 100..199, one per network or
daemon in this file) and every container ``un-<hex>``; the ``lab`` fixture removes both even when
a test fails. Tests needing special daemon flags start their own daemon (``own`` fixture), torn
down the way the shared ``containers`` fixture tears down its own.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.conftest import Daemon, start
from tests.linux.containerkit import (
    DOCKYARD_CMD,
    Containers,
    busybox_tar,
    containers,
    mounts_under,
    needs_root,
    network_leftovers,
    remove_cgroups,
)

pytestmark = needs_root
__all__ = ["containers"]

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
SLEEP = ("busybox", "sleep", "600")


def host(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command on the host."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)


class Lab:
    """One test's networks and containers on a daemon, removed at the end."""

    def __init__(self, kit: Containers) -> None:
        self.kit = kit
        self.networks: list[str] = []
        self.names: list[str] = []

    def name(self) -> str:
        """A fresh container name, removed at teardown."""
        name = f"un-{secrets.token_hex(4)}"
        self.names.append(name)
        return name

    def network(self, x: int, *flags: str, subnet: str = "") -> tuple[str, str]:
        """Create ``dyn-<hex>`` on 10.215.X.0/24 (or *subnet*); return (name, id)."""
        name = f"dyn-{secrets.token_hex(4)}"
        self.networks.append(name)
        out = self.kit.ok("network", "create", "--subnet", subnet or f"10.215.{x}.0/24", *flags,
                          name, timeout=30)  # fmt: skip
        return name, out.strip()

    def run(self, network: str, *flags: str, cmd: tuple[str, ...] = SLEEP) -> str:
        """Start a detached container on *network*; return its name."""
        name = self.name()
        self.kit.ok("run", "-d", "--network", network, "--name", name, *flags, *cmd, timeout=30)
        return name

    def close(self) -> None:
        """Remove the containers, then the networks; fail if a network stays."""
        existing = [n for n in self.names if self.kit.cli("inspect", n, timeout=20).returncode == 0]
        if existing:
            self.kit.cli("rm", "-f", *existing, timeout=60)
        left = []
        for net in self.networks:
            if self.kit.cli("network", "inspect", net, timeout=20).returncode == 0:
                proc = self.kit.cli("network", "rm", net, timeout=30)
                if proc.returncode != 0:
                    left.append(f"{net}: {proc.stderr.strip()}")
        assert not left, f"networks left behind: {left}"


@pytest.fixture
def lab(containers: Containers) -> Iterator[Lab]:
    """A Lab on the module's shared daemon."""
    kit = Lab(containers)
    try:
        yield kit
    finally:
        kit.close()


def inspect_json(kit: Containers, *argv: str) -> dict[str, Any]:
    """The first object of ``inspect`` output (``network inspect`` when argv says so)."""
    data = json.loads(kit.ok(*argv, timeout=20))
    assert isinstance(data, list) and len(data) == 1, data
    return dict(data[0])


def ip_on(kit: Containers, container: str, network: str) -> str:
    """The container's address on *network*, from inspect ``NetworkSettings.Networks``."""
    networks = inspect_json(kit, "inspect", container)["NetworkSettings"]["Networks"] or {}
    assert network in networks, f"{container} not on {network}: {sorted(networks)}"
    return str(networks[network]["IPAddress"])


def addresses(kit: Containers, container: str) -> dict[str, str]:
    """Interface → IPv4 address/prefix inside *container* (``ip -o -4 addr``)."""
    out = kit.ok("exec", container, "ip", "-o", "-4", "addr", timeout=20)
    found = {}
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            found[fields[1].split("@")[0]] = fields[fields.index("inet") + 1]
    return found


def resolve(kit: Containers, asker: str, name: str) -> tuple[int, list[str]]:
    """Exit code and the answered addresses of ``nslookup NAME`` run in *asker*, bounded to 6 s
    inside (the daemon forwards names it does not own upstream) and 20 s outside."""
    proc = kit.cli("exec", asker, "timeout", "6", "nslookup", name, timeout=20)
    return proc.returncode, answers(proc.stdout)


def answers(text: str) -> list[str]:
    """The addresses in nslookup output after its ``Name:`` lines (the server's are before)."""
    found, after_name = [], False
    for line in text.splitlines():
        if line.startswith("Name:"):
            after_name = True
        elif after_name and line.startswith("Address"):
            found.append(line.split(":", 1)[1].strip().split()[0])
    return found


def in_subnet(address: str, subnet: str) -> bool:
    """Whether ``a.b.c.d[/n]`` lies in *subnet*."""
    return ipaddress.IPv4Address(address.split("/")[0]) in ipaddress.IPv4Network(subnet)


# -- create, inspect, rm, prune ------------------------------------------------------------------


def test_create_inspect_and_host_bridge(lab: Lab) -> None:
    kit = lab.kit
    name, id = lab.network(100, "--label", "team=net", "--label", "tier=db",
                           "-o", "com.docker.network.driver.mtu=1400")  # fmt: skip
    assert len(id) == 64 and all(c in "0123456789abcdef" for c in id), id
    rows = [line.split() for line in kit.ok("network", "ls", timeout=20).splitlines()[1:]]
    assert [id[:12], name, "bridge", "local"] in rows, rows
    net = inspect_json(kit, "network", "inspect", name)
    assert net["Id"] == id and net["Name"] == name
    assert net["Driver"] == "bridge" and net["Scope"] == "local"
    assert net["IPAM"]["Config"] == [{"Subnet": "10.215.100.0/24", "Gateway": "10.215.100.1"}]
    assert net["Labels"] == {"team": "net", "tier": "db"}
    assert net["Internal"] is False
    assert net["Options"] == {"com.docker.network.driver.mtu": "1400"}
    assert net["Containers"] == {}
    assert inspect_json(kit, "network", "inspect", id[:12])["Name"] == name
    link = host("ip", "-o", "-4", "addr", "show", "dev", f"br-{id[:12]}")
    assert link.returncode == 0, link.stderr
    assert "inet 10.215.100.1/24 " in link.stdout, link.stdout


def test_create_refusals(lab: Lab) -> None:
    kit = lab.kit
    name, _ = lab.network(101)
    again = kit.cli("network", "create", "--subnet", "10.215.102.0/24", name, timeout=30)
    assert again.returncode != 0
    assert f"network with name {name} already exists" in again.stderr, again.stderr
    refused = [f"dyn-{secrets.token_hex(4)}" for _ in range(2)]
    lab.networks += refused  # removed at teardown should the engine accept them
    overlap = kit.cli("network", "create", "--subnet", "10.215.101.128/25", refused[0], timeout=30)
    assert overlap.returncode != 0
    assert "Pool overlaps with other one on this address space" in overlap.stderr, overlap.stderr
    assert "10.215.101.0/24" in overlap.stderr, f"the overlapped subnet unnamed: {overlap.stderr}"
    macvlan = kit.cli("network", "create", "--driver", "macvlan", "--subnet", "10.215.103.0/24",
                      refused[1], timeout=30)  # fmt: skip
    assert macvlan.returncode != 0 and "macvlan" in macvlan.stderr, macvlan.stderr
    names = {json.loads(line)["Name"] for line in
             kit.ok("network", "ls", "--json", timeout=20).splitlines()}  # fmt: skip
    assert name in names and names.isdisjoint(refused), names


@pytest.mark.slow
def test_rm_with_active_endpoint_then_after_stop(lab: Lab) -> None:
    kit = lab.kit
    name, id = lab.network(104)
    ctr = lab.run(name)
    busy = kit.cli("network", "rm", name, timeout=30)
    assert busy.returncode != 0
    assert "has active endpoints" in busy.stderr, busy.stderr
    assert inspect_json(kit, "network", "inspect", name)["Id"] == id
    kit.ok("stop", "-t", "1", ctr, timeout=30)
    assert kit.ok("network", "rm", name, timeout=30).strip() == name
    assert kit.cli("network", "inspect", name, timeout=20).returncode != 0
    assert host("ip", "link", "show", f"br-{id[:12]}").returncode != 0
    assert network_leftovers(f"br-{id[:12]}") == []


def pruned(kit: Containers) -> list[str]:
    """``network prune -f``: the names it reports deleted."""
    out = kit.ok("network", "prune", "-f", timeout=60)
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return lines[1:] if lines and lines[0] == "Deleted Networks:" else lines


@pytest.mark.slow
def test_prune_removes_unused_keeps_one_in_use(lab: Lab) -> None:
    kit = lab.kit
    unused, _ = lab.network(105)
    used, _ = lab.network(106)
    lab.run(used)
    deleted = pruned(kit)
    assert unused in deleted and used not in deleted, deleted
    assert kit.cli("network", "inspect", unused, timeout=20).returncode != 0
    assert inspect_json(kit, "network", "inspect", used)["Name"] == used


@pytest.mark.slow
def test_prune_counts_only_running_containers(lab: Lab) -> None:
    # dockerd's localNetworksPrune keeps a network only while it has endpoints, i.e. running
    # containers: one that only a stopped container is connected to is removed (docker 28 too).
    kit = lab.kit
    name, _ = lab.network(107)
    ctr = lab.run(name)
    kit.ok("stop", "-t", "1", ctr, timeout=30)
    assert name in pruned(kit)
    assert kit.cli("network", "inspect", name, timeout=20).returncode != 0


# -- DNS -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dns_names_aliases_and_short_ids(lab: Lab) -> None:
    kit = lab.kit
    net, _ = lab.network(110)
    other, _ = lab.network(111)
    a = lab.run(net)
    b = lab.run(net, "--network-alias", "db-alias")
    asker = lab.run(net)
    stranger = lab.run(other)
    ip_a, ip_b = ip_on(kit, a, net), ip_on(kit, b, net)
    assert in_subnet(ip_a, "10.215.110.0/24") and in_subnet(ip_b, "10.215.110.0/24")
    short_b = kit.inspect(b, ".Id")[:12]
    for query, wanted in ((a, ip_a), ("db-alias", ip_b), (short_b, ip_b), (a.upper(), ip_a)):
        code, got = resolve(kit, asker, query)
        assert code == 0 and got == [wanted], f"nslookup {query}: {code} {got}"
    ping = kit.cli("exec", asker, "ping", "-c1", "-W2", a, timeout=20)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert f"({ip_a})" in ping.stdout or ip_a in ping.stdout, ping.stdout
    resolv = kit.ok("exec", asker, "cat", "/etc/resolv.conf", timeout=20)
    lines = [ln.split() for ln in resolv.splitlines() if ln.strip() and not ln.startswith("#")]
    assert [ln for ln in lines if ln[0] == "nameserver"] == [["nameserver", "127.0.0.11"]], resolv
    assert ["options", "ndots:0"] in lines, resolv
    ip_stranger = ip_on(kit, stranger, other)
    started = time.monotonic()
    code, got = resolve(kit, asker, stranger)
    assert code != 0 and ip_stranger not in got, f"{stranger} on another network: {code} {got}"
    assert time.monotonic() - started < 15
    code, got = resolve(kit, stranger, a)
    assert code != 0 and ip_a not in got, f"{a} seen from another network: {code} {got}"


@pytest.mark.slow
def test_dns_from_a_new_container(lab: Lab) -> None:
    kit = lab.kit
    net, _ = lab.network(112)
    a = lab.run(net)
    out = kit.ok("run", "--rm", "--network", net, "busybox", "nslookup", a, timeout=30)
    assert answers(out) == [ip_on(kit, a, net)], out


# -- connect and disconnect ------------------------------------------------------------------


@pytest.mark.slow
def test_connect_and_disconnect_running_container(lab: Lab) -> None:
    kit = lab.kit
    net, id = lab.network(120)
    c = lab.name()
    kit.ok("run", "-d", "--name", c, *SLEEP, timeout=30)  # on the default bridge
    asker = lab.run(net)
    assert set(addresses(kit, c)) == {"lo", "eth0"}
    kit.ok("network", "connect", net, c, timeout=30)
    addrs = addresses(kit, c)
    assert "eth1" in addrs and in_subnet(addrs["eth1"], "10.215.120.0/24"), addrs
    assert addrs["eth1"].split("/")[0] == ip_on(kit, c, net)
    assert c in {v["Name"] for v in
                 inspect_json(kit, "network", "inspect", net)["Containers"].values()}  # fmt: skip
    code, got = resolve(kit, asker, c)
    assert code == 0 and got == [addrs["eth1"].split("/")[0]], (code, got)

    twice = kit.cli("network", "connect", net, c, timeout=30)
    assert twice.returncode != 0 and "already exists" in twice.stderr, twice.stderr

    kit.ok("network", "disconnect", net, c, timeout=30)
    assert "eth1" not in addresses(kit, c)
    assert net not in (inspect_json(kit, "inspect", c)["NetworkSettings"]["Networks"] or {})
    code, got = resolve(kit, asker, c)
    assert code != 0 and got == [], f"{c} still resolves after disconnect: {got}"
    again = kit.cli("network", "disconnect", net, c, timeout=30)
    assert again.returncode != 0 and "is not connected to network" in again.stderr, again.stderr
    assert host("ip", "link", "show", f"br-{id[:12]}").returncode == 0  # the network stays


@pytest.mark.slow
def test_connect_stopped_container_and_fixed_ip(lab: Lab) -> None:
    kit = lab.kit
    net, _ = lab.network(121)
    s = lab.name()
    kit.ok("create", "--name", s, *SLEEP, timeout=30)
    kit.ok("network", "connect", net, s, timeout=30)
    assert net in (inspect_json(kit, "inspect", s)["NetworkSettings"]["Networks"] or {})
    kit.ok("start", s, timeout=30)
    addrs = addresses(kit, s)
    assert any(in_subnet(a, "10.215.121.0/24") for a in addrs.values()), addrs

    f = lab.name()
    kit.ok("run", "-d", "--name", f, *SLEEP, timeout=30)
    kit.ok("network", "connect", "--ip", "10.215.121.50", net, f, timeout=30)
    assert addresses(kit, f).get("eth1") == "10.215.121.50/24"
    assert ip_on(kit, f, net) == "10.215.121.50"

    g = lab.name()
    kit.ok("run", "-d", "--name", g, *SLEEP, timeout=30)
    outside = kit.cli("network", "connect", "--ip", "10.215.199.9", net, g, timeout=30)
    assert outside.returncode != 0, "an address outside the subnet was accepted"
    assert "10.215.199.9" in outside.stderr, outside.stderr
    assert "eth1" not in addresses(kit, g)


# -- isolation, on a daemon with forwarding on -------------------------------------------------


class Own:
    """A daemon of this file with its own flags, busybox imported, restartable."""

    def __init__(self, base: Path, tar: Path, x: int, *flags: str) -> None:
        tag = secrets.token_hex(4)
        self.base, self.tar, self.parent = base, tar, f"dockyard-test-{tag}"
        self.bridge = f"dyt{tag}"
        self.args = ["--cgroup-parent", self.parent, "--bridge", self.bridge,
                     "--bip", f"10.215.{x}.1/24", *flags]  # fmt: skip
        self.daemon: Daemon | None = None
        self.kit: Containers | None = None

    def start(self) -> Containers:
        """Start (or start again) the daemon on the same data root with the same flags."""
        first = self.daemon is None
        self.daemon = start(self.base / "d", *self.args)
        self.kit = Containers(self.daemon, self.parent)
        if first:
            with open(self.tar) as f:
                proc = subprocess.run(
                    [*DOCKYARD_CMD, "-H", self.daemon.hosts[0], "import", "-", "busybox:latest",
                     "-c", 'CMD ["sh"]'],
                    stdin=f, capture_output=True, text=True, env=self.daemon.env, timeout=120,
                    check=False,
                )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
        return self.kit

    def stop(self) -> None:
        """Stop the daemon with SIGTERM (containers keep running)."""
        if self.daemon is not None and self.daemon.proc.poll() is None:
            self.daemon.stop(signal.SIGTERM)

    def close(self, labs: list[Lab]) -> None:
        """Remove containers and networks (daemon started if needed), stop, check leftovers."""
        problems: list[str] = []
        try:
            if labs and self.daemon is not None and self.daemon.proc.poll() is not None:
                self.start()  # a test stopped it with things left to remove
            for lab in labs:
                try:
                    lab.close()
                except AssertionError as exc:
                    problems.append(str(exc))
            if self.kit is not None:
                self.kit.remove_all()
        finally:
            self.stop()
            problems += network_leftovers(self.bridge)
            remove_cgroups(self.parent)
            left = mounts_under(self.base)
            for mount in reversed(left):
                subprocess.run(["umount", "-l", mount], check=False, timeout=20)
            shutil.rmtree(self.base, ignore_errors=True)
        assert not left, f"mounts left behind: {left}"
        assert not problems, f"left behind: {problems}"


@pytest.fixture
def own(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Own]]:
    """Make daemons with special flags; each is cleaned up at teardown."""
    made: list[tuple[Own, list[Lab]]] = []
    tar = busybox_tar(tmp_path_factory.getbasetemp())

    def make(x: int, *flags: str, labs: list[Lab] | None = None) -> Own:
        daemon = Own(tmp_path / f"own{len(made)}", tar, x, *flags)
        made.append((daemon, labs if labs is not None else []))
        daemon.start()
        return daemon

    try:
        yield make
    finally:
        errors = []
        for daemon, labs in made:
            try:
                daemon.close(labs)
            except AssertionError as exc:
                errors.append(str(exc))
        assert not errors, errors


@pytest.mark.slow
def test_networks_are_isolated_with_forwarding_on(own: Callable[..., Own]) -> None:
    before = IP_FORWARD.read_text().strip()
    labs: list[Lab] = []
    d = own(130, "--ip-forward=true", labs=labs)
    assert d.kit is not None
    lab = Lab(d.kit)
    labs.append(lab)
    kit = lab.kit
    assert IP_FORWARD.read_text().strip() == "1"
    net_a, _ = lab.network(131)
    net_b, _ = lab.network(132)
    a1, a2, b1 = lab.run(net_a), lab.run(net_a), lab.run(net_b)
    ip_a2, ip_b1 = ip_on(kit, a2, net_a), ip_on(kit, b1, net_b)
    same = kit.cli("exec", a1, "ping", "-c1", "-W2", ip_a2, timeout=20)
    assert same.returncode == 0, same.stdout + same.stderr
    routes = kit.ok("exec", a1, "ip", "route", timeout=20)
    assert "default via 10.215.131.1" in routes, routes  # B is reachable by routing alone
    across = kit.cli("exec", a1, "ping", "-c1", "-W2", ip_b1, timeout=20)
    assert across.returncode != 0, f"A reached B at {ip_b1}:\n{across.stdout}"
    back = kit.cli("exec", b1, "ping", "-c1", "-W2", ip_a2, timeout=20)
    assert back.returncode != 0, f"B reached A at {ip_a2}:\n{back.stdout}"
    lab.close()
    labs.remove(lab)
    d.kit.remove_all()
    d.stop()
    assert IP_FORWARD.read_text().strip() == before, "ip_forward not restored at daemon stop"


# -- internal networks and addresses ---------------------------------------------------------


@pytest.mark.slow
def test_internal_network(lab: Lab) -> None:
    kit = lab.kit
    net, _ = lab.network(140, "--internal")
    assert inspect_json(kit, "network", "inspect", net)["Internal"] is True
    i1, i2 = lab.run(net), lab.run(net)
    routes = [r for r in kit.ok("exec", i1, "ip", "route", timeout=20).splitlines() if r.strip()]
    assert len(routes) == 1 and routes[0].startswith("10.215.140.0/24 dev eth0"), routes
    ping = kit.cli("exec", i1, "ping", "-c1", "-W2", ip_on(kit, i2, net), timeout=20)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    code, got = resolve(kit, i1, i2)
    assert code == 0 and got == [ip_on(kit, i2, net)], (code, got)
    # dockerd accepts -p on an internal network and publishes nothing (moby#36174): the
    # container runs, ``port`` is empty and no host port is bound.
    web = lab.run(net, "-p", "127.0.0.1:0:80")
    assert kit.inspect(web, ".State.Status") == "running"
    assert kit.ok("port", web, timeout=20).strip() == ""
    ports = inspect_json(kit, "inspect", web)["NetworkSettings"]["Ports"] or {}
    assert not any(ports.values()), f"host ports bound on an internal network: {ports}"


@pytest.mark.slow
def test_fixed_ip_and_address_in_use(lab: Lab) -> None:
    kit = lab.kit
    net, _ = lab.network(150)
    first = lab.run(net, "--ip", "10.215.150.77")
    assert ip_on(kit, first, net) == "10.215.150.77"
    assert addresses(kit, first).get("eth0") == "10.215.150.77/24"
    name = lab.name()
    clash = kit.cli("run", "-d", "--network", net, "--ip", "10.215.150.77", "--name", name,
                    *SLEEP, timeout=30)  # fmt: skip
    assert clash.returncode != 0
    assert "Address already in use" in clash.stderr, clash.stderr


@pytest.mark.slow
def test_small_subnet_runs_out_of_addresses(lab: Lab) -> None:
    kit = lab.kit
    net, _ = lab.network(151, subnet="10.215.151.0/29")
    five = {lab.run(net): "" for _ in range(5)}
    for name in five:
        five[name] = ip_on(kit, name, net)
    assert sorted(five.values()) == [f"10.215.151.{n}" for n in range(2, 7)], five
    sixth = lab.name()
    full = kit.cli("run", "-d", "--network", net, "--name", sixth, *SLEEP, timeout=30)
    assert full.returncode != 0
    assert "no available IPv4 addresses" in full.stderr, full.stderr
    # A stopped container gives its address back: the sixth starts with it.
    first = next(iter(five))
    kit.ok("stop", "-t", "1", first, timeout=30)
    kit.ok("start", sixth, timeout=30)
    assert ip_on(kit, sixth, net) == five[first]


# -- daemon restart ----------------------------------------------------------------------------


@pytest.mark.slow
def test_running_container_keeps_ip_and_name_across_daemon_restart(
    own: Callable[..., Own],
) -> None:
    labs: list[Lab] = []
    d = own(160, labs=labs)
    assert d.kit is not None
    lab = Lab(d.kit)
    labs.append(lab)
    net, _ = lab.network(161)
    keeper = lab.run(net)
    ip = ip_on(lab.kit, keeper, net)
    pid = lab.kit.inspect(keeper, ".State.Pid")
    d.stop()
    assert Path(f"/proc/{pid}").exists(), "the container died with the daemon"
    kit = d.start()
    lab.kit = kit
    assert kit.inspect(keeper, ".State.Status") == "running"
    assert kit.inspect(keeper, ".State.Pid") == pid
    assert ip_on(kit, keeper, net) == ip
    assert addresses(kit, keeper).get("eth0") == f"{ip}/24"
    out = kit.ok("run", "--rm", "--network", net, "busybox", "nslookup", keeper, timeout=30)
    assert answers(out) == [ip], out
    asker = lab.run(net)
    code, got = resolve(kit, asker, keeper)
    assert code == 0 and got == [ip], (code, got)
