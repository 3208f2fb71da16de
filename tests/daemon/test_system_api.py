"""Networks, search and image prune end to end: a real daemon over Docker's routes, the dockyard
CLI and (when installed) docker's CLI."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from tests.daemon.conftest import DOCKYARD, Daemon, request, start

HEX64 = re.compile(r"[0-9a-f]{64}")
V = "/v1.45"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: image layers on the daemon's graph driver"
)


def call(daemon: Daemon, method: str, path: str, body: object = None) -> tuple[int, Any]:
    """One API request; return the status and the decoded JSON body (None if empty)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    data = json.dumps(body).encode() if body is not None else None
    status, _, raw = request(daemon, method, V + path, data, headers)
    return status, json.loads(raw) if raw else None


def filters(**items: list[str]) -> str:
    return "filters=" + quote(json.dumps(items))


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def import_image(daemon: Daemon, files: dict[str, bytes], ref: str = "", *changes: str) -> str:
    """Import a one-layer image (tagged *ref* when given); return its id."""
    query: list[tuple[str, str]] = [("fromSrc", "-")]
    if ref:
        repo, _, tag = ref.partition(":")
        query += [("repo", repo), ("tag", tag)]
    query += [("changes", c) for c in changes]
    headers = {"Content-Type": "application/x-tar"}
    status, _, raw = request(
        daemon, "POST", f"{V}/images/create?{urlencode(query)}", tar_of(files), headers
    )
    assert status == 200, raw
    last = json.loads(raw.decode().strip().splitlines()[-1])
    return str(last["status"]).strip()


def image_ids(daemon: Daemon) -> set[str]:
    status, listed = call(daemon, "GET", "/images/json?all=1")
    assert status == 200
    return {i["Id"] for i in listed}


# --- networks ----------------------------------------------------------------------------------


def test_networks_list_and_inspect(daemon: Daemon, daemons: list[Daemon]) -> None:
    status, listed = call(daemon, "GET", "/networks")
    assert status == 200
    assert [(n["Name"], n["Driver"], n["Scope"]) for n in listed] == [
        ("bridge", "bridge", "local"),
        ("host", "host", "local"),
        ("none", "null", "local"),
    ]
    bridge, host, none = listed
    assert HEX64.fullmatch(host["Id"]) and HEX64.fullmatch(none["Id"])
    assert bridge["Options"]["com.docker.network.bridge.default_bridge"] == "true"
    (pool,) = bridge["IPAM"]["Config"]  # the test daemon's --bip (tests/daemon/conftest.py)
    assert pool["Subnet"].startswith("10.214.") and pool["Gateway"].endswith(".1")
    assert none["IPAM"] == {"Driver": "default", "Options": None, "Config": []}
    assert none["ConfigFrom"] == {"Network": ""} and none["Containers"] == {}
    # docker-py's empty filters, the map form, and unversioned paths
    status, _, raw = request(daemon, "GET", "/networks?filters=%7B%7D")
    assert status == 200 and json.loads(raw) == listed
    assert call(daemon, "GET", "/networks?" + filters(driver=["null"])) == (200, [none])
    assert call(daemon, "GET", '/networks?filters={"name":{"os":true}}') == (200, [host])
    assert call(daemon, "GET", "/networks?" + filters(id=[none["Id"][:8]])) == (200, [none])
    assert call(daemon, "GET", "/networks?" + filters(type=["custom"])) == (200, [])
    assert call(daemon, "GET", "/networks?" + filters(bogus=["x"])) == (
        400,
        {"message": "invalid filter 'bogus'"},
    )
    for term in ("none", none["Id"], none["Id"][:12]):
        assert call(daemon, "GET", f"/networks/{term}") == (200, none)
    assert call(daemon, "GET", "/networks/nosuch") == (404, {"message": "network nosuch not found"})

    daemon.stop()  # the ids and times survive a restart
    again = start(daemon.base)
    daemons.append(again)
    assert call(again, "GET", "/networks") == (200, listed)


def test_network_create_and_remove_refusals(daemon: Daemon) -> None:
    status, body = call(daemon, "POST", "/networks/create", {"Name": "n", "Driver": "macvlan"})
    assert status == 501 and "the macvlan driver is not supported" in body["message"]
    assert call(daemon, "POST", "/networks/create", {"Name": "n", "Driver": "host"}) == (
        409,
        {"message": 'only one instance of "host" network is allowed'},
    )
    assert call(daemon, "POST", "/networks/create", {"Name": "none"}) == (
        409,
        {"message": "operation is not permitted on predefined none network"},
    )
    assert call(daemon, "POST", "/networks/create", {"Driver": "bridge"})[0] == 400
    assert call(daemon, "DELETE", "/networks/none") == (
        409,
        {"message": "none is a pre-defined network and cannot be removed"},
    )
    assert call(daemon, "DELETE", "/networks/nosuch")[0] == 404
    assert call(daemon, "POST", "/networks/prune") == (200, {"NetworksDeleted": None})
    assert call(daemon, "POST", "/networks/prune?" + filters(dangling=["1"]))[0] == 400


def test_search_is_not_supported_yet(daemon: Daemon) -> None:
    status, body = call(daemon, "GET", "/images/search")
    assert status == 400 and body["message"] == "term: a search term is required"
    status, body = call(daemon, "GET", "/images/search?term=busybox&limit=10")
    assert status == 501 and "searching is not supported" in body["message"]


