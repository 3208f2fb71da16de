"""The real ``docker`` CLI (28.x) against dockyard's networking: published ports (``-p``,
``-P --expose``) served from the host's loopback, ``docker port`` and the PORTS column, the
default bridge's addresses, user-defined networks (create, ls, inspect, run --network with an
alias, connect, disconnect, rm) and legacy links (``--link``, ``rm --link``). The daemon and the
container cleanup come from ``tests/compat/conftest.py``; every network a test creates is removed
by the ``networks`` fixture here, with the containers still attached to it.

Traffic goes only to 127.0.0.1 (published ports) and between the test's own containers.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import Compat, needs_docker
from tests.linux.containerkit import http_get, network_leftovers

pytestmark = needs_docker

LOOP = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.1; done"


def web(page: str) -> str:
    """A shell command serving *page* as ``/index.html`` on port 80 (busybox httpd)."""
    return f"mkdir -p /www && echo {page} > /www/index.html && httpd -f -p 80 -h /www"


def free_port(host: str = "0.0.0.0") -> int:
    """A TCP port nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def fetch_in(dockyard: Compat, name: str, url: str, timeout: float = 10) -> str:
    """``wget`` *url* inside container *name*, retrying until it answers; the body. Bounded by
    the ``timeout`` applet: Debian's static busybox wget crashes with its own ``-T``."""
    deadline = time.monotonic() + timeout
    while True:
        proc = dockyard.docker("exec", name, "timeout", "5", "wget", "-q", "-O", "-", url)
        if proc.returncode == 0:
            return proc.stdout
        assert time.monotonic() < deadline, f"{name}: wget {url}: {proc.stderr}\n{dockyard.tail()}"
        time.sleep(0.1)


def resolve_in(dockyard: Compat, name: str, query: str) -> list[str]:
    """The addresses busybox ``nslookup QUERY`` answers inside container *name* (the embedded
    server answers names of the container's networks itself)."""
    proc = dockyard.docker("exec", name, "timeout", "5", "nslookup", query, timeout=20)
    found, after_name = [], False
    for line in proc.stdout.splitlines():
        if line.startswith("Name:"):
            after_name = True
        elif after_name and line.startswith("Address"):
            found.append(line.split(":", 1)[1].strip().split()[0])
    return found


def bridge_subnet(dockyard: Compat) -> ipaddress.IPv4Network:
    """The default ``bridge`` network's subnet, as the daemon reports it."""
    out = dockyard.ok(
        "network", "inspect", "bridge", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}"
    )
    return ipaddress.IPv4Network(out.strip())


def link_exists(name: str) -> bool:
    """Whether the host has a network interface *name*."""
    proc = subprocess.run(
        ["ip", "-o", "link", "show", name], capture_output=True, text=True, timeout=10, check=False
    )
    return proc.returncode == 0


class Networks:
    """User-defined networks a test creates; all removed at teardown."""

    def __init__(self, dockyard: Compat) -> None:
        self.dockyard, self.names = dockyard, list[str]()

    def create(self, *argv: str) -> tuple[str, str]:
        """``docker network create ARGV NAME`` with a unique name; (name, id)."""
        name = self.dockyard.unique("net")
        self.names.append(name)
        out = self.dockyard.ok("network", "create", *argv, name)
        return name, out.strip()

    def remove_all(self) -> list[str]:
        """Remove each network (and the containers on it); what could not be removed."""
        failed = []
        for name in self.names:
            proc = self.dockyard.docker(
                "network", "inspect", name, "-f", "{{range $id, $c := .Containers}}{{$id}} {{end}}"
            )
            if proc.returncode != 0:
                continue  # the test removed it
            for cid in proc.stdout.split():
                self.dockyard.docker("rm", "-f", cid)
            rm = self.dockyard.docker("network", "rm", name)
            if rm.returncode != 0:
                failed.append(f"{name}: {rm.stderr}")
        return failed


