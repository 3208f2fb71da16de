"""Networks (``none`` and ``host``), ``search``, ``system_df`` and the system routes, on an
engine without containers (no root needed)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.prune import usage_rows
from drivers.graph.vfs import VfsDriver
from engine import Engine
from engine.errors import (
    EngineError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotSupported,
)
from graph.containers import Container, State
from graph.db import GraphDB
from graph.imageconfig import encode, new_config
from graph.images import ImageStore
from graph.layers import LayerStore
from graph.volumes import VolumeStore
from jobs import diskusage, install, networks, search
from jobs import images as image_jobs
from jobs.runtime import now_rfc3339
from jobs.services import DAEMON, IMAGES, LAYERS, VOLUMES, DaemonInfo
from server.systemroutes import ROUTES

HEX64 = re.compile(r"[0-9a-f]{64}")
NETWORK_KEYS = {"Name", "Id", "Created", "Scope", "Driver", "EnableIPv6", "IPAM", "Internal",
                "Attachable", "Ingress", "ConfigFrom", "ConfigOnly", "Containers", "Options",
                "Labels"}  # fmt: skip


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    db = GraphDB(tmp_path / "graph.db")
    try:
        (tmp_path / "engine-id").write_text("ABCD:EF01\n")
        e = Engine()
        e.provide(DAEMON, DaemonInfo(engine_id="ABCD:EF01", data_root=tmp_path,
                                     exec_root=tmp_path / "exec"))  # fmt: skip
        e.provide(IMAGES, ImageStore(db))
        e.provide(LAYERS, LayerStore(db, VfsDriver(tmp_path / "vfs"), tmp_path / "tars"))
        e.provide(VOLUMES, VolumeStore(db, tmp_path / "volumes"))
        for module in (networks, search, diskusage, image_jobs):
            module.install(e)
        yield e
    finally:
        db.close()


def call(engine: Engine, job: str, /, *args: str, **params: object) -> list[dict[str, Any]]:
    return [dict(r) for r in asyncio.run(engine.call(job, *args, **params))]


# --- records, ids, lookups -----------------------------------------------------------------------


def test_predefined_networks_have_docker_s_shape_and_stable_ids() -> None:
    host, none = networks.predefined("E1", "2024-01-02T03:04:05.000000000Z")
    assert (host["Name"], host["Driver"], none["Name"], none["Driver"]) == (
        "host", "host", "none", "null"
    )  # fmt: skip
    for n in (host, none):
        assert set(n) == NETWORK_KEYS
        assert HEX64.fullmatch(n["Id"]) and n["Scope"] == "local"
        assert n["IPAM"] == {"Driver": "default", "Options": None, "Config": []}
        assert n["ConfigFrom"] == {"Network": ""} and n["Containers"] == {}
        assert n["Options"] == {} and n["Labels"] == {} and n["EnableIPv6"] is False
    assert networks.network_id("E1", "host") == host["Id"] != none["Id"]
    assert networks.network_id("E2", "host") != host["Id"]


def fake(name: str, id: str, driver: str = "bridge") -> dict[str, Any]:
    return networks.network_record(name, driver, id, networks.ZERO_TIME)


def test_find_by_full_id_then_name_then_unique_prefix() -> None:
    nets = [fake("abc", "abc" + "0" * 61), fake("x", "abd" + "1" * 61), fake("y", "ffe" + "2" * 61)]
    assert networks.find(nets, "x")["Name"] == "x"
    assert networks.find(nets, "abd" + "1" * 61)["Name"] == "x"
    assert networks.find(nets, "ff")["Name"] == "y"
    assert networks.find(nets, "abc")["Name"] == "abc"  # a name beats an id prefix
    with pytest.raises(InvalidArgument, match=r"network ab is ambiguous \(2 matches found based"):
        networks.find(nets, "ab")
    with pytest.raises(NotFound, match=r"^network nosuch not found$"):
        networks.find(nets, "nosuch")


def test_list_filters() -> None:
    nets = networks.predefined("E1", networks.ZERO_TIME)
    nets.append(fake("mine", "9" * 64) | {"Labels": {"team": "a"}})

    def names(**filters: list[str]) -> list[str]:
        return [n["Name"] for n in networks.select(nets, filters)]

    assert names() == ["host", "none", "mine"]
    assert names(name=["o"]) == ["host", "none"]  # part of the name
    assert names(name=["^h"]) == ["host"]  # or a pattern
    assert names(name=["["]) == []  # a bad pattern matches nothing
    assert names(id=[nets[1]["Id"][:6]]) == ["none"]
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


def test_endpoints_are_the_running_containers_in_that_mode() -> None:
    def c(name: str, mode: str, running: bool) -> Container:
        state = State(running=running)
        return Container(id=name * 64, name=name, image="sha256:x", created="", config={},
                         host_config={"NetworkMode": mode}, state=state)  # fmt: skip

    host = networks.predefined("E1", networks.ZERO_TIME)[0]
    found = networks.endpoints(host, [c("a", "host", True), c("b", "host", False),
                                      c("d", "none", True)])  # fmt: skip
    assert found == {
        "a" * 64: {
            "Name": "a",
            "EndpointID": networks.endpoint_id(host["Id"], "a" * 64),
            "MacAddress": "",
            "IPv4Address": "",
            "IPv6Address": "",
        }
    }


# --- the jobs ----------------------------------------------------------------------------------


def test_list_and_inspect_jobs(engine: Engine, tmp_path: Path) -> None:
    listed = call(engine, "networks")
    assert [n["Name"] for n in listed] == ["host", "none"]
    stamp = (tmp_path / "engine-id").stat().st_mtime
    assert listed[0]["Created"] == listed[1]["Created"] == now_rfc3339(stamp)
    assert call(engine, "networks", filters={"driver": ["host"]}) == [listed[0]]
    for term in ("none", listed[1]["Id"], listed[1]["Id"][:5]):
        assert call(engine, "network_inspect", term) == [listed[1]]
    with pytest.raises(NotFound, match="^network nosuchthing not found$"):
        call(engine, "network_inspect", "nosuchthing")
    with pytest.raises(NotFound):
        call(engine, "network_inspect", "host", scope="swarm")
    assert call(engine, "network_inspect", "host", scope="local", verbose=True) == [listed[0]]


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ({}, InvalidArgument, "Name: a network name is required"),
        ({"name": "host"}, FailedPrecondition, "operation is not permitted on predefined host"),
        ({"name": "bridge", "driver": "bridge"}, FailedPrecondition, "predefined bridge network"),
        ({"name": "n", "driver": "host"}, FailedPrecondition, 'only one instance of "host"'),
        ({"name": "n", "driver": "null"}, FailedPrecondition, 'only one instance of "null"'),
        ({"name": "n", "driver": "nope"}, NotFound, "could not find plugin nope"),
        ({"name": "n"}, NotSupported, "come with the bridge driver"),
        ({"name": "n", "driver": "macvlan"}, NotSupported, "come with the bridge driver"),
    ],
)
def test_create_refuses(
    engine: Engine, body: dict[str, str], error: type[EngineError], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        call(engine, "network_create", **body)


def test_delete_refuses_predefined_networks_and_prune_finds_nothing(engine: Engine) -> None:
    for name in ("none", "host"):
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
    with pytest.raises(NotSupported, match="search busybox: searching a registry"):
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
        ("POST", "/networks/prune"): "network_prune",
        ("GET", "/networks/{id}"): "network_inspect",
        ("DELETE", "/networks/{id}"): "network_delete",
    }
    assert set(table.values()) <= set(engine.names())
