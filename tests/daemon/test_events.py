"""``GET /events`` against a real daemon: image and volume events, since/until replays, filters in
Docker's list and map forms, the stream closing at ``until``, headers before any event, and the
dockyard and docker CLIs printing them. Container events are in ``tests/linux/test_events.py``.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.daemon.conftest import DOCKYARD, Daemon, request, start

V = "/v1.45"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: importing images writes root-owned layer files"
)


@pytest.fixture(scope="module")
def evd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for the module; each test looks at its own window of events."""
    daemon = start(tmp_path_factory.mktemp("events") / "d")
    try:
        yield daemon
    finally:
        daemon.stop(signal.SIGTERM)


def now() -> str:
    """The current time as the docker CLI sends it: seconds.nanoseconds."""
    ns = time.time_ns()
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def events(daemon: Daemon, filters: object = None, **query: str) -> list[dict[str, Any]]:
    """``GET /events`` with *query* (give ``until``: the stream must end) and *filters*."""
    if filters is not None:
        query["filters"] = json.dumps(filters)
    status, headers, body = request(daemon, "GET", f"{V}/events?{urlencode(query)}")
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def call(daemon: Daemon, method: str, path: str, body: object = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    data = json.dumps(body).encode() if body is not None else None
    status, _, raw = request(daemon, method, V + path, data, headers)
    return status, json.loads(raw) if raw else None


def dy(daemon: Daemon, *argv: str, stdin: bytes = b"") -> str:
    """Run the dockyard CLI; it must succeed; return its stdout."""
    proc = subprocess.run(
        [*DOCKYARD, "-H", daemon.hosts[0], *argv], input=stdin, capture_output=True,
        env=daemon.env, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{argv}: {proc.returncode}\n{proc.stderr.decode()}"
    return proc.stdout.decode()


def rootfs_tar() -> bytes:
    """A one-file root file system, enough to import an image."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = secrets.token_hex(8).encode()  # a new image id each time
        info = tarfile.TarInfo("etc/hello")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def brief(found: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(m["Type"], m["Action"], m["Actor"]["ID"]) for m in found]


# -- volumes -------------------------------------------------------------------------------------


def test_volume_events_replay_in_order_with_dockers_shape(evd: Daemon) -> None:
    name = f"ev-{secrets.token_hex(4)}"
    since = now()
    assert call(evd, "POST", "/volumes/create", {"Name": name, "Labels": {"a": "b"}})[0] == 201
    assert call(evd, "DELETE", f"/volumes/{name}")[0] == 204
    found = events(evd, {"volume": [name]}, since=since, until=now())
    assert brief(found) == [("volume", "create", name), ("volume", "destroy", name)]
    first = found[0]
    assert first["Actor"]["Attributes"] == {"driver": "local"}
    assert first["scope"] == "local" and not {"status", "id", "from"} & set(first)
    assert first["time"] == first["timeNano"] // 10**9
    assert float(since) * 10**9 - 1e6 <= first["timeNano"] <= time.time_ns()


def test_filters_in_list_and_map_form_and_event_filter(evd: Daemon) -> None:
    a, b = f"ev-{secrets.token_hex(4)}", f"ev-{secrets.token_hex(4)}"
    since = now()
    for name in (a, b):
        call(evd, "POST", "/volumes/create", {"Name": name})
    call(evd, "DELETE", f"/volumes/{a}")
    until = now()
    as_list = events(evd, {"type": ["volume"], "volume": [a, b]}, since=since, until=until)
    as_map = events(evd, {"type": {"volume": True}, "volume": {a: True, b: True}},
                    since=since, until=until)  # fmt: skip
    assert brief(as_list) == brief(as_map)
    assert [m["Action"] for m in as_list] == ["create", "create", "destroy"]
    destroyed = events(
        evd, {"event": {"destroy": True}, "volume": [a, b]}, since=since, until=until
    )
    assert brief(destroyed) == [("volume", "destroy", a)]
    assert events(evd, {"type": ["image"], "volume": [a]}, since=since, until=until) == []
    call(evd, "DELETE", f"/volumes/{b}")


def test_until_alone_replays_up_to_it_and_since_after_until_is_refused(evd: Daemon) -> None:
    name = f"ev-{secrets.token_hex(4)}"
    call(evd, "POST", "/volumes/create", {"Name": name})
    cut = now()
    call(evd, "DELETE", f"/volumes/{name}")
    assert [m["Action"] for m in events(evd, {"volume": [name]}, until=cut)] == ["create"]
    status, _, body = request(evd, "GET", f"{V}/events?since={now()}&until={cut}")
    assert status == 400 and b"since" in body


def test_until_in_the_future_closes_the_stream_on_time(evd: Daemon) -> None:
    began = time.monotonic()
    ahead = f"{time.time() + 1.0:.9f}"
    assert events(evd, {"volume": ["nothing-here"]}, until=ahead) == []
    assert 0.8 <= time.monotonic() - began < 5


def test_headers_arrive_before_any_event_then_live_events_stream(evd: Daemon) -> None:
    name = f"ev-{secrets.token_hex(4)}"
    conn = evd.raw()
    try:
        conn.request("GET", f"{V}/events?" + urlencode({"filters": json.dumps({"volume": [name]})}))
        assert conn.sock is not None
        conn.sock.settimeout(5)  # no event matches yet: only the headers can arrive
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "application/json"
        call(evd, "POST", "/volumes/create", {"Name": name})
        live = json.loads(response.readline())
        assert (live["Type"], live["Action"], live["Actor"]["ID"]) == ("volume", "create", name)
    finally:
        conn.close()
        call(evd, "DELETE", f"/volumes/{name}")


def test_bad_filters_and_times_are_400_naming_them(evd: Daemon) -> None:
    status, headers, body = request(evd, "GET", f"{V}/events?filters=" + '{"colour":["red"]}')
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert "colour" in json.loads(body)["message"]
    status, _, body = request(evd, "GET", f"{V}/events?since=yesterday")
    assert status == 400 and "since" in json.loads(body)["message"]


# -- images --------------------------------------------------------------------------------------


@needs_root
@pytest.mark.slow
def test_image_events_import_tag_save_load_untag_delete(evd: Daemon, tmp_path: Path) -> None:
    repo = f"evimg{secrets.token_hex(3)}"
    since = now()
    image = dy(evd, "import", "-", f"{repo}:1", stdin=rootfs_tar()).strip().splitlines()[-1]
    dy(evd, "tag", f"{repo}:1", f"{repo}:2")
    dy(evd, "save", "-o", str(tmp_path / "saved.tar"), f"{repo}:1")
    dy(evd, "rmi", f"{repo}:2")
    dy(evd, "rmi", f"{repo}:1")
    dy(evd, "load", "-i", str(tmp_path / "saved.tar"))
    until = now()
    dy(evd, "rmi", f"{repo}:1")
    found = events(evd, {"type": ["image"]}, since=since, until=until)
    named = [(m["Action"], m["Actor"]["Attributes"]["name"]) for m in found]
    assert named == [
        ("tag", f"{repo}:1"), ("import", image), ("tag", f"{repo}:2"), ("save", f"{repo}:1"),
        ("untag", f"{repo}:2"), ("untag", f"{repo}:1"), ("delete", image), ("load", f"{repo}:1"),
    ]  # fmt: skip
    assert {m["Actor"]["ID"] for m in found} == {image}
    assert all(m["status"] == m["Action"] and m["id"] == image and "from" not in m for m in found)
    by_repo = events(evd, {"image": [repo]}, since=since, until=until)  # tags stripped: repo
    assert [m["Action"] for m in by_repo] == ["tag", "tag", "save", "untag", "untag", "load"]


# -- clients ---------------------------------------------------------------------------------------


def test_dockyard_cli_prints_events_like_docker(evd: Daemon) -> None:
    name = f"ev-{secrets.token_hex(4)}"
    since = now()
    call(evd, "POST", "/volumes/create", {"Name": name})
    call(evd, "DELETE", f"/volumes/{name}")
    until = now()
    out = dy(evd, "events", "--since", since, "--until", until, "-f", f"volume={name}")
    lines = out.splitlines()
    assert len(lines) == 2
    stamp, kind, action, actor, attrs = lines[0].split(" ", 4)
    assert (kind, action, actor, attrs) == ("volume", "create", name, "(driver=local)")
    assert len(stamp.split(".")[1].rstrip("Z").split("+")[0].split("-")[0]) == 9  # nanoseconds
    as_json = dy(evd, "events", "--since", since, "--until", until, "-f", f"volume={name}",
                 "--format", "{{json .}}")  # fmt: skip
    assert [json.loads(line)["Action"] for line in as_json.splitlines()] == ["create", "destroy"]


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker's CLI is not installed")
def test_docker_cli_prints_events(evd: Daemon) -> None:
    name = f"ev-{secrets.token_hex(4)}"
    since = now()
    call(evd, "POST", "/volumes/create", {"Name": name})
    call(evd, "DELETE", f"/volumes/{name}")
    until = now()
    proc = subprocess.run(
        ["docker", "events", "--since", since, "--until", until, "--filter", f"volume={name}"],
        capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, "DOCKER_HOST": f"unix://{evd.sock}"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert [line.split(" ")[1:4] for line in proc.stdout.splitlines()] == [
        ["volume", "create", name], ["volume", "destroy", name],
    ]  # fmt: skip
