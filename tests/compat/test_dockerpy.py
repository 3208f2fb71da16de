"""docker-py 7.2 against dockyard: the high-level ``DockerClient`` and the low-level
``APIClient`` behave as they do with dockerd. The daemon and the cleanup come from
``tests/compat/conftest.py``."""

from __future__ import annotations

import io
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.compat.conftest import Compat

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container
else:
    docker = pytest.importorskip(
        "docker", reason="docker-py is not installed: pip install docker==7.2.0 (make deps)"
    )
    Container = docker.models.containers.Container

LOOP = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.1; done"


@pytest.fixture
def client(dockyard: Compat) -> Iterator[docker.DockerClient]:
    """A docker-py client on the daemon's socket (API version negotiated)."""
    c = docker.DockerClient(base_url=dockyard.host, timeout=20)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def api(dockyard: Compat) -> Iterator[docker.APIClient]:
    """docker-py's low-level client on the daemon's socket."""
    c = docker.APIClient(base_url=dockyard.host, timeout=20)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def running(client: docker.DockerClient, dockyard: Compat) -> Iterator[Container]:
    """A detached container that prints ``ready`` and exits 0 on SIGTERM."""
    container = client.containers.run(
        "busybox", ["sh", "-c", LOOP], detach=True, name=dockyard.unique("pyrun")
    )
    wait_logs(client.api, container.id, b"ready\n")
    yield container
    container.remove(force=True)


def wait_logs(api: docker.APIClient, cid: str, text: bytes, timeout: float = 10) -> bytes:
    """Poll a container's logs until *text* shows up; return them."""
    deadline = time.monotonic() + timeout
    while text not in (out := api.logs(cid)):
        assert time.monotonic() < deadline, f"{text!r} not in the logs: {out!r}"
        time.sleep(0.05)
    return bytes(out)


def test_ping_version_info(client: docker.DockerClient) -> None:
    assert client.ping() is True
    version = client.version()
    assert (version["ApiVersion"], version["MinAPIVersion"]) == ("1.45", "1.24")
    assert client.api.api_version == "1.45"
    info = client.info()
    assert info["OSType"] == "linux" and info["Images"] >= 1


def test_run_attached_returns_output(client: docker.DockerClient) -> None:
    assert client.containers.run("busybox", ["echo", "hi"], remove=True) == b"hi\n"
    out = client.containers.run("busybox", ["sh", "-c", "echo out; echo err >&2"], remove=True)
    assert out == b"out\n"


def test_run_remove_deletes_the_container(client: docker.DockerClient, dockyard: Compat) -> None:
    name = dockyard.unique("pyrm")
    client.containers.run("busybox", "true", name=name, remove=True)
    assert client.containers.list(all=True, filters={"name": name}) == []


def test_run_detached(client: docker.DockerClient, dockyard: Compat) -> None:
    name = dockyard.unique("pydet")
    container = client.containers.run(
        "busybox", ["sh", "-c", "echo detached"], detach=True, name=name, labels={"compat": "py"}
    )
    assert container.name == name
    assert container.wait(timeout=15) == {"StatusCode": 0, "Error": None}
    container.reload()
    assert container.status == "exited"
    assert container.labels == {"compat": "py"}
    assert container.image.tags == ["busybox:latest"]
    assert container.logs() == b"detached\n"
    listed = client.containers.list(all=True, filters={"label": "compat=py"})
    assert [c.id for c in listed] == [container.id]


def test_nonzero_exit_raises_container_error(client: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.ContainerError) as caught:
        client.containers.run("busybox", ["sh", "-c", "echo oops >&2; exit 2"], remove=True)
    assert caught.value.exit_status == 2
    assert caught.value.stderr == b"oops\n"


def test_logs_stream_and_not(client: docker.DockerClient, dockyard: Compat) -> None:
    script = "for i in 1 2 3; do echo line$i; sleep 0.1; done; echo done >&2"
    container = client.containers.run(
        "busybox", ["sh", "-c", script], detach=True, name=dockyard.unique("pylogs")
    )
    streamed = b"".join(container.logs(stream=True, follow=True))
    assert streamed == b"line1\nline2\nline3\ndone\n"
    assert container.wait(timeout=15)["StatusCode"] == 0
    assert container.logs(stderr=False) == b"line1\nline2\nline3\n"
    assert container.logs(stdout=False) == b"done\n"
    assert container.logs(tail=1) == b"done\n"