def test_cli_network_commands(daemon: Daemon) -> None:
    listed = daemon.cli("network", "ls")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert [line.split()[1:] for line in lines[1:]] == [["bridge", "bridge", "local"],
                                                         ["host", "host", "local"],
                                                         ["none", "null", "local"]]  # fmt: skip
    quiet = daemon.cli("network", "ls", "-q", "--filter", "driver=host")
    assert quiet.returncode == 0 and re.fullmatch(r"[0-9a-f]{12}\n", quiet.stdout)
    shown = daemon.cli("network", "inspect", "none", "host")
    assert shown.returncode == 0 and [n["Name"] for n in json.loads(shown.stdout)] == [
        "none",
        "host",
    ]
    missing = daemon.cli("network", "inspect", "nosuch")
    assert missing.returncode == 3 and "network nosuch not found" in missing.stderr


# --- image prune -------------------------------------------------------------------------------


@needs_root
def test_image_prune_dangling_then_unused(daemon: Daemon) -> None:
    old = import_image(daemon, {"a": b"a" * 5000}, "app:1")
    new = import_image(daemon, {"b": b"b" * 3000}, "app:1")  # takes the tag: old is dangling
    loose = import_image(daemon, {"c": b"c" * 100})
    keep = import_image(daemon, {"d": b"d"}, "keep:1", "LABEL keep=yes")
    assert {old, new, loose, keep} <= image_ids(daemon)

    status, body = call(daemon, "POST", "/images/prune?" + filters(until=["1700000000"]))
    assert (status, body) == (200, {"ImagesDeleted": None, "SpaceReclaimed": 0})
    status, body = call(daemon, "POST", '/images/prune?filters={"dangling":{"true":true}}')
    assert status == 200
    assert sorted(d["Deleted"] for d in body["ImagesDeleted"]) == sorted([old, loose])
    assert body["SpaceReclaimed"] >= 5100  # the two layers' tars
    assert image_ids(daemon) == {new, keep}

    query = filters(dangling=["false"], **{"label!": ["keep=yes"]})
    status, body = call(daemon, "POST", "/images/prune?" + query)
    assert status == 200
    assert body["ImagesDeleted"] == [{"Untagged": "app:1"}, {"Deleted": new}]
    assert body["SpaceReclaimed"] >= 3000
    assert image_ids(daemon) == {keep}
    assert call(daemon, "POST", "/images/prune?" + filters(reference=["x"])) == (
        400,
        {"message": "invalid filter 'reference'"},
    )
    assert call(daemon, "POST", "/images/prune?" + filters(dangling=["maybe"]))[0] == 400


@needs_root
def test_image_prune_keeps_what_a_container_uses(daemon: Daemon) -> None:
    used = import_image(daemon, {"e": b"e"}, "used:1", 'CMD ["/e"]')
    status, created = call(daemon, "POST", "/containers/create?name=user", {"Image": "used:1"})
    assert status == 201, created
    try:
        status, body = call(daemon, "POST", "/images/prune?" + filters(dangling=["false"]))
        assert (status, body["ImagesDeleted"]) == (200, None)
        assert used in image_ids(daemon)
    finally:
        assert call(daemon, "DELETE", f"/containers/{created['Id']}")[0] == 204
    status, body = call(daemon, "POST", "/images/prune?" + filters(dangling=["false"]))
    assert body["ImagesDeleted"] == [{"Untagged": "used:1"}, {"Deleted": used}]


@needs_root
def test_cli_image_prune(daemon: Daemon) -> None:
    gone = import_image(daemon, {"f": b"f" * 10})
    refused = subprocess.run(  # "n" to the question: nothing happens
        [*DOCKYARD, "-H", daemon.hosts[0], "image", "prune"],
        input="n\n", capture_output=True, text=True, env=daemon.env, timeout=30, check=False,
    )  # fmt: skip
    assert refused.returncode == 0 and "cancelled" in refused.stderr
    assert gone in image_ids(daemon)
    pruned = daemon.cli("image", "prune", "-f")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.splitlines()[:2] == ["Deleted Images:", f"deleted: {gone}"]
    assert pruned.stdout.splitlines()[-1].startswith("Total reclaimed space: ")
    assert gone not in image_ids(daemon)


@needs_root
@pytest.mark.skipif(shutil.which("docker") is None, reason="docker's CLI is not installed")
def test_docker_cli(daemon: Daemon, tmp_path: Path) -> None:
    """docker's own CLI (28) renders networks, inspect's fall-through, df and prune."""
    env = {**daemon.env, "DOCKER_HOST": daemon.hosts[0], "DOCKER_CONFIG": str(tmp_path)}

    def docker(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *argv], capture_output=True, text=True, env=env, timeout=30, check=False
        )

    listed = docker("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}")
    assert listed.stdout.splitlines() == [
        "bridge bridge local", "host host local", "none null local"
    ], listed.stderr  # fmt: skip
    [none] = json.loads(docker("network", "inspect", "none").stdout)
    assert none["Name"] == "none" and none["Driver"] == "null"
    missing = docker("inspect", "nosuchthing")
    assert missing.returncode == 1 and "Error: No such object: nosuchthing" in missing.stderr
    removed = docker("network", "rm", "none")
    assert removed.returncode == 1 and "pre-defined network and cannot be removed" in removed.stderr
    dangling = import_image(daemon, {"g": b"g" * 2000})
    pruned = docker("image", "prune", "-f")
    assert pruned.returncode == 0 and f"deleted: {dangling}" in pruned.stdout, pruned.stderr
    assert docker("container", "prune", "-f").stdout.strip() == "Total reclaimed space: 0B"
    df = docker("system", "df")
    assert df.returncode == 0, df.stderr
    assert [line.split()[0] for line in df.stdout.splitlines()] == [
        "TYPE", "Images", "Containers", "Local", "Build"
    ]  # fmt: skip
    verbose = docker("system", "df", "-v")
    assert verbose.returncode == 0 and "Images space usage:" in verbose.stdout, verbose.stderr
