"""Volumes end to end: Docker's volume routes, the dockyard CLI and (when installed) docker's CLI
against a real daemon process.

A container "uses" a volume when a ``container_volumes`` row names it; with no container jobs
in these tests, the rows are written into the daemon's ``graph.db`` from here (SQLite lets a
second connection write while the daemon runs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
from typing import Any

import pytest

from tests.daemon.conftest import DOCKYARD, Daemon, request, start

HEX64 = re.compile(r"[0-9a-f]{64}")
V = "/v1.45"


def call(daemon: Daemon, method: str, path: str, body: object = None) -> tuple[int, Any]:
    """One API request; return the status and the decoded JSON body (None if empty)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    data = json.dumps(body).encode() if body is not None else None
    status, _, raw = request(daemon, method, V + path, data, headers)
    return status, json.loads(raw) if raw else None


def use(daemon: Daemon, container: str, volume: str) -> None:
    db = sqlite3.connect(daemon.data_root / "graph.db", timeout=30, isolation_level=None)
    try:
        db.execute("PRAGMA foreign_keys=ON")
        db.execute(
            "INSERT OR IGNORE INTO images (id, config, created, size, added)"
            " VALUES ('sha256:volumetest', x'7b7d', '', 0, 0)"
        )
        db.execute(
            "INSERT INTO containers (id, image_id, created) VALUES (?, 'sha256:volumetest', 0)",
            (container,),
        )
        db.execute(
            "INSERT INTO container_volumes (container_id, volume, destination) VALUES (?, ?, '/d')",
            (container, volume),
        )
    finally:
        db.close()


def test_create_inspect_list_remove(daemon: Daemon) -> None:
    status, v1 = call(daemon, "POST", "/volumes/create", {"Name": "v1", "Labels": {"a": "b"}})
    assert status == 201
    assert v1["Name"] == "v1" and v1["Driver"] == "local" and v1["Scope"] == "local"
    assert v1["Labels"] == {"a": "b"} and v1["Options"] == {}
    assert v1["Mountpoint"] == str(daemon.data_root / "volumes" / "v1" / "_data")
    assert os.path.isdir(v1["Mountpoint"])
    assert call(daemon, "POST", "/volumes/create", {"Name": "v1", "Labels": None}) == (201, v1)
    status, anon = call(daemon, "POST", "/volumes/create", {"Driver": "local"})
    assert status == 201 and HEX64.fullmatch(anon["Name"])
    assert anon["Labels"] == {"com.docker.volume.anonymous": ""}

    assert call(daemon, "GET", "/volumes/v1") == (200, v1)
    status, listed = call(daemon, "GET", "/volumes")
    assert status == 200 and listed["Warnings"] is None
    assert sorted(v["Name"] for v in listed["Volumes"]) == sorted(["v1", anon["Name"]])
    query = '?filters={"label":{"a=b":true}}'
    assert call(daemon, "GET", "/volumes" + query) == (200, {"Volumes": [v1], "Warnings": None})
    # unversioned paths and docker-py's list form of filters work too
    status, _, raw = request(daemon, "GET", '/volumes?filters={"name":["^v1$"]}')
    assert status == 200 and [v["Name"] for v in json.loads(raw)["Volumes"]] == ["v1"]

    assert call(daemon, "DELETE", "/volumes/v1") == (204, None)
    assert call(daemon, "DELETE", "/volumes/v1") == (404, {"message": "get v1: no such volume"})
    assert call(daemon, "DELETE", "/volumes/v1?force=1") == (204, None)
    assert call(daemon, "GET", "/volumes/v1")[0] == 404
    assert not (daemon.data_root / "volumes" / "v1").exists()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"Name": "x"}, 400, "create x: volume name is too short"),
        ({"Name": "a b"}, 400, 'create a b: "a b" includes invalid characters'),
        ({"Name": "vv", "Driver": "nfs"}, 404, 'plugin "nfs" not found'),
        ({"Name": "vv", "DriverOpts": {"type": "tmpfs"}}, 501, "not supported yet: type"),
        ({"Name": "vv", "DriverOpts": {"bogus": "1"}}, 400, 'invalid option: "bogus"'),
        ({"Name": 5}, 400, "name: expected string"),
    ],
)
def test_create_errors(daemon: Daemon, body: object, status: int, message: str) -> None:
    got, error = call(daemon, "POST", "/volumes/create", body)
    assert got == status and message in error["message"]


def test_volume_in_use_is_a_conflict(daemon: Daemon) -> None:
    call(daemon, "POST", "/volumes/create", {"Name": "busy"})
    cid = "c" * 64
    use(daemon, cid, "busy")
    expected = {"message": f"remove busy: volume is in use - [{cid}]"}
    assert call(daemon, "DELETE", "/volumes/busy") == (409, expected)
    assert call(daemon, "DELETE", "/volumes/busy?force=true") == (409, expected)
    status, listed = call(daemon, "GET", '/volumes?filters={"dangling":{"true":true}}')
    assert status == 200 and listed["Volumes"] == []
    prune = '/volumes/prune?filters={"all":{"true":true}}'
    assert call(daemon, "POST", prune) == (200, {"VolumesDeleted": None, "SpaceReclaimed": 0})
    assert call(daemon, "GET", "/volumes/busy")[0] == 200