def test_wait_returns_the_exit_code(client: docker.DockerClient, dockyard: Compat) -> None:
    container = client.containers.run(
        "busybox", ["sh", "-c", "sleep 0.2; exit 9"], detach=True, name=dockyard.unique("pywait")
    )
    assert container.wait(timeout=15) == {"StatusCode": 9, "Error": None}


def test_exec_run_never_loses_output(running: Container) -> None:
    results = [running.exec_run("echo hi") for _ in range(20)]
    assert [(r.exit_code, r.output) for r in results] == [(0, b"hi\n")] * 20
    result = running.exec_run(["sh", "-c", "echo out; echo err >&2; exit 3"], demux=True)
    assert (result.exit_code, result.output) == (3, (b"out\n", b"err\n"))


def test_put_and_get_archive(running: Container) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mode = 6, 0o640
        tar.addfile(info, io.BytesIO(b"hello\n"))
    assert running.put_archive("/tmp", buf.getvalue()) is True
    assert running.exec_run("cat /tmp/hello.txt").output == b"hello\n"
    chunks, stat = running.get_archive("/tmp/hello.txt")
    assert stat["name"] == "hello.txt" and stat["size"] == 6
    assert stat["mode"] & 0o777 == 0o640
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        data = tar.extractfile("hello.txt")
        assert data is not None and data.read() == b"hello\n"
    with pytest.raises(docker.errors.NotFound):
        running.get_archive("/no/such/path")


def test_images_list_get_tag_remove(client: docker.DockerClient) -> None:
    busybox = client.images.get("busybox")
    assert "busybox:latest" in busybox.tags
    assert busybox.id in [i.id for i in client.images.list()]
    assert client.images.get(busybox.short_id.split(":")[1]).id == busybox.id
    assert busybox.tag("compat/py", "t1") is True
    assert client.images.get("compat/py:t1").id == busybox.id
    assert "compat/py:t1" in [t for i in client.images.list(name="compat/py") for t in i.tags]
    client.images.remove("compat/py:t1")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("compat/py:t1")
    assert client.images.get("busybox").id == busybox.id


def test_image_save_load(client: docker.DockerClient, dockyard: Compat) -> None:
    container = client.containers.run(
        "busybox", ["touch", "/saved"], detach=True, name=dockyard.unique("pysave")
    )
    assert container.wait(timeout=15)["StatusCode"] == 0
    image = container.commit("compat/pysaved", "v1")
    data = b"".join(image.save(named=True))
    container.remove()
    client.images.remove("compat/pysaved:v1")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(image.id)
    loaded = client.images.load(data)
    assert [(i.id, i.tags) for i in loaded] == [(image.id, ["compat/pysaved:v1"])]
    assert client.containers.run("compat/pysaved:v1", ["ls", "/saved"], remove=True) == (
        b"/saved\n"
    )


def test_volumes(client: docker.DockerClient, dockyard: Compat) -> None:
    name = dockyard.unique("pyvol")
    volume = client.volumes.create(name=name, driver="local", labels={"compat": "py"})
    assert (volume.name, volume.attrs["Driver"], volume.attrs["Labels"]) == (
        name,
        "local",
        {"compat": "py"},
    )
    assert name in [v.name for v in client.volumes.list()]
    assert client.volumes.get(name).attrs["Mountpoint"]
    out = client.containers.run(
        "busybox", ["sh", "-c", "echo v > /data/f; cat /data/f"], volumes={name: {"bind": "/data"}},
        remove=True,
    )  # fmt: skip
    assert out == b"v\n"
    client.volumes.get(name).remove()
    assert name not in [v.name for v in client.volumes.list()]
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(name)


def test_events_since_until(client: docker.DockerClient, dockyard: Compat) -> None:
    name = dockyard.unique("pyevt")
    since = int(time.time()) - 1
    client.containers.run("busybox", "true", name=name, remove=True)
    until = int(time.time()) + 1
    started = time.monotonic()
    events = list(client.events(since=since, until=until, decode=True, filters={"container": name}))
    assert time.monotonic() - started < 5, "the event stream did not end at until"
    actions = [e["Action"] for e in events if e.get("Type") == "container"]
    assert [a for a in actions if a in ("create", "start", "die", "destroy")] == [
        "create",
        "start",
        "die",
        "destroy",
    ], events
    assert all(e["Actor"]["Attributes"]["name"] == name for e in events)
    assert all(since <= e["time"] <= until for e in events)


