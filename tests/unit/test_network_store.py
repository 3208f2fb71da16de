"""The network store and its IPAM, on a GraphDB in a temp dir (no root needed).

Endpoints reference container rows, so the tests reserve containers through ContainerStore (with
the image row a container row needs written straight into the database).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.network.base import Network
from engine.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotSupported,
)
from graph.containers import ContainerStore
from graph.db import GraphDB
from graph.networks import (
    DEFAULT_POOLS,
    Endpoint,
    NetworkNotFound,
    NetworkRecord,
    NetworkStore,
    PoolOverlap,
    PortRecord,
    check_subnet,
    choose_subnet,
    gateway_of,
    mac_for,
)

IMAGE = "sha256:" + "0" * 64


def nid(n: int) -> str:
    """A network id (64 hex) made from *n*."""
    return f"{n:x}".ljust(64, "0")


def cid(n: int) -> str:
    """A container id (64 hex) made from *n*."""
    return f"c{n:063x}"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[GraphDB]:
    graph = GraphDB(tmp_path / "graph.db")
    try:
        yield graph
    finally:
        graph.close()


@pytest.fixture
def containers(db: GraphDB, tmp_path: Path) -> ContainerStore:
    with db.write() as tx:
        tx.execute(
            "INSERT INTO images (id, config, created, size, added) VALUES (?, x'7b7d', '', 0, 0)",
            (IMAGE,),
        )
    return ContainerStore(db, tmp_path / "containers")


@pytest.fixture
def store(db: GraphDB) -> NetworkStore:
    return NetworkStore(db)


def reserve(containers: ContainerStore, *numbers: int) -> list[str]:
    """Make container rows for *numbers*; return their ids."""
    ids = []
    for n in numbers:
        containers.reserve(cid(n), f"c{n}", IMAGE, 0.0)
        ids.append(cid(n))
    return ids


def bridge(
    store: NetworkStore, n: int, name: str, subnet: str, gateway: str = "", ip_range: str = ""
) -> NetworkRecord:
    """Create a bridge network *name* on *subnet*."""
    return store.create(
        NetworkRecord(
            id=nid(n), name=name, driver="bridge", bridge=f"br-{n}", subnet=subnet,
            gateway=gateway, ip_range=ip_range,
        )
    )  # fmt: skip


def ips(endpoints: list[Endpoint]) -> list[str]:
    return [e.ip for e in endpoints]


# --- networks ------------------------------------------------------------------------------


def test_create_normalises_and_get_resolves_id_name_and_prefix(store: NetworkStore) -> None:
    net = store.create(
        NetworkRecord(
            id=nid(0xAB1), name="web", driver="bridge", bridge="br-web", subnet="172.20.3.7/16",
            labels={"app": "shop"}, options={"com.docker.network.driver.mtu": "1400"},
        )
    )  # fmt: skip
    assert (net.subnet, net.gateway, net.ip_range) == ("172.20.0.0/16", "172.20.0.1", "")
    assert net.labels == {"app": "shop"}
    assert net.options == {"com.docker.network.driver.mtu": "1400"}
    assert net.created.endswith("Z") and net.created[4] == "-" and not net.predefined
    assert store.get(net.id) == net
    assert store.get("web") == net
    assert store.get("ab1") == net
    assert store.all() == [net]


def test_name_wins_over_id_prefix_and_full_id_over_name(store: NetworkStore) -> None:
    a = bridge(store, 0xAB1, "first", "172.20.0.0/16")
    named_like_prefix = bridge(store, 0xCD1, "ab1", "172.21.0.0/16")
    assert store.get("ab1") == named_like_prefix
    b = bridge(store, 0xEE1, a.id, "172.22.0.0/16")  # a name that is another network's id
    assert store.get(a.id) == a
    assert store.get(b.id) == b


def test_get_not_found_and_ambiguous(store: NetworkStore) -> None:
    bridge(store, 0xAB1, "one", "172.20.0.0/16")
    bridge(store, 0xAB2, "two", "172.21.0.0/16")
    with pytest.raises(NetworkNotFound, match=r"^network nope not found$"):
        store.get("nope")
    with pytest.raises(NotFound):
        store.get("")
    with pytest.raises(InvalidArgument) as info:
        store.get("ab")
    assert str(info.value) == "network ab is ambiguous (2 matches found based on ID prefix)"


def test_duplicate_name_and_id(store: NetworkStore) -> None:
    bridge(store, 1, "web", "172.20.0.0/16")
    with pytest.raises(AlreadyExists) as info:
        bridge(store, 2, "web", "172.21.0.0/16")
    assert str(info.value) == "network with name web already exists"
    with pytest.raises(AlreadyExists, match="network with id"):
        bridge(store, 1, "other", "172.21.0.0/16")
    assert [n.name for n in store.all()] == ["web"]


def test_overlapping_subnet_is_refused_naming_both(store: NetworkStore) -> None:
    bridge(store, 1, "web", "172.20.0.0/16")
    with pytest.raises(PoolOverlap) as info:
        bridge(store, 2, "db", "172.20.128.0/24")
    message = str(info.value)
    assert message.startswith("Pool overlaps with other one on this address space")
    assert "web" in message and "db" in message and "172.20.0.0/16" in message
    assert isinstance(info.value, AlreadyExists)
    # Networks without addresses never overlap.
    store.create(NetworkRecord(id=nid(3), name="host", driver="host", predefined=True))
    store.create(NetworkRecord(id=nid(4), name="none", driver="null", predefined=True))
    assert [n.name for n in store.all()] == ["host", "none", "web"]


def test_create_refuses_bad_ids_and_subnets(store: NetworkStore) -> None:
    with pytest.raises(InvalidArgument, match="invalid network id"):
        store.create(NetworkRecord(id="xyz", name="a", driver="bridge"))
    with pytest.raises(InvalidArgument, match=r"IPAM\.Config\[0\]\.Subnet"):
        bridge(store, 1, "a", "not-a-cidr")
    assert store.all() == []


def test_to_driver(store: NetworkStore) -> None:
    net = bridge(store, 1, "web", "172.20.0.0/16")
    assert net.to_driver(1400, False, True) == Network(
        id=net.id, name="web", bridge="br-1", subnet="172.20.0.0/16", gateway="172.20.0.1",
        internal=False, icc=False, masquerade=True, mtu=1400,
    )  # fmt: skip


def test_delete(store: NetworkStore, containers: ContainerStore) -> None:
    net = bridge(store, 1, "web", "172.20.0.0/16")
    (c,) = reserve(containers, 1)
    store.allocate(net.id, c, ifname="eth0")
    with pytest.raises(FailedPrecondition) as info:
        store.delete(net.id)
    assert str(info.value) == (
        f"error while removing network: network web id {net.id} has active endpoints"
    )
    store.release(net.id, c)
    store.delete(net.id)
    assert store.all() == []
    with pytest.raises(NetworkNotFound):
        store.delete(net.id)


def test_update_subnet(store: NetworkStore, containers: ContainerStore) -> None:
    net = bridge(store, 1, "bridge", "172.20.0.0/16")
    bridge(store, 2, "other", "172.21.0.0/16")
    (c,) = reserve(containers, 1)
    store.allocate(net.id, c, ifname="eth0")
    with pytest.raises(FailedPrecondition, match="active endpoints"):
        store.update_subnet(net.id, "10.5.0.0/24", "", "", "br-new")
    store.release(net.id, c)
    with pytest.raises(PoolOverlap):
        store.update_subnet(net.id, "172.21.9.0/24", "", "", "br-new")
    moved = store.update_subnet(net.id, "10.5.0.0/24", "10.5.0.254", "10.5.0.128/25", "br-new")
    assert (moved.subnet, moved.gateway, moved.ip_range, moved.bridge, moved.last_ip) == (
        "10.5.0.0/24", "10.5.0.254", "10.5.0.128/25", "br-new", ""
    )  # fmt: skip
    assert store.allocate(net.id, c, ifname="eth0").ip == "10.5.0.128"


# --- allocation ----------------------------------------------------------------------------


def test_allocation_order_mac_and_prefix(store: NetworkStore, containers: ContainerStore) -> None:
    net = bridge(store, 1, "web", "172.17.0.0/16")
    a, b = reserve(containers, 1, 2)
    ep = store.allocate(net.id, a, ifname="eth0", aliases=["web", "www", "web"])
    assert ep == Endpoint(
        network_id=net.id, container_id=a, ifname="eth0", ip="172.17.0.2", prefixlen=16,
        mac="02:42:ac:11:00:02", gateway="172.17.0.1", aliases=("web", "www"), ports=(),
    )  # fmt: skip
    assert store.allocate(net.id, b, ifname="eth0").ip == "172.17.0.3"
    assert store.get(net.id).last_ip == "172.17.0.3"


def test_pool_exhaustion_skips_reserved(store: NetworkStore, containers: ContainerStore) -> None:
    # A gateway in the middle of a /29: .0 network, .4 gateway, .7 broadcast are never given.
    net = bridge(store, 1, "small", "10.9.0.0/29", gateway="10.9.0.4")
    ids = reserve(containers, *range(6))
    got = [store.allocate(net.id, c, ifname="eth0").ip for c in ids[:5]]
    assert got == ["10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.5", "10.9.0.6"]
    with pytest.raises(FailedPrecondition) as info:
        store.allocate(net.id, ids[5], ifname="eth0")
    assert str(info.value) == (
        f"no available IPv4 addresses on this network's address pools: small ({net.id})"
    )
    assert len(store.endpoints(net.id)) == 5


def test_round_robin_wraps_after_release(store: NetworkStore, containers: ContainerStore) -> None:
    net = bridge(store, 1, "rr", "10.9.0.0/29")  # hosts .2 … .6
    a, b, c, d, e, f = reserve(containers, *range(6))
    for x in (a, b, c):
        store.allocate(net.id, x, ifname="eth0")  # .2 .3 .4
    store.release(net.id, a)
    assert store.allocate(net.id, d, ifname="eth0").ip == "10.9.0.5"  # not the released .2
    assert store.allocate(net.id, e, ifname="eth0").ip == "10.9.0.6"
    assert store.allocate(net.id, f, ifname="eth0").ip == "10.9.0.2"  # wrapped
    store.release(net.id, c)
    assert store.allocate(net.id, a, ifname="eth0").ip == "10.9.0.4"


def test_ip_range(store: NetworkStore, containers: ContainerStore) -> None:
    net = bridge(store, 1, "ranged", "10.9.0.0/24", ip_range="10.9.0.252/30")
    ids = reserve(containers, *range(5))
    got = [store.allocate(net.id, c, ifname="eth0").ip for c in ids[:3]]
    assert got == ["10.9.0.252", "10.9.0.253", "10.9.0.254"]  # .255 is the broadcast
    with pytest.raises(FailedPrecondition, match="no available IPv4 addresses"):
        store.allocate(net.id, ids[3], ifname="eth0")
    with pytest.raises(InvalidArgument, match="out of range"):
        store.allocate(net.id, ids[3], ifname="eth0", ip="10.9.0.10")


def test_explicit_ip(store: NetworkStore, containers: ContainerStore) -> None:
    net = bridge(store, 1, "web", "172.20.0.0/24")
    a, b, c = reserve(containers, 1, 2, 3)
    ep = store.allocate(net.id, a, ifname="eth0", ip="172.20.0.50")
    assert (ep.ip, ep.mac) == ("172.20.0.50", "02:42:ac:14:00:32")
    assert store.get(net.id).last_ip == ""  # an explicit address does not move the cursor
    cases = {
        "172.20.0.50": "Address already in use",
        "172.20.0.1": "Address already in use",  # the gateway
        "172.20.0.0": "requested address is out of range",
        "172.20.0.255": "requested address is out of range",
        "172.21.0.5": "requested address is out of range",
        "172.20.0.300": "invalid IPv4 address",
        "fe80::1": "invalid IPv4 address",
    }
    for ip, text in cases.items():
        with pytest.raises(InvalidArgument) as info:
            store.allocate(net.id, b, ifname="eth0", ip=ip)
        assert str(info.value).startswith("IPAMConfig.IPv4Address: ")
        assert text in str(info.value), ip
    assert store.endpoints(container_id=b) == []
    assert store.allocate(net.id, c, ifname="eth0").ip == "172.20.0.2"


def test_allocate_is_idempotent(store: NetworkStore, containers: ContainerStore) -> None:
    net = bridge(store, 1, "web", "172.20.0.0/24")
    (a,) = reserve(containers, 1)
    first = store.allocate(net.id, a, ifname="eth0", aliases=["x"])
    again = store.allocate(net.id, a, ifname="eth1", ip="172.20.0.9")
    assert again == first
    assert store.get(net.id).last_ip == "172.20.0.2"
    assert len(store.endpoints()) == 1


def test_allocate_refuses_unknown_network_and_container(
    store: NetworkStore, containers: ContainerStore
) -> None:
    net = bridge(store, 1, "web", "172.20.0.0/24")
    (a,) = reserve(containers, 1)
    with pytest.raises(NetworkNotFound):
        store.allocate(nid(99), a, ifname="eth0")
    with pytest.raises(NotFound, match="No such container"):
        store.allocate(net.id, cid(99), ifname="eth0")
    assert store.endpoints() == []
    assert store.get(net.id).last_ip == ""


def test_network_without_subnet(store: NetworkStore, containers: ContainerStore) -> None:
    host = store.create(NetworkRecord(id=nid(1), name="host", driver="host", predefined=True))
    a, b, c = reserve(containers, 1, 2, 3)
    ep = store.allocate(host.id, a, ifname="")
    assert (ep.ip, ep.mac, ep.prefixlen, ep.gateway) == ("", "", 0, "")
    store.allocate(host.id, b, ifname="")  # '' addresses do not collide
    with pytest.raises(InvalidArgument, match="IPAMConfig.IPv4Address"):
        store.allocate(host.id, c, ifname="", ip="10.0.0.2")
    assert len(store.endpoints(host.id)) == 2


def test_large_subnet_allocates_without_walking_it(
    store: NetworkStore, containers: ContainerStore
) -> None:
    net = bridge(store, 1, "big", "10.0.0.0/8")  # 16M addresses
    ids = reserve(containers, *range(50))
    start = time.monotonic()
    got = [store.allocate(net.id, c, ifname="eth0").ip for c in ids]
    assert time.monotonic() - start < 5
    assert got[0] == "10.0.0.2" and got[-1] == "10.0.0.51"
    assert len(set(got)) == 50


# --- release, endpoints, ports -------------------------------------------------------------


def test_release_and_release_all(store: NetworkStore, containers: ContainerStore) -> None:
    web = bridge(store, 1, "web", "172.20.0.0/24")
    db_net = bridge(store, 2, "db", "172.21.0.0/24")
    a, b = reserve(containers, 1, 2)
    store.allocate(web.id, a, ifname="eth0")
    store.allocate(db_net.id, a, ifname="eth1")
    store.allocate(web.id, b, ifname="eth0")
    assert ips(store.endpoints(container_id=a)) == ["172.20.0.2", "172.21.0.2"]
    assert ips(store.endpoints(web.id)) == ["172.20.0.2", "172.20.0.3"]
    assert ips(store.endpoints(web.id, b)) == ["172.20.0.3"]
    store.release(web.id, b)
    store.release(web.id, b)  # nothing left: no error
    gone = store.release_all(a)
    assert [(e.network_id, e.ifname, e.ip) for e in gone] == [
        (web.id, "eth0", "172.20.0.2"), (db_net.id, "eth1", "172.21.0.2")
    ]  # fmt: skip
    assert store.endpoints() == []
    assert store.release_all(a) == []


def test_endpoints_survive_restart(tmp_path: Path) -> None:
    db = GraphDB(tmp_path / "graph.db")
    try:
        with db.write() as tx:
            tx.execute(
                "INSERT INTO images (id, config, created, size, added)"
                " VALUES (?, x'7b7d', '', 0, 0)",
                (IMAGE,),
            )
        (a, b) = reserve(ContainerStore(db, tmp_path / "containers"), 1, 2)
        store = NetworkStore(db)
        net = bridge(store, 1, "web", "172.20.0.0/24")
        before = store.allocate(net.id, a, ifname="eth0", aliases=["web"])
        store.set_ports(net.id, a, [PortRecord(proto="tcp", host_ip="", host_port=8080,
                                               container_port=80)])  # fmt: skip
    finally:
        db.close()
    db = GraphDB(tmp_path / "graph.db")
    try:
        store = NetworkStore(db)
        (after,) = store.endpoints(net.id)
        assert after.ports == ({"proto": "tcp", "host_ip": "", "host_port": 8080,
                                "container_port": 80},)  # fmt: skip
        assert store.allocate(net.id, a, ifname="eth0") == after
        assert (after.ip, after.aliases) == (before.ip, ("web",))
        assert store.allocate(net.id, b, ifname="eth0").ip == "172.20.0.3"  # the cursor too
    finally:
        db.close()


def test_deleting_the_container_removes_its_endpoints(
    store: NetworkStore, containers: ContainerStore
) -> None:
    net = bridge(store, 1, "web", "172.20.0.0/24")
    a, b = reserve(containers, 1, 2)
    store.allocate(net.id, a, ifname="eth0")
    store.allocate(net.id, b, ifname="eth0")
    containers.forget(a)
    assert [e.container_id for e in store.endpoints(net.id)] == [b]


def test_set_ports(store: NetworkStore, containers: ContainerStore) -> None:
    net = bridge(store, 1, "web", "172.20.0.0/24")
    (a,) = reserve(containers, 1)
    store.allocate(net.id, a, ifname="eth0")
    ports = [
        PortRecord(proto="tcp", host_ip="0.0.0.0", host_port=8080, container_port=80),
        PortRecord(proto="udp", host_ip="127.0.0.1", host_port=5353, container_port=53),
    ]
    store.set_ports(net.id, a, ports)
    assert store.endpoints(net.id)[0].ports == tuple(ports)
    for bad in (
        {"proto": "icmp", "host_ip": "", "host_port": 1, "container_port": 1},
        {"proto": "tcp", "host_ip": "", "host_port": 1},
        {"proto": "tcp", "host_ip": "", "host_port": "80", "container_port": 80},
        {"proto": "tcp", "host_ip": "", "host_port": 70000, "container_port": 80},
    ):
        with pytest.raises(InvalidArgument):
            store.set_ports(net.id, a, [bad])
    with pytest.raises(InvalidArgument, match="container_port"):
        store.set_ports(net.id, a, [PortRecord(proto="tcp", host_ip="", host_port=1,
                                               container_port=0)])  # fmt: skip
    with pytest.raises(NotFound):
        store.set_ports(net.id, cid(9), ports)
    store.set_ports(net.id, a, [])
    assert store.endpoints(net.id)[0].ports == ()


# --- pure helpers --------------------------------------------------------------------------


def test_mac_for() -> None:
    assert mac_for("172.17.0.2") == "02:42:ac:11:00:02"
    assert mac_for("10.255.0.171") == "02:42:0a:ff:00:ab"
    with pytest.raises(InvalidArgument):
        mac_for("::1")


def test_gateway_of() -> None:
    assert gateway_of("172.18.0.0/16") == "172.18.0.1"
    assert gateway_of("192.168.32.0/20") == "192.168.32.1"


def test_choose_subnet() -> None:
    assert choose_subnet([]) == "172.17.0.0/16"
    assert choose_subnet(["0.0.0.0/0", "fd00::/8", "10.0.0.0/8"]) == "172.17.0.0/16"
    assert choose_subnet(["172.17.0.0/16", "172.18.4.0/24", "172.19.0.1/32"]) == "172.20.0.0/16"
    assert choose_subnet(["172.16.0.0/12"]) == "192.168.0.0/20"
    assert choose_subnet(["172.16.0.0/12", "192.168.1.0/24"]) == "192.168.16.0/20"
    assert len(DEFAULT_POOLS) == 15 + 16
    with pytest.raises(FailedPrecondition) as info:
        choose_subnet(["172.16.0.0/12", "192.168.0.0/16"])
    assert str(info.value) == (
        "could not find an available, non-overlapping IPv4 address pool among the defaults to"
        " assign to the network"
    )
    with pytest.raises(InvalidArgument):
        choose_subnet(["garbage"])


def test_check_subnet_accepts_and_normalises() -> None:
    assert check_subnet("", "", "") == ("", "", "")
    assert check_subnet("172.20.0.0/16") == ("172.20.0.0/16", "172.20.0.1", "")
    assert check_subnet("172.20.9.9/16", "172.20.255.254", "172.20.5.7/24") == (
        "172.20.0.0/16", "172.20.255.254", "172.20.5.0/24"
    )  # fmt: skip
    assert check_subnet("10.0.0.0/30") == ("10.0.0.0/30", "10.0.0.1", "")


@pytest.mark.parametrize(
    ("subnet", "gateway", "ip_range", "error", "field"),
    [
        ("nonsense", "", "", InvalidArgument, "IPAM.Config[0].Subnet"),
        ("10.0.0.1", "", "", InvalidArgument, "IPAM.Config[0].Subnet"),  # no prefix length
        ("10.0.0.0/31", "", "", InvalidArgument, "IPAM.Config[0].Subnet"),
        ("fd00::/64", "", "", NotSupported, "IPAM.Config[0].Subnet"),
        ("", "10.0.0.1", "", InvalidArgument, "IPAM.Config[0].Subnet"),
        ("10.0.0.0/24", "10.0.1.1", "", InvalidArgument, "IPAM.Config[0].Gateway"),
        ("10.0.0.0/24", "10.0.0.0", "", InvalidArgument, "IPAM.Config[0].Gateway"),
        ("10.0.0.0/24", "10.0.0.255", "", InvalidArgument, "IPAM.Config[0].Gateway"),
        ("10.0.0.0/24", "bogus", "", InvalidArgument, "IPAM.Config[0].Gateway"),
        ("10.0.0.0/24", "fd00::1", "", NotSupported, "IPAM.Config[0].Gateway"),
        ("10.0.0.0/24", "", "10.0.0.0/23", InvalidArgument, "IPAM.Config[0].IPRange"),
        ("10.0.0.0/24", "", "10.0.1.0/25", InvalidArgument, "IPAM.Config[0].IPRange"),
        ("10.0.0.0/24", "", "junk", InvalidArgument, "IPAM.Config[0].IPRange"),
    ],
)
def test_check_subnet_errors_name_the_field(
    subnet: str, gateway: str, ip_range: str, error: type[Exception], field: str
) -> None:
    with pytest.raises(error) as info:
        check_subnet(subnet, gateway, ip_range)
    assert str(info.value).startswith(field + ": ")


def test_schema_keeps_one_address_per_network(
    db: GraphDB, store: NetworkStore, containers: ContainerStore
) -> None:
    net = bridge(store, 1, "web", "172.20.0.0/24")
    a, b, c = reserve(containers, 1, 2, 3)
    store.allocate(net.id, a, ifname="eth0")
    with pytest.raises(AlreadyExists), db.write() as tx:
        tx.execute(
            "INSERT INTO endpoints (network_id, container_id, ip) VALUES (?, ?, '172.20.0.2')",
            (net.id, b),
        )
    with db.write() as tx:  # no address: any number of them
        for x in (b, c):
            tx.execute(
                "INSERT INTO endpoints (network_id, container_id) VALUES (?, ?)", (net.id, x)
            )
    assert len(store.endpoints(net.id)) == 3