@pytest.fixture
def networks(dockyard: Compat) -> Iterator[Networks]:
    """Creates networks for a test and removes them, pass or fail."""
    nets = Networks(dockyard)
    yield nets
    failed = nets.remove_all()
    assert not failed, f"networks left behind: {failed}"


def test_published_port_serves_the_page(dockyard: Compat) -> None:
    port, name = free_port(), dockyard.unique("web")
    dockyard.ok(
        "run", "-d", "-p", f"{port}:80", "--name", name, "busybox", "sh", "-c", web("hello-port")
    )
    assert http_get(port) == "hello-port\n"

    lines = dockyard.ok("port", name).splitlines()
    assert lines[0] == f"80/tcp -> 0.0.0.0:{port}", lines
    assert all(line.startswith("80/tcp -> ") and line.endswith(f":{port}") for line in lines)
    assert dockyard.ok("port", name, "80").splitlines()[0] == f"0.0.0.0:{port}"
    assert dockyard.ok("port", name, "80/tcp").splitlines()[0] == f"0.0.0.0:{port}"

    ports = dockyard.ok("ps", "--filter", f"name={name}", "--format", "{{.Ports}}").strip()
    assert f"0.0.0.0:{port}->80/tcp" in ports.split(", "), ports
    table = dockyard.ok("ps", "--filter", f"name={name}").splitlines()
    assert "PORTS" in table[0].split() and f"0.0.0.0:{port}->80/tcp" in table[1], table

    bindings = json.loads(dockyard.ok("inspect", "-f", "{{json .NetworkSettings.Ports}}", name))
    assert bindings["80/tcp"][0] == {"HostIp": "0.0.0.0", "HostPort": str(port)}, bindings
    host = json.loads(dockyard.ok("inspect", "-f", "{{json .HostConfig.PortBindings}}", name))
    assert host == {"80/tcp": [{"HostIp": "", "HostPort": str(port)}]}, host

    address = dockyard.ok("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).strip()
    assert address, "no IPAddress on the default bridge"
    subnet = bridge_subnet(dockyard)
    assert ipaddress.IPv4Address(address) in subnet, (address, subnet)
    args = [str(a) for a in dockyard.daemon.proc.args]  # type: ignore[union-attr]
    if "--bip" in args:
        assert subnet == ipaddress.IPv4Interface(args[args.index("--bip") + 1]).network
    gateway = dockyard.ok("inspect", "-f", "{{.NetworkSettings.Gateway}}", name).strip()
    assert ipaddress.IPv4Address(gateway) in subnet and gateway != address


def test_published_port_taken_by_a_container(dockyard: Compat) -> None:
    port = free_port()
    first, second = dockyard.unique("holder"), dockyard.unique("loser")
    dockyard.ok("run", "-d", "-p", f"{port}:80", "--name", first, "busybox", "sh", "-c", LOOP)
    proc = dockyard.docker(
        "run", "-d", "-p", f"{port}:80", "--name", second, "busybox", "sh", "-c", LOOP
    )
    assert proc.returncode == 125, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("docker: Error response from daemon: "), proc.stderr
    assert str(port) in proc.stderr, proc.stderr
    assert "already allocated" in proc.stderr or "already in use" in proc.stderr, proc.stderr
    state = dockyard.ok("inspect", "-f", "{{.State.Status}} {{.State.Running}}", second)
    assert state == "created false\n", state
    assert dockyard.ok("inspect", "-f", "{{.State.Status}}", first) == "running\n"
    assert dockyard.ok("port", first, "80").splitlines()[0] == f"0.0.0.0:{port}"


def test_published_port_taken_on_the_host(dockyard: Compat) -> None:
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen(1)
        port = int(held.getsockname()[1])
        name = dockyard.unique("blocked")
        proc = dockyard.docker(
            "run", "-d", "-p", f"{port}:80", "--name", name, "busybox", "sh", "-c", LOOP
        )
    assert proc.returncode == 125, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("docker: Error response from daemon: "), proc.stderr
    # dockerd: "failed to bind host port for 0.0.0.0:PORT:...: address already in use"
    assert str(port) in proc.stderr, proc.stderr
    assert "address already in use" in proc.stderr, proc.stderr
    assert dockyard.ok("inspect", "-f", "{{.State.Status}}", name) == "created\n"


def test_publish_all_exposed_ports_on_ephemeral_ports(dockyard: Compat) -> None:
    name = dockyard.unique("pall")
    dockyard.ok(
        "run", "-d", "-P", "--expose", "80", "--name", name, "busybox", "sh", "-c", web("eph")
    )
    line = dockyard.ok("port", name, "80/tcp").splitlines()[0]
    host, _, port_text = line.rpartition(":")
    assert host == "0.0.0.0", line
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert low <= int(port_text) <= high, (line, low, high)
    assert http_get(int(port_text)) == "eph\n"
    exposed = dockyard.ok("inspect", "-f", "{{json .Config.ExposedPorts}}", name)
    assert json.loads(exposed) == {"80/tcp": {}}, exposed
    assert dockyard.ok("inspect", "-f", "{{.HostConfig.PublishAllPorts}}", name) == "true\n"
    ports = dockyard.ok("ps", "--filter", f"name={name}", "--format", "{{.Ports}}")
    assert f"0.0.0.0:{port_text}->80/tcp" in ports, ports


@pytest.mark.slow
def test_user_defined_network_lifecycle(dockyard: Compat, networks: Networks) -> None:
    subnet = "10.215.20.0/24"
    net, net_id = networks.create("--subnet", subnet, "--label", "compat.role=net")
    assert len(net_id) == 64 and int(net_id, 16) >= 0, net_id

    rows = dockyard.ok("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}")
    assert f"{net} bridge local" in rows.splitlines(), rows
    assert {"bridge bridge local", "host host local", "none null local"} <= set(rows.splitlines())
    table = dockyard.ok("network", "ls").splitlines()
    assert table[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"], table
    assert [net_id[:12], net, "bridge", "local"] in [row.split() for row in table[1:]], table
    assert dockyard.ok("network", "ls", "-q", "--filter", f"name={net}") == f"{net_id[:12]}\n"

    (info,) = json.loads(dockyard.ok("network", "inspect", net))
    assert (info["Name"], info["Id"], info["Driver"], info["Scope"]) == (
        net, net_id, "bridge", "local"
    )  # fmt: skip
    assert info["IPAM"]["Config"][0]["Subnet"] == subnet, info["IPAM"]
    assert info["Labels"] == {"compat.role": "net"} and info["Containers"] == {}, info
    assert link_exists(f"br-{net_id[:12]}"), f"no bridge br-{net_id[:12]} for {net}"

    server, other = dockyard.unique("srv"), dockyard.unique("other")
    dockyard.ok(
        "run", "-d", "--network", net, "--network-alias", "pageserver", "--name", server,
        "busybox", "sh", "-c", web("on-user-net"),
    )  # fmt: skip
    address = dockyard.ok(
        "inspect", "-f", f'{{{{(index .NetworkSettings.Networks "{net}").IPAddress}}}}', server
    ).strip()
    assert ipaddress.IPv4Address(address) in ipaddress.IPv4Network(subnet), address
    aliases = dockyard.ok(
        "inspect", "-f", f'{{{{json (index .NetworkSettings.Networks "{net}").Aliases}}}}', server
    )
    assert "pageserver" in json.loads(aliases), aliases
    members = dockyard.ok(
        "network", "inspect", net, "-f", "{{range .Containers}}{{.Name}} {{.IPv4Address}}{{end}}"
    )
    assert members.split() == [server, f"{address}/24"], members

    for host in ("pageserver", server):
        out = dockyard.ok(
            "run", "--rm", "--network", net, "busybox", "sh", "-c",
            f"for i in $(seq 50); do timeout 5 wget -q -O - http://{host}/ && exit 0;"
            " sleep 0.1; done; exit 1",
        )  # fmt: skip
        assert out == "on-user-net\n", (host, out)

    dockyard.ok("run", "-d", "--name", other, "busybox", "sh", "-c", LOOP)
    assert dockyard.ok("network", "connect", "--alias", "second", net, other) == ""
    nets = json.loads(dockyard.ok("inspect", "-f", "{{json .NetworkSettings.Networks}}", other))
    assert set(nets) == {"bridge", net}, nets
    assert "second" in nets[net]["Aliases"], nets[net]
    other_address = nets[net]["IPAddress"]
    assert ipaddress.IPv4Address(other_address) in ipaddress.IPv4Network(subnet), nets[net]
    assert f"inet {other_address}/24 " in dockyard.ok("exec", other, "ip", "-o", "-4", "addr")
    assert fetch_in(dockyard, other, f"http://{address}/") == "on-user-net\n"
    for alias in ("second", other):
        assert resolve_in(dockyard, server, alias) == [other_address], alias
    members = dockyard.ok("network", "inspect", net, "-f", "{{range .Containers}}{{.Name}} {{end}}")
    assert sorted(members.split()) == sorted([server, other]), members

    assert dockyard.ok("network", "disconnect", net, other) == ""
    nets = json.loads(dockyard.ok("inspect", "-f", "{{json .NetworkSettings.Networks}}", other))
    assert set(nets) == {"bridge"}, nets
    assert other_address not in dockyard.ok("exec", other, "ip", "-o", "-4", "addr")
    members = dockyard.ok("network", "inspect", net, "-f", "{{range .Containers}}{{.Name}} {{end}}")
    assert members.split() == [server], members

    busy = dockyard.docker("network", "rm", net)
    assert busy.returncode == 1, busy
    assert "has active endpoints" in busy.stderr, busy.stderr
    dockyard.ok("rm", "-f", server)
    assert dockyard.ok("network", "rm", net) == f"{net}\n"
    assert net not in dockyard.ok("network", "ls", "--format", "{{.Name}}").split()
    assert dockyard.docker("network", "inspect", net).returncode == 1
    left = network_leftovers(f"br-{net_id[:12]}")
    assert left == [], f"left on the host after network rm: {left}"


def test_connected_container_resolves_names_on_the_network(
    dockyard: Compat, networks: Networks
) -> None:
    # dockerd rewrites /etc/resolv.conf to the embedded server (127.0.0.11) when a container
    # started on the default bridge joins a user-defined network (libnetwork's rebuildDNS).
    net, _ = networks.create("--subnet", "10.215.21.0/24")
    server, other = dockyard.unique("srv"), dockyard.unique("joiner")
    dockyard.ok(
        "run", "-d", "--network", net, "--network-alias", "pageserver", "--name", server,
        "busybox", "sh", "-c", web("found-by-name"),
    )  # fmt: skip
    dockyard.ok("run", "-d", "--name", other, "busybox", "sh", "-c", LOOP)
    dockyard.ok("network", "connect", net, other)
    resolv = dockyard.ok("exec", other, "cat", "/etc/resolv.conf")
    assert "nameserver 127.0.0.11" in resolv.splitlines(), resolv
    assert fetch_in(dockyard, other, "http://pageserver/") == "found-by-name\n"
    assert fetch_in(dockyard, other, f"http://{server}/") == "found-by-name\n"


def link_env(text: str) -> dict[str, str]:
    """The ``DB_*`` variables of ``env`` output (the link alias is ``db``)."""
    pairs = (line.partition("=") for line in text.splitlines())
    return {k: v for k, _, v in pairs if k.startswith("DB_")}


@pytest.fixture
def linked(dockyard: Compat) -> Iterator[tuple[str, str]]:
    """A running web server exposing 80 with ``GREETING=hi-there``: (name, its address)."""
    server = dockyard.unique("linked")
    dockyard.ok(
        "run", "-d", "--expose", "80", "-e", "GREETING=hi-there", "--name", server,
        "busybox", "sh", "-c", web("via-link"),
    )  # fmt: skip
    yield server, dockyard.ok("inspect", "-f", "{{.NetworkSettings.IPAddress}}", server).strip()
    dockyard.docker("rm", "-f", server)


def expected_link_env(parent: str, address: str) -> dict[str, str]:
    """What dockerd puts in a container linked to the ``linked`` server as ``db``."""
    return {
        "DB_PORT": f"tcp://{address}:80",
        "DB_PORT_80_TCP": f"tcp://{address}:80",
        "DB_PORT_80_TCP_ADDR": address,
        "DB_PORT_80_TCP_PORT": "80",
        "DB_PORT_80_TCP_PROTO": "tcp",
        "DB_NAME": f"/{parent}/db",
        "DB_ENV_GREETING": "hi-there",
    }


def test_link_env_and_hosts(dockyard: Compat, linked: tuple[str, str]) -> None:
    server, address = linked
    child = dockyard.unique("child")
    out = dockyard.ok(
        "run", "--rm", "--name", child, "--link", f"{server}:db", "busybox", "sh", "-c",
        "env; echo --; cat /etc/hosts; echo --; wget -q -O - http://db/",
    )  # fmt: skip
    env, hosts, page = out.split("--\n")
    assert link_env(env) == expected_link_env(child, address), env
    entries = [line.split() for line in hosts.splitlines() if line.split()[:1] == [address]]
    assert entries and {"db", server} <= set(entries[0][1:]), hosts
    assert page == "via-link\n", out


def test_rm_link(dockyard: Compat, linked: tuple[str, str]) -> None:
    server, _ = linked
    app = dockyard.unique("app")
    dockyard.ok("run", "-d", "--link", f"{server}:db", "--name", app, "busybox", "sh", "-c", LOOP)
    assert fetch_in(dockyard, app, "http://db/") == "via-link\n"
    before = json.loads(dockyard.ok("inspect", "-f", "{{json .HostConfig.Links}}", app))
    assert len(before) == 1 and server in before[0] and "db" in before[0], before

    assert dockyard.ok("rm", "--link", f"/{app}/db") == f"/{app}/db\n"
    states = dockyard.ok("inspect", "-f", "{{.State.Status}}", server, app)
    assert states.split() == ["running", "running"], states
    missing = dockyard.docker("rm", "--link", f"/{app}/db")
    assert missing.returncode == 1, missing
    assert missing.stderr == f"Error response from daemon: No such container: /{app}/db\n"
    # dockerd's inspect shows the links the container has now, each as
    # /<linked container>:/<this container>/<alias>.
    links = dockyard.ok("inspect", "-f", "{{.HostConfig.Links}}", app)
    assert links == "[]\n", links
    assert before == [f"/{server}:/{app}/db"], before


def test_exec_sees_the_link_env(dockyard: Compat, linked: tuple[str, str]) -> None:
    # dockerd's exec environment is the container's daemon environment (PATH, HOSTNAME, the
    # links' variables) under Config.Env, then the exec's own -e.
    server, address = linked
    app = dockyard.unique("app")
    dockyard.ok("run", "-d", "--link", f"{server}:db", "--name", app, "busybox", "sh", "-c", LOOP)
    env = dockyard.ok("exec", app, "env")
    assert link_env(env) == expected_link_env(app, address), env
    hostname = dockyard.ok("inspect", "-f", "{{.Config.Hostname}}", app).strip()
    assert f"HOSTNAME={hostname}" in env.splitlines(), env


def test_link_to_a_missing_container_is_refused(dockyard: Compat) -> None:
    name = dockyard.unique("nolink")
    proc = dockyard.docker(
        "run", "--rm", "--name", name, "--link", f"{name}-nosuch:db", "busybox", "true"
    )
    assert proc.returncode == 125, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("docker: Error response from daemon: "), proc.stderr
    assert f"{name}-nosuch" in proc.stderr, proc.stderr