def test_df(client: docker.DockerClient) -> None:
    df = client.df()
    assert {"LayersSize", "Images", "Containers", "Volumes", "BuildCache"} <= set(df)
    assert any("busybox:latest" in (i.get("RepoTags") or []) for i in df["Images"])


def test_run_unknown_image(client: docker.DockerClient) -> None:
    # docker-py pulls after the create's 404 "No such image". The image names a registry on a
    # closed loopback port (test traffic never leaves the machine): the pull fails with 503,
    # naming the registry, and no container is left.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    before = client.containers.list(all=True)
    with pytest.raises(docker.errors.APIError) as caught:
        client.containers.run(f"127.0.0.1:{port}/nosuchimage:1", "true", remove=True)
    error = caught.value
    assert error.status_code == 503, error
    assert f"127.0.0.1:{port}: cannot reach the registry" in str(error.explanation)
    assert client.containers.list(all=True) == before


def test_low_level_api_client(api: docker.APIClient, dockyard: Compat, tmp_path: Path) -> None:
    (tmp_path / "ro.txt").write_text("bound\n")
    name = dockyard.unique("pylow")
    host_config = api.create_host_config(
        binds={str(tmp_path): {"bind": "/mnt", "mode": "ro"}}, mem_limit="64m"
    )
    created = api.create_container(
        "busybox", ["sh", "-c", "cat /mnt/ro.txt; " + LOOP], name=name, host_config=host_config,
        labels={"compat": "low"},
    )  # fmt: skip
    cid = created["Id"]
    assert created["Warnings"] in (None, [])
    api.start(cid)
    assert wait_logs(api, cid, b"ready\n") == b"bound\nready\n"
    api.kill(cid)
    assert api.wait(cid, timeout=15)["StatusCode"] == 137
    info = api.inspect_container(cid)
    assert info["Name"] == f"/{name}"
    assert (info["State"]["Status"], info["State"]["ExitCode"]) == ("exited", 137)
    assert info["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert info["Config"]["Labels"] == {"compat": "low"}
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/mnt"]["Source"] == str(tmp_path) and mounts["/mnt"]["RW"] is False
    api.remove_container(cid, v=True, force=True)
    with pytest.raises(docker.errors.NotFound):
        api.inspect_container(cid)


def attached(api: docker.APIClient, cid: str, stop_after: bytes | None = None) -> bytes:
    """Output of ``attach(stream=True, logs=True)`` up to *stop_after* (or to the end); a
    watchdog closes the stream after 5 s since docker-py polls its socket without a timeout."""
    stream = api.attach(cid, stream=True, logs=True)
    watchdog = threading.Timer(5, stream.close)
    watchdog.start()
    seen = b""
    try:
        for chunk in stream:
            seen += chunk
            if stop_after is not None and stop_after in seen:
                break
    except OSError:  # closed by the watchdog
        pass
    finally:
        watchdog.cancel()
        stream.close()
    return seen


def test_low_level_attach_replays_logs(api: docker.APIClient, dockyard: Compat) -> None:
    done = api.create_container(
        "busybox", ["sh", "-c", "echo one; echo two >&2"], name=dockyard.unique("pydone")
    )["Id"]
    api.start(done)
    assert api.wait(done, timeout=15)["StatusCode"] == 0
    # An exited container: the logs, then the end of the stream.
    assert attached(api, done) == b"one\ntwo\n"
    live = api.create_container(
        "busybox", ["sh", "-c", "echo first; " + LOOP], name=dockyard.unique("pylive")
    )["Id"]
    api.start(live)
    assert wait_logs(api, live, b"ready\n") == b"first\nready\n"
    # A running container: the logs so far, then the live output.
    assert attached(api, live, stop_after=b"ready\n") == b"first\nready\n"
    api.kill(live, "TERM")
    assert api.wait(live, timeout=15)["StatusCode"] == 0


def test_name_conflict_is_409(client: docker.DockerClient, running: Container) -> None:
    with pytest.raises(docker.errors.APIError) as caught:
        client.containers.create("busybox", "true", name=running.name)
    assert caught.value.status_code == 409
    assert "is already in use" in str(caught.value.explanation)


def test_unknown_container_is_not_found(client: docker.DockerClient) -> None:
    with pytest.raises(docker.errors.NotFound) as caught:
        client.containers.get("nosuchcontainer")
    assert caught.value.explanation == "No such container: nosuchcontainer"
    with pytest.raises(docker.errors.NotFound):
        client.api.start("nosuchcontainer")
