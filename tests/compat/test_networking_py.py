"""docker-py 7.2 against dockyard's networking: a user-defined network with its own IPAM pool
(create, list by name, connect with aliases, disconnect, the containers it reports, remove),
``containers.run(network=...)`` and a published port bound to 127.0.0.1 on a port the daemon
picks. The daemon and the container cleanup come from ``tests/compat/conftest.py``; the
``networks`` fixture here removes every network a test creates, with its containers.

Traffic goes only to 127.0.0.1 (the published port) and between the test's own containers.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.compat.conftest import Compat
from tests.linux.containerkit import http_get

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container
    from docker.models.networks import Network
else:
    docker = pytest.importorskip(
        "docker", reason="docker-py is not installed: pip install docker==7.2.0 (make deps)"
    )
    Container = docker.models.containers.Container
    Network = docker.models.networks.Network

LOOP = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.1; done"


def web(page: str) -> list[str]:
    """A command serving *page* as ``/index.html`` on port 80 (busybox httpd)."""
    return ["sh", "-c", f"mkdir -p /www && echo {page} > /www/index.html && httpd -f -p 80 -h /www"]


@pytest.fixture
def client(dockyard: Compat) -> Iterator[docker.DockerClient]:
    """A docker-py client on the daemon's socket (API version negotiated)."""
    c = docker.DockerClient(base_url=dockyard.host, timeout=30)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def networks(client: docker.DockerClient) -> Iterator[list[Network]]:
    """Networks a test created (it appends them); removed with their containers at teardown."""
    made: list[Network] = []
    yield made
    for network in made:
        try:
            network.reload()
        except docker.errors.NotFound:
            continue  # the test removed it
        for container in network.containers:
            container.remove(force=True)
        network.remove()


def fetch_in(container: Container, url: str, timeout: float = 10) -> str:
    """``wget`` *url* inside *container*, retrying until it answers; the body (bounded by the
    ``timeout`` applet: Debian's static busybox wget crashes with its own ``-T``)."""
    deadline = time.monotonic() + timeout
    while True:
        code, out = container.exec_run(["timeout", "5", "wget", "-q", "-O", "-", url])
        if code == 0:
            return bytes(out).decode()
        assert time.monotonic() < deadline, f"wget {url}: exit {code}: {out!r}"
        time.sleep(0.1)


def test_network_with_ipam_pool_connect_disconnect_remove(
    client: docker.DockerClient, dockyard: Compat, networks: list[Network]
) -> None:
    subnet = "10.215.26.0/24"
    name = dockyard.unique("pynet")
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
    network = client.networks.create(name, driver="bridge", ipam=ipam, labels={"compat": "py"})
    networks.append(network)
    assert network.name == name and len(network.id) == 64
    assert network.attrs["IPAM"]["Config"][0]["Subnet"] == subnet, network.attrs["IPAM"]
    assert network.attrs["Labels"] == {"compat": "py"}

    listed = client.networks.list(names=[name])
    assert [n.id for n in listed] == [network.id], listed
    assert client.networks.get(name).id == network.id
    assert client.networks.list(names=[dockyard.unique("nosuchnet")]) == []

    server = client.containers.run(
        "busybox", web("py-page"), detach=True, name=dockyard.unique("pysrv")
    )
    member = client.containers.run(
        "busybox", ["sh", "-c", LOOP], detach=True, network=name, name=dockyard.unique("pymem")
    )
    member.reload()
    assert set(member.attrs["NetworkSettings"]["Networks"]) == {name}
    member_ip = member.attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
    assert ipaddress.IPv4Address(member_ip) in ipaddress.IPv4Network(subnet), member_ip
    network.reload()
    assert [c.id for c in network.containers] == [member.id]

    network.connect(server, aliases=["pyalias"])
    server.reload()
    endpoint = server.attrs["NetworkSettings"]["Networks"][name]
    assert "pyalias" in endpoint["Aliases"], endpoint
    assert endpoint["NetworkID"] == network.id
    assert ipaddress.IPv4Address(endpoint["IPAddress"]) in ipaddress.IPv4Network(subnet)
    assert set(server.attrs["NetworkSettings"]["Networks"]) == {"bridge", name}
    network.reload()
    assert sorted(c.id for c in network.containers) == sorted([server.id, member.id])
    assert fetch_in(member, "http://pyalias/") == "py-page\n"
    assert fetch_in(member, f"http://{server.name}/") == "py-page\n"

    network.disconnect(server)
    network.reload()
    assert [c.id for c in network.containers] == [member.id]
    server.reload()
    assert set(server.attrs["NetworkSettings"]["Networks"]) == {"bridge"}

    member.remove(force=True)
    network.remove()
    assert client.networks.list(names=[name]) == []
    with pytest.raises(docker.errors.NotFound):
        client.networks.get(name)


def test_remove_with_active_endpoints_is_refused(
    client: docker.DockerClient, dockyard: Compat, networks: list[Network]
) -> None:
    # dockerd answers 403 (libnetwork's ActiveEndpointsError is a Forbidden error); dockyard's
    # closed error set has no Forbidden, and a refused change of state is its 409 Conflict.
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet="10.215.27.0/24")])
    network = client.networks.create(dockyard.unique("pybusy"), ipam=ipam)
    networks.append(network)
    client.containers.run(
        "busybox", ["sh", "-c", LOOP], detach=True, network=network.name,
        name=dockyard.unique("pybusy"),
    )  # fmt: skip
    with pytest.raises(docker.errors.APIError) as busy:
        network.remove()
    assert "active endpoints" in str(busy.value), busy.value
    assert busy.value.status_code == 409, busy.value
    assert [n.id for n in client.networks.list(names=[network.name])] == [network.id]


def test_run_publishes_on_loopback_with_a_picked_port(
    client: docker.DockerClient, dockyard: Compat
) -> None:
    container = client.containers.run(
        "busybox", web("py-published"), detach=True, name=dockyard.unique("pyweb"),
        ports={"80/tcp": ("127.0.0.1", None)},
    )  # fmt: skip
    container.reload()
    bindings = container.ports["80/tcp"]
    assert len(bindings) == 1 and bindings[0]["HostIp"] == "127.0.0.1", container.ports
    port = int(bindings[0]["HostPort"])
    assert port > 0
    assert http_get(port) == "py-published\n"
    assert container.attrs["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]
    }, container.attrs["HostConfig"]
    assert client.api.port(container.id, 80) == bindings
    address = container.attrs["NetworkSettings"]["IPAddress"]
    bridge = client.networks.get("bridge")
    subnet = bridge.attrs["IPAM"]["Config"][0]["Subnet"]
    assert ipaddress.IPv4Address(address) in ipaddress.IPv4Network(subnet), (address, subnet)
