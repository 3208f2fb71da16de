"""Container prune, image prune, ``system df`` and network inspect with real containers.

Every test removes what it made; a prune can only remove this module's containers (the kit's
daemon is per module), and image prunes are limited by a label so the kit's busybox stays.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.daemon.conftest import request
from tests.linux.containerkit import Containers, containers, needs_root

pytestmark = needs_root
__all__ = ["containers"]

Names = Callable[[], str]


@pytest.fixture
def names(containers: Containers) -> Iterator[Names]:
    """Unique container names; every container so named is removed at teardown."""
    made: list[str] = []

    def make() -> str:
        made.append(f"pd-{secrets.token_hex(4)}")
        return made[-1]

    yield make
    for name in made:  # a paused one must be thawed before it can be removed
        containers.cli("unpause", name, timeout=30)
    if made:
        containers.cli("rm", "-f", *made, timeout=60)


def api(containers: Containers, method: str, path: str) -> Any:
    """One API call that must succeed; its decoded JSON body."""
    status, _, raw = request(containers.daemon, method, "/v1.45" + path)
    assert status < 300, raw
    return json.loads(raw) if raw else None


def filters(**items: list[str]) -> str:
    return "filters=" + quote(json.dumps(items))


def container_id(containers: Containers, name: str) -> str:
    return containers.inspect(name, ".Id")


def listed_names(containers: Containers) -> set[str]:
    every = api(containers, "GET", "/containers/json?all=1")
    return {name.lstrip("/") for c in every for name in c["Names"]}


def until(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_container_prune_removes_only_stopped_containers(
    containers: Containers, names: Names
) -> None:
    up, frozen, done, fresh, kept, with_volume = (names() for _ in range(6))
    containers.ok("run", "-d", "--name", up, "busybox", "sleep", "60")
    containers.ok("run", "-d", "--name", frozen, "busybox", "sleep", "60")
    containers.ok("pause", frozen)
    containers.ok("run", "--name", done, "busybox", "sh", "-c", "head -c 4000 /dev/zero > /junk")
    containers.ok("create", "--name", fresh, "busybox", "true")
    containers.ok("run", "--name", kept, "--label", "keep=yes", "busybox", "true")
    containers.ok("run", "--name", with_volume, "-v", "/data", "busybox", "true")
    volume = json.loads(containers.inspect(with_volume, "json .Mounts"))[0]["Name"]
    ids = {name: container_id(containers, name) for name in (done, fresh, kept, with_volume)}

    nothing = api(containers, "POST", "/containers/prune?" + filters(until=["1700000000"]))
    assert nothing == {"ContainersDeleted": None, "SpaceReclaimed": 0}
    pruned = api(containers, "POST", "/containers/prune?" + filters(**{"label!": ["keep=yes"]}))
    assert sorted(pruned["ContainersDeleted"]) == sorted([ids[done], ids[fresh], ids[with_volume]])
    assert 4000 <= pruned["SpaceReclaimed"] < 100_000
    assert {up, frozen, kept} <= listed_names(containers)
    assert not {done, fresh, with_volume} & listed_names(containers)
    for name in (done, fresh, with_volume):
        assert not (containers.daemon.data_root / "containers" / ids[name]).exists()
    # as rm without -v: the anonymous volume stays
    assert volume in containers.ok("volume", "ls", "-q").split()
    containers.ok("volume", "rm", volume)

    out = containers.ok("container", "prune", "-f")
    assert out.splitlines()[:2] == ["Deleted Containers:", ids[kept]]
    assert out.splitlines()[-1] == "Total reclaimed space: 0B"
    assert {up, frozen} <= listed_names(containers) and kept not in listed_names(containers)
    bad = containers.cli("container", "prune", "-f", "--filter", "status=exited")
    assert bad.returncode == 2 and "invalid filter 'status'" in bad.stderr


def test_system_df_counts_layers_containers_and_volumes(
    containers: Containers, names: Names
) -> None:
    writer, sleeper = names(), names()
    volume = f"pd-vol-{secrets.token_hex(4)}"
    containers.ok("run", "--name", writer, "busybox", "sh", "-c", "head -c 3000 /dev/zero > /f")
    script = "head -c 2000 /dev/zero > /data/x && sleep 60"
    containers.ok("run", "-d", "--name", sleeper, "-v", f"{volume}:/data", "busybox", "sh", "-c",
                  script)  # fmt: skip
    try:
        image = api(containers, "GET", "/images/busybox/json")

        def usage() -> dict[str, Any]:
            return dict(api(containers, "GET", "/system/df"))

        until(lambda: any((v["UsageData"]["Size"] >= 2000 and v["Name"] == volume)
                          for v in usage()["Volumes"]), "the volume's file")  # fmt: skip
        df = usage()
        assert df["LayersSize"] == image["Size"] > 0
        assert df["BuildCache"] == []
        [busybox] = [i for i in df["Images"] if i["Id"] == image["Id"]]
        every = api(containers, "GET", "/containers/json?all=1")
        assert busybox["Containers"] == sum(c["ImageID"] == image["Id"] for c in every) >= 2
        assert busybox["SharedSize"] == 0 and busybox["Size"] == image["Size"]
        by_name = {c["Names"][0].lstrip("/"): c for c in df["Containers"]}
        assert 3000 <= by_name[writer]["SizeRw"] < 100_000
        assert by_name[writer]["SizeRootFs"] == by_name[writer]["SizeRw"] + image["Size"]
        assert by_name[sleeper]["State"] == "running"
        [vol] = [v for v in df["Volumes"] if v["Name"] == volume]
        assert vol["UsageData"]["RefCount"] == 1 and vol["Driver"] == "local"

        only = api(containers, "GET", "/system/df?type=volume&type=container")
        assert only["Images"] is None and "LayersSize" not in only
        assert {c["Id"] for c in only["Containers"]} == {c["Id"] for c in df["Containers"]}

        table = containers.ok("system", "df").splitlines()
        assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
        assert [line.split()[0] for line in table[1:]] == ["Images", "Containers", "Local",
                                                            "Build"]  # fmt: skip
        verbose = containers.ok("system", "df", "-v")
        assert writer in verbose and volume in verbose and "Images space usage:" in verbose
    finally:
        containers.cli("rm", "-f", sleeper, writer, timeout=60)
        containers.cli("volume", "rm", volume)


def test_network_inspect_lists_running_containers_of_that_mode(
    containers: Containers, names: Names
) -> None:
    running, stopped, isolated = names(), names(), names()
    containers.ok("run", "-d", "--name", running, "--network", "host", "busybox", "sleep", "60")
    containers.ok("run", "--name", stopped, "--network", "host", "busybox", "true")
    containers.ok("run", "-d", "--name", isolated, "--network", "none", "busybox", "sleep", "60")
    host = api(containers, "GET", "/networks/host")
    running_id = container_id(containers, running)
    assert list(host["Containers"]) == [running_id]
    endpoint = host["Containers"][running_id]
    assert endpoint["Name"] == running and len(endpoint["EndpointID"]) == 64
    assert endpoint["IPv4Address"] == "" and endpoint["MacAddress"] == ""
    none = api(containers, "GET", "/networks/none")
    assert list(none["Containers"]) == [container_id(containers, isolated)]
    assert all(n["Containers"] == {} for n in api(containers, "GET", "/networks"))
    containers.ok("stop", "-t", "0", running)
    assert api(containers, "GET", "/networks/host")["Containers"] == {}


@pytest.mark.slow
def test_image_prune_takes_committed_images_no_container_uses(
    containers: Containers, names: Names
) -> None:
    first, second, user = names(), names(), names()
    repo = f"pd-img-{secrets.token_hex(4)}"
    containers.ok("run", "--name", first, "busybox", "sh", "-c", "head -c 6000 /dev/zero > /a")
    containers.ok("run", "--name", second, "busybox", "sh", "-c", "head -c 7000 /dev/zero > /b")
    old = containers.ok("commit", "-c", "LABEL pd=prune", first, f"{repo}:1").strip()
    new = containers.ok("commit", "-c", "LABEL pd=prune", second, f"{repo}:1").strip()
    used = containers.ok("commit", "-c", "LABEL pd=prune", second, f"{repo}:used").strip()
    containers.ok("create", "--name", user, f"{repo}:used", "true")
    label = filters(label=["pd=prune"])

    pruned = api(containers, "POST", "/images/prune?" + label)  # dangling: the untagged commit
    assert pruned["ImagesDeleted"] == [{"Deleted": old}]
    assert 6000 <= pruned["SpaceReclaimed"] < 100_000
    pruned = api(containers, "POST", "/images/prune?" + filters(label=["pd=prune"],
                                                                dangling=["false"]))  # fmt: skip
    assert pruned["ImagesDeleted"] == [{"Untagged": f"{repo}:1"}, {"Deleted": new}]
    images = {i["Id"] for i in api(containers, "GET", "/images/json")}
    assert used in images and new not in images and old not in images
    containers.ok("rm", user)
    pruned = api(containers, "POST", "/images/prune?" + filters(label=["pd=prune"],
                                                                dangling=["false"]))  # fmt: skip
    assert pruned["ImagesDeleted"] == [{"Untagged": f"{repo}:used"}, {"Deleted": used}]
    assert api(containers, "GET", "/images/busybox/json")["Id"]  # the label kept busybox out