def test_prune_takes_anonymous_volumes_unless_all(daemon: Daemon) -> None:
    call(daemon, "POST", "/volumes/create", {"Name": "named"})
    _, anon = call(daemon, "POST", "/volumes/create", {})
    with open(os.path.join(anon["Mountpoint"], "blob"), "wb") as f:
        f.write(b"x" * 5000)
    assert call(daemon, "POST", "/volumes/prune") == (
        200,
        {"VolumesDeleted": [anon["Name"]], "SpaceReclaimed": 5000},
    )
    status, error = call(daemon, "POST", '/volumes/prune?filters={"bogus":["1"]}')
    assert status == 400 and error["message"] == "invalid filter 'bogus'"
    assert call(daemon, "POST", '/volumes/prune?filters={"all":["1"]}') == (
        200,
        {"VolumesDeleted": ["named"], "SpaceReclaimed": 0},
    )


def test_volumes_survive_a_restart_and_orphans_do_not(
    daemon: Daemon, daemons: list[Daemon]
) -> None:
    call(daemon, "POST", "/volumes/create", {"Name": "kept"})
    assert daemon.stop() == 0
    orphan = daemon.data_root / "volumes" / "orphan" / "_data"
    orphan.mkdir(parents=True)  # as a crash between the directory and its row leaves it
    again = start(daemon.base)
    daemons.append(again)
    status, listed = call(again, "GET", "/volumes")
    assert status == 200 and [v["Name"] for v in listed["Volumes"]] == ["kept"]
    assert sorted(os.listdir(daemon.data_root / "volumes")) == ["kept"]


def test_dockyard_cli(daemon: Daemon) -> None:
    made = daemon.cli("volume", "create", "--label", "app=db", "pgdata")
    assert made.returncode == 0 and made.stdout == "pgdata\n", made.stderr
    anon = daemon.cli("volume", "create").stdout.strip()
    assert HEX64.fullmatch(anon)
    table = daemon.cli("volume", "ls").stdout.splitlines()
    assert table[0].split() == ["DRIVER", "VOLUME", "NAME"]
    assert sorted(line.split()[1] for line in table[1:]) == sorted([anon, "pgdata"])
    assert daemon.cli("volume", "ls", "-q", "-f", "label=app=db").stdout == "pgdata\n"
    [shown] = json.loads(daemon.cli("volume", "inspect", "pgdata").stdout)
    assert shown["Labels"] == {"app": "db"}

    missing = daemon.cli("volume", "inspect", "nope")
    assert missing.returncode == 3 and "get nope: no such volume" in missing.stderr
    both = daemon.cli("volume", "rm", "nope", "pgdata")
    assert both.returncode == 3 and both.stdout == "pgdata\n"
    assert daemon.cli("volume", "rm", "-f", "nope").returncode == 0

    refused = _cli_with_input(daemon, "n\n", "volume", "prune")
    assert refused.returncode == 0 and "cancelled" in refused.stderr
    assert "anonymous local volumes not used by at least one container" in refused.stdout
    pruned = _cli_with_input(daemon, "y\n", "volume", "prune")
    assert f"Deleted Volumes:\n{anon}\n" in pruned.stdout
    assert "Total reclaimed space: 0B" in pruned.stdout
    assert daemon.cli("volume", "ls", "-q").stdout == ""


def _cli_with_input(daemon: Daemon, text: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DOCKYARD, "-H", daemon.hosts[0], *argv],
        input=text,
        capture_output=True,
        text=True,
        env=daemon.env,
        timeout=30,
        check=False,
    )


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker's CLI is not installed")
def test_docker_cli(daemon: Daemon) -> None:
    """docker's own CLI (28) drives the volume routes: create, ls, inspect, rm, prune."""
    env = {**daemon.env, "DOCKER_HOST": daemon.hosts[0], "DOCKER_CONFIG": str(daemon.base)}

    def docker(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *argv], capture_output=True, text=True, env=env, timeout=30, check=False
        )

    made = docker("volume", "create", "--label", "k=v", "dv1")
    assert made.returncode == 0 and made.stdout == "dv1\n", made.stderr
    anon = docker("volume", "create").stdout.strip()
    assert HEX64.fullmatch(anon)
    assert docker("volume", "ls", "-q", "--filter", "label=k=v").stdout == "dv1\n"
    listed = docker("volume", "ls", "--format", "{{.Driver}} {{.Name}}").stdout.splitlines()
    assert sorted(listed) == sorted(["local dv1", f"local {anon}"])
    [shown] = json.loads(docker("volume", "inspect", "dv1").stdout)
    assert shown["Name"] == "dv1" and shown["Labels"] == {"k": "v"}
    too_short = docker("volume", "create", "x")
    assert too_short.returncode == 1
    assert "create x: volume name is too short" in too_short.stderr
    pruned = docker("volume", "prune", "-f")
    assert pruned.returncode == 0 and anon in pruned.stdout, pruned.stderr
    assert docker("volume", "rm", "dv1").stdout == "dv1\n"
    gone = docker("volume", "inspect", "dv1")
    assert gone.returncode == 1 and "no such volume" in gone.stderr.lower()
