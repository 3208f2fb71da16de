"""Network jobs (over a controller whose bridge driver only records), ``search``,
``system_df`` and the system routes, on an engine without containers (no root needed)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.prune import usage_rows
from drivers.graph.vfs import VfsDriver
from drivers.network.base import Network, Settings
from drivers.network.host import HostDriver
from drivers.network.null import NullDriver
from engine import Engine
from engine.errors import (
    AlreadyExists,
    EngineError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotSupported,
)
from graph.db import GraphDB
from graph.imageconfig import encode, new_config
from graph.images import ImageStore
from graph.layers import LayerStore
from graph.networks import NetworkRecord, NetworkStore
from graph.volumes import VolumeStore
from jobs import diskusage, install, networks, search
from jobs import images as image_jobs
from jobs.eventlog import EventLog
from jobs.netcontroller import NetworkController
from jobs.netsetup import predefined_id
from jobs.services import DAEMON, EVENTS, IMAGES, LAYERS, NETWORK, VOLUMES, DaemonInfo
from server.systemroutes import ROUTES

HEX64 = re.compile(r"[0-9a-f]{64}")
NETWORK_KEYS = {"Name", "Id", "Created", "Scope", "Driver", "EnableIPv6", "IPAM", "Internal",
                "Attachable", "Ingress", "ConfigFrom", "ConfigOnly", "Containers", "Options",
                "Labels"}  # fmt: skip


class FakeBridge:
    """A bridge driver that records what it is asked to do (no netlink, no iptables)."""

    name, sandbox = "bridge", "new"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def setup(self) -> None:
        self.calls.append(("setup", ""))

    def shutdown(self) -> None:
        self.calls.append(("shutdown", ""))

    def create(self, network: Network) -> None:
        self.calls.append(("create", network.bridge))

    def delete(self, network: Network) -> None:
        self.calls.append(("delete", network.bridge))

    def host_routes(self) -> list[str]:
        return ["172.17.0.0/16"]  # the first default pool is taken on this "host"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    db = GraphDB(tmp_path / "graph.db")
    try:
        e = Engine()
        e.provide(DAEMON, DaemonInfo(engine_id="ABCD:EF01", data_root=tmp_path,
                                     exec_root=tmp_path / "exec"))  # fmt: skip
        e.provide(IMAGES, ImageStore(db))
        e.provide(LAYERS, LayerStore(db, VfsDriver(tmp_path / "vfs"), tmp_path / "tars"))
        e.provide(VOLUMES, VolumeStore(db, tmp_path / "volumes"))
        e.provide(EVENTS, EventLog())
        bridge = FakeBridge()
        settings = Settings(bridge="dyt0", bip="10.250.0.1/24", mtu=1400)
        drivers = {"bridge": bridge, "host": HostDriver(settings), "none": NullDriver(settings)}
        net = NetworkController(NetworkStore(db), drivers, settings, "bridge",  # type: ignore[arg-type]
                                "ABCD:EF01")  # fmt: skip
        asyncio.run(net.setup(CREATED))
        e.provide(NETWORK, net)
        for module in (networks, search, diskusage, image_jobs):
            module.install(e)
        yield e
    finally:
        db.close()


def call(engine: Engine, job: str, /, *args: str, **params: object) -> list[dict[str, Any]]:
    return [dict(r) for r in asyncio.run(engine.call(job, *args, **params))]


CREATED = "2024-01-02T03:04:05.000000000Z"


# --- records, filters ----------------------------------------------------------------------------


def test_predefined_networks_have_docker_s_shape_and_stable_ids(engine: Engine) -> None:
    bridge, host, none = call(engine, "networks")
    assert [(n["Name"], n["Driver"]) for n in (bridge, host, none)] == [
        ("bridge", "bridge"), ("host", "host"), ("none", "null")
    ]  # fmt: skip
    for n in (bridge, host, none):
        assert set(n) == NETWORK_KEYS
        assert HEX64.fullmatch(n["Id"]) and n["Scope"] == "local" and n["Created"] == CREATED
        assert n["ConfigFrom"] == {"Network": ""} and n["Containers"] == {}
        assert n["Labels"] == {} and n["EnableIPv6"] is False
    assert host["IPAM"] == {"Driver": "default", "Options": None, "Config": []}
    assert bridge["IPAM"]["Config"] == [{"Subnet": "10.250.0.0/24", "Gateway": "10.250.0.1"}]
    assert bridge["Options"]["com.docker.network.bridge.name"] == "dyt0"
    assert bridge["Options"]["com.docker.network.bridge.default_bridge"] == "true"
    assert predefined_id("ABCD:EF01", "host") == host["Id"] != none["Id"]
    assert predefined_id("E2", "host") != host["Id"]


def fake(name: str, id: str, driver: str = "bridge") -> dict[str, Any]:
    record = NetworkRecord(id=id, name=name, driver=driver, bridge="", subnet="", gateway="",
                           ip_range="", internal=False, attachable=False, labels={}, options={},
                           created=CREATED, predefined=name in ("host", "none"))  # fmt: skip
    return networks.network_json(record)


def test_list_filters() -> None:
    nets = [fake("host", "1" * 64, "host"), fake("none", "2" * 64, "null")]
    nets.append(fake("mine", "9" * 64) | {"Labels": {"team": "a"}})

    def names(**filters: list[str]) -> list[str]:
        return [n["Name"] for n in networks.select(nets, filters)]

    assert names() == ["host", "none", "mine"]
    assert names(name=["o"]) == ["host", "none"]  # part of the name
    assert names(name=["^h"]) == ["host"]  # or a pattern
    assert names(name=["["]) == []  # a bad pattern matches nothing
    assert names(id=["222"]) == ["none"]
    assert names(driver=["null"]) == ["none"]
    assert names(driver=["nul"]) == []  # the driver must be exact
    assert names(type=["builtin"]) == ["host", "none"]
    assert names(type=["custom"]) == ["mine"]
    assert names(type=["custom", "builtin"]) == ["host", "none", "mine"]
    assert names(scope=["local"]) == ["host", "none", "mine"]
    assert names(scope=["swarm"]) == []
    assert names(label=["team=a"]) == ["mine"]
    assert names(dangling=["true"]) == ["mine"]
    assert names(dangling=["0"]) == ["host", "none"]
    with pytest.raises(InvalidArgument, match=r"invalid filter: 'type'='other'"):
        names(type=["other"])
    with pytest.raises(InvalidArgument, match=r"invalid filter 'status'"):
        names(status=["x"])
    with pytest.raises(InvalidArgument, match="invalid value for filter 'dangling'"):
        names(dangling=["maybe"])


# --- the jobs ----------------------------------------------------------------------------------


def test_list_and_inspect_jobs(engine: Engine) -> None:
    listed = call(engine, "networks")
    assert [n["Name"] for n in listed] == ["bridge", "host", "none"]
    assert call(engine, "networks", filters={"driver": ["host"]}) == [listed[1]]
    for term in ("none", listed[2]["Id"], listed[2]["Id"][:5]):
        assert call(engine, "network_inspect", term) == [listed[2]]
    with pytest.raises(NotFound, match="^network nosuchthing not found$"):
        call(engine, "network_inspect", "nosuchthing")
    with pytest.raises(NotFound):
        call(engine, "network_inspect", "host", scope="swarm")
    assert call(engine, "network_inspect", "host", scope="local", verbose=True) == [listed[1]]


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ({}, InvalidArgument, "Name: a network name is required"),
        ({"Name": "host"}, FailedPrecondition, "operation is not permitted on predefined host"),
        ({"Name": "bridge"}, FailedPrecondition, "predefined bridge network"),
        ({"Name": "n", "Driver": "host"}, FailedPrecondition, 'only one instance of "host"'),
        ({"Name": "n", "Driver": "null"}, FailedPrecondition, 'only one instance of "null"'),
        ({"Name": "n", "Driver": "nope"}, NotFound, "could not find plugin nope"),
        ({"Name": "n", "Driver": "macvlan"}, NotSupported, "Driver: the macvlan driver"),
        ({"Name": "n", "EnableIPv6": True}, NotSupported, "EnableIPv6: IPv6 networks"),
        ({"Name": "n", "Options": {"x": "1"}}, NotSupported, "Options.x: this bridge option"),
        ({"Name": "n", "IPAM": {"Config": [{"Subnet": "nope"}]}}, InvalidArgument,
         "IPAM.Config[0].Subnet"),
        ({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.250.0.0/16"}]}}, AlreadyExists,
         "Pool overlaps with other one on this address space"),
        ({"Name": "n", "IPAM": {"Config": {}}}, InvalidArgument, "IPAM.Config: expected a list"),
    ],
)  # fmt: skip
def test_create_refuses(
    engine: Engine, body: dict[str, object], error: type[EngineError], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        call(engine, "network_create", body=body)


def test_create_inspect_delete_and_prune(engine: Engine) -> None:
    (made,) = call(engine, "network_create", body={"Name": "n1", "Labels": {"team": "a"}})
    assert HEX64.fullmatch(made["Id"]) and made["Warning"] == ""
    (n1,) = call(engine, "network_inspect", "n1")
    # the first default pool (172.17.0.0/16) is a host route here, so the next one is chosen
    assert n1["IPAM"]["Config"] == [{"Subnet": "172.18.0.0/16", "Gateway": "172.18.0.1"}]
    assert (n1["Driver"], n1["Labels"], n1["Internal"]) == ("bridge", {"team": "a"}, False)
    bridge = engine[NETWORK].drivers["bridge"]
    assert ("create", f"br-{made['Id'][:12]}") in bridge.calls  # type: ignore[attr-defined]
    with pytest.raises(AlreadyExists, match="network with name n1 already exists"):
        call(engine, "network_create", body={"Name": "n1"})
    call(engine, "network_create", body={"Name": "n2", "Internal": True, "IPAM": {
        "Config": [{"Subnet": "10.251.0.0/24", "IPRange": "10.251.0.128/25"}]}})  # fmt: skip
    (n2,) = call(engine, "network_inspect", "n2")
    assert n2["Internal"] is True and n2["IPAM"]["Config"] == [
        {"Subnet": "10.251.0.0/24", "Gateway": "10.251.0.1", "IPRange": "10.251.0.128/25"}
    ]
    call(engine, "network_delete", "n1")
    assert ("delete", f"br-{made['Id'][:12]}") in bridge.calls  # type: ignore[attr-defined]
    assert call(engine, "network_prune", filters={"label": ["team=b"]}) == [
        {"NetworksDeleted": None}
    ]
    assert call(engine, "network_prune") == [{"NetworksDeleted": ["n2"]}]
    assert [n["Name"] for n in call(engine, "networks")] == ["bridge", "host", "none"]
    actions = [m["Action"] for m in engine[EVENTS].past()]
    assert actions == ["create", "create", "destroy", "destroy"]


def test_delete_refuses_predefined_networks_and_prune_finds_nothing(engine: Engine) -> None:
    for name in ("none", "host", "bridge"):
        with pytest.raises(FailedPrecondition, match=f"^{name} is a pre-defined network and"):
            call(engine, "network_delete", name)
    with pytest.raises(NotFound, match="^network gone not found$"):
        call(engine, "network_delete", "gone")
    assert call(engine, "network_prune") == [{"NetworksDeleted": None}]
    assert call(engine, "network_prune", filters={"until": ["1h"]}) == [{"NetworksDeleted": None}]
    with pytest.raises(InvalidArgument, match="invalid filter 'dangling'"):
        call(engine, "network_prune", filters={"dangling": ["true"]})


def test_search_checks_then_refuses(engine: Engine) -> None:
    with pytest.raises(InvalidArgument, match="term: a search term is required"):
        call(engine, "search")
    with pytest.raises(InvalidArgument, match=r"limit 0 is outside the range of \[1, 100\]"):
        call(engine, "search", term="busybox", limit=0)
    with pytest.raises(InvalidArgument, match="invalid filter 'name'"):
        call(engine, "search", term="busybox", filters={"name": ["x"]})
    with pytest.raises(NotSupported, match="search busybox: searching is not supported"):
        call(engine, "search", term="busybox", limit=5, filters={"is-official": ["true"]})


# --- system_df -----------------------------------------------------------------------------------


def test_system_df_images_volumes_and_build_cache(engine: Engine) -> None:
    config = new_config([], "test")
    image = engine[IMAGES].add(encode(config), [])
    volume = engine[VOLUMES].create("data")
    Path(volume.mountpoint, "f").write_bytes(b"x" * 1234)
    (usage,) = call(engine, "system_df", type=["image", "volume", "build-cache"])
    assert usage["LayersSize"] == 0 and usage["Containers"] is None and usage["BuildCache"] == []
    (listed,) = usage["Images"]
    assert listed["Id"] == image.id and listed["SharedSize"] == 0 and listed["Containers"] == 0
    assert set(listed) >= {"Id", "ParentId", "RepoTags", "RepoDigests", "Created", "Size",
                           "SharedSize", "Labels", "Containers"}  # fmt: skip
    (vol,) = usage["Volumes"]
    assert vol["Name"] == "data" and vol["UsageData"] == {"Size": 1234, "RefCount": 0}
    (only,) = call(engine, "system_df", type=["volume"])
    assert "LayersSize" not in only and only["Images"] is None and only["BuildCache"] is None
    with pytest.raises(InvalidArgument, match="type: unknown object type: layers"):
        call(engine, "system_df", type=["layers"])


def test_df_rows_as_the_docker_cli_counts_them() -> None:
    usage = {
        "LayersSize": 1000,
        "Images": [{"Size": 600, "SharedSize": 100, "Containers": 2},
                   {"Size": 400, "SharedSize": 100, "Containers": 0}],
        "Containers": [{"State": "running", "SizeRw": 10}, {"State": "exited", "SizeRw": 30}],
        "Volumes": [{"UsageData": {"Size": 50, "RefCount": 1}},
                    {"UsageData": {"Size": 150, "RefCount": 0}}],
        "BuildCache": [],
    }  # fmt: skip
    assert usage_rows(usage) == [
        {"type": "Images", "total": "2", "active": "1", "size": "1kB", "free": "500B (50%)"},
        {"type": "Containers", "total": "2", "active": "1", "size": "40B", "free": "30B (75%)"},
        {"type": "Local Volumes", "total": "2", "active": "1", "size": "200B",
         "free": "150B (75%)"},
        {"type": "Build Cache", "total": "0", "active": "0", "size": "0B", "free": "0B"},
    ]  # fmt: skip
    empty = usage_rows({"Images": None, "Containers": None, "Volumes": None})
    assert [r["free"] for r in empty] == ["0B", "0B", "0B", "0B"]


# --- routes ----------------------------------------------------------------------------------


def test_routes_bind_registered_jobs() -> None:
    engine = Engine()
    install(engine)
    table = {(r.method, r.path): r.job for r in ROUTES}
    assert table == {
        ("GET", "/system/df"): "system_df",
        ("POST", "/containers/prune"): "container_prune",
        ("POST", "/images/prune"): "image_prune",
        ("GET", "/images/search"): "search",
        ("GET", "/networks"): "networks",
        ("POST", "/networks/create"): "network_create",
        ("POST", "/networks/{id}/connect"): "network_connect",
        ("POST", "/networks/{id}/disconnect"): "network_disconnect",
        ("POST", "/networks/prune"): "network_prune",
        ("GET", "/networks/{id}"): "network_inspect",
        ("DELETE", "/networks/{id}"): "network_delete",
    }
    assert set(table.values()) <= set(engine.names())
