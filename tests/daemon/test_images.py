"""Image commands end to end: real daemons, the dockyard CLI and the Docker image routes.

Images come from ``contrib/mkimage/busybox.sh`` (a reproducible busybox rootfs tar) or from small
tars and docker-archives built here. After a daemon stops, its ``graph.db`` is read with sqlite3
in read-only mode to see which rows were left.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.daemon.conftest import DOCKYARD, ROOT, Daemon, request, start

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the daemon's overlay driver and root-owned layer files"
)

HEX64 = re.compile(r"[0-9a-f]{64}")
BUSYBOX_SH = ROOT / "contrib" / "mkimage" / "busybox.sh"


# --- helpers --------------------------------------------------------------------------------


class Result(NamedTuple):
    code: int
    out: str
    err: str


def dy(daemon: Daemon, *argv: str, input: bytes | None = None, timeout: float = 120) -> Result:
    """Run the dockyard CLI against *daemon*, with *input* on stdin."""
    proc = subprocess.run(
        [*DOCKYARD, "-H", daemon.hosts[0], *argv],
        input=input if input is not None else b"",
        capture_output=True,
        env=daemon.env,
        timeout=timeout,
        check=False,
    )
    return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def ok(daemon: Daemon, *argv: str, input: bytes | None = None) -> str:
    """Run the CLI; fail the test unless it succeeds; return its stdout."""
    result = dy(daemon, *argv, input=input)
    assert result.code == 0, f"dockyard {' '.join(argv)}: {result.code}\n{result.err}"
    return result.out


def import_(daemon: Daemon, tar: bytes, *argv: str) -> str:
    """Import *tar* from stdin (argv: reference, -c/-m options); return the image id."""
    return ok(daemon, "import", "-", *argv, input=tar).strip().splitlines()[-1]


def inspect(daemon: Daemon, name: str) -> dict[str, Any]:
    found = json.loads(ok(daemon, "inspect", name))
    assert len(found) == 1
    return found[0]  # type: ignore[no-any-return]


def listed(daemon: Daemon, *argv: str) -> list[dict[str, Any]]:
    """``dockyard images --json`` rows."""
    out = ok(daemon, "images", "--json", *argv)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def ids(daemon: Daemon, *argv: str) -> list[str]:
    return [row["Id"] for row in listed(daemon, *argv)]


def _query(data_root: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{data_root / 'graph.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def table_rows(data_root: Path, table: str) -> list[tuple[Any, ...]]:
    """Every row of *table* in the (stopped) daemon's graph.db, opened read-only."""
    return _query(data_root, f"SELECT * FROM {table}")


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_of(files: dict[str, bytes | None]) -> bytes:
    """A layer tar: name → content, or None for a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def image_config(diff_ids: list[str], note: str) -> bytes:
    history: list[dict[str, object]] = [
        {"created": "2024-01-01T00:00:00Z", "created_by": f"{note} {n}"}
        for n in range(len(diff_ids))
    ]
    history.append({"created": "2024-01-01T00:00:01Z", "created_by": "CMD sh", "empty_layer": True})
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    return json.dumps(config).encode()


def write_docker_archive(
    out: Path, layers: list[Path], diff_ids: list[str], tags: list[str], note: str
) -> str:
    """Write a docker-archive (``<hex>/layer.tar``, config, manifest.json); return the image id."""
    config = image_config(diff_ids, note)
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    layer_names = [f"{d.removeprefix('sha256:')}/layer.tar" for d in diff_ids]
    manifest = json.dumps([{"Config": config_name, "RepoTags": tags, "Layers": layer_names}])
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, path in zip(layer_names, layers, strict=True):
            tf.add(path, arcname=name)
        for name, data in ((config_name, config), ("manifest.json", manifest.encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return digest(config)


def archive_json(archive: bytes, name: str) -> Any:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        member = tf.extractfile(name)
        assert member is not None
        return json.loads(member.read())


def archive_config(archive: bytes) -> bytes:
    """The config bytes of the single image in a saved archive."""
    manifest = archive_json(archive, "manifest.json")
    assert len(manifest) == 1
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        member = tf.extractfile(manifest[0]["Config"])
        assert member is not None
        return member.read()


def tree_lines(daemon: Daemon) -> list[str]:
    return ok(daemon, "images", "--tree").splitlines()


def files_named(top: Path, name: str) -> list[Path]:
    return [Path(d, f) for d, dirs, fs in os.walk(top) for f in fs + dirs if f == name]


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _running(daemon: Daemon, job: str) -> bool:
    """Whether ``dockyard jobs ps`` lists a running job named *job*."""
    result = dy(daemon, "jobs", "ps", "--json", timeout=10)
    return any(json.loads(line)["name"] == job for line in result.out.splitlines() if line)


def _layer_states(daemon: Daemon) -> list[str]:
    """The states of the daemon's layer rows, sorted (read while it runs: WAL allows it)."""
    try:
        return sorted(row[0] for row in _query(daemon.data_root, "SELECT state FROM layers"))
    except sqlite3.Error:
        return []


def _staged(daemon: Daemon, larger_than: int = -1) -> bool:
    """Whether a layer tar larger than *larger_than* bytes is being written."""
    tars = daemon.data_root / "layertars"
    try:
        staged = [p for p in tars.iterdir() if p.name.endswith(".tar.tmp")]
        return any(p.stat().st_size > larger_than for p in staged)
    except FileNotFoundError:
        return False


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def busybox() -> bytes:
    """The busybox rootfs tar (built once per module)."""
    if shutil.which("busybox") is None and not Path("/bin/busybox").exists():
        pytest.skip("busybox-static is not installed (apt-get install -y busybox-static)")
    proc = subprocess.run([str(BUSYBOX_SH)], capture_output=True, check=False, timeout=120)
    if proc.returncode != 0:
        pytest.skip(f"busybox.sh failed: {proc.stderr.decode().strip()}")
    return proc.stdout


@pytest.fixture
def http_files() -> Iterator[tuple[str, dict[str, bytes]]]:
    """An HTTP server on 127.0.0.1 serving the returned dict (path → body); 404 for the rest."""
    files: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-tar")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="http-files", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", files
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# --- import ---------------------------------------------------------------------------------


def test_import_from_stdin(daemon: Daemon, busybox: bytes) -> None:
    image = import_(
        daemon, busybox, "busybox:latest", "-c", 'CMD ["sh"]', "-c", "ENV A=1", "-m", "note"
    )
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", image)

    status, _, saved = request(daemon, "GET", "/images/get?names=busybox")
    assert status == 200
    assert image == digest(archive_config(saved))

    found = inspect(daemon, "busybox")
    assert found["Id"] == image and found["RepoTags"] == ["busybox:latest"]
    assert found["Config"]["Cmd"] == ["sh"] and found["Config"]["Env"] == ["A=1"]
    assert found["Comment"] == "note" and found["Parent"] == ""
    assert found["RootFS"] == {"Type": "layers", "Layers": [digest(busybox)]}
    assert found["Os"] == "linux" and found["Size"] > 0
    assert inspect(daemon, image)["Id"] == image
    assert inspect(daemon, image.removeprefix("sha256:")[:12])["Id"] == image

    rows = [json.loads(line) for line in ok(daemon, "history", "--json", "busybox").splitlines()]
    assert len(rows) == 1
    assert rows[0]["Id"] == image and rows[0]["Comment"] == "note"
    assert rows[0]["Tags"] == ["busybox:latest"] and rows[0]["Size"] == found["Size"]
    text = ok(daemon, "history", "busybox").splitlines()
    assert text[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert len(text) == 2 and text[1].startswith(image.removeprefix("sha256:")[:12])
    assert text[1].endswith("note")


def test_import_with_a_bad_change_leaves_nothing(daemon: Daemon, busybox: bytes) -> None:
    result = dy(daemon, "import", "-", "bad:1", "-c", "FROM x", input=busybox)
    assert result.code == 2, result
    assert "FROM" in result.err and "not a supported instruction" in result.err
    assert ok(daemon, "images", "-q") == ""
    daemon.stop()
    assert table_rows(daemon.data_root, "layers") == []
    assert table_rows(daemon.data_root, "images") == []
    assert list((daemon.data_root / "layertars").iterdir()) == []


def test_import_from_a_url(
    daemon: Daemon, busybox: bytes, http_files: tuple[str, dict[str, bytes]]
) -> None:
    url, files = http_files
    missing = f"{url}/nosuch.tar"
    result = dy(daemon, "import", missing, "gone:1")
    assert result.code != 0 and missing in result.err, result
    assert ok(daemon, "images", "-q") == ""

    files["/rootfs/busybox.tar"] = busybox
    out = ok(daemon, "import", f"{url}/rootfs/busybox.tar", "web:1", "-c", "WORKDIR /tmp")
    image = out.strip().splitlines()[-1]
    found = inspect(daemon, "web:1")
    assert found["Id"] == image and found["Config"]["WorkingDir"] == "/tmp"
    assert found["RootFS"]["Layers"] == [digest(busybox)]

    # The same root file system gzip-compressed: the same diff_id, the layer stored once.
    files["/rootfs/busybox.tar.gz"] = gzip.compress(busybox, mtime=0)
    out = ok(daemon, "import", f"{url}/rootfs/busybox.tar.gz", "web:gz")
    assert inspect(daemon, "web:gz")["RootFS"]["Layers"] == [digest(busybox)]
    tree = tree_lines(daemon)
    assert len(tree) == 1 and "web:1" in tree[0] and "web:gz" in tree[0]
    daemon.stop()
    assert len(table_rows(daemon.data_root, "layers")) == 1


def test_client_hanging_up_mid_import_leaves_nothing(daemon: Daemon, busybox: bytes) -> None:
    client = subprocess.Popen(
        [*DOCKYARD, "-H", daemon.hosts[0], "import", "-", "half:1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=daemon.env,
    )
    try:
        assert client.stdin is not None
        client.stdin.write(busybox[: len(busybox) // 2])
        client.stdin.flush()
        deadline = time.monotonic() + 30
        while not _staged(daemon):  # the layer is being written
            assert time.monotonic() < deadline, "the import never started writing its layer"
            time.sleep(0.02)
    finally:
        client.kill()
        client.wait()
    deadline = time.monotonic() + 30
    while _running(daemon, "import") or _staged(daemon):
        assert time.monotonic() < deadline, "the import kept running after its client hung up"
        time.sleep(0.05)
    assert ok(daemon, "images", "-a", "-q") == "" and ok(daemon, "images", "--tree") == ""
    daemon.stop()
    assert table_rows(daemon.data_root, "layers") == []
    assert list((daemon.data_root / "layertars").iterdir()) == []


def test_cancelling_an_import_by_id_leaves_nothing(daemon: Daemon, busybox: bytes) -> None:
    client = subprocess.Popen(
        [*DOCKYARD, "-H", daemon.hosts[0], "import", "-", "half:1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=daemon.env,
    )
    try:
        assert client.stdin is not None
        client.stdin.write(busybox[: len(busybox) // 2])  # and then the client waits, connected
        client.stdin.flush()
        deadline = time.monotonic() + 30
        while not _staged(daemon):
            assert time.monotonic() < deadline, "the import never started writing its layer"
            time.sleep(0.02)
        (job,) = [
            j for j in _json_lines(ok(daemon, "jobs", "ps", "--json")) if j["name"] == "import"
        ]
        assert ok(daemon, "jobs", "cancel", job["id"]).strip() == job["id"]
        deadline = time.monotonic() + 10
        while _running(daemon, "import") or _staged(daemon):
            assert time.monotonic() < deadline, "the import kept running after it was cancelled"
            time.sleep(0.05)
    finally:
        client.kill()
        client.wait()
    history = _json_lines(ok(daemon, "jobs", "history", "--json"))
    (done,) = [j for j in history if j["id"] == job["id"]]
    assert done["state"] == "cancelled"
    assert ok(daemon, "images", "-a", "-q") == ""
    daemon.stop()
    assert table_rows(daemon.data_root, "layers") == []
    assert list((daemon.data_root / "layertars").iterdir()) == []


# --- listing --------------------------------------------------------------------------------


def test_images_table_json_and_filters(daemon: Daemon, busybox: bytes) -> None:
    labelled = import_(daemon, busybox, "busybox:latest", "-c", "LABEL k=v other=1")
    other = import_(daemon, busybox, "other:1", "-c", "CMD sleep")
    dangling = import_(daemon, busybox, "-c", "CMD true")
    assert len({labelled, other, dangling}) == 3

    rows = listed(daemon)
    assert [r["Id"] for r in rows] == [dangling, other, labelled]  # newest first
    by_id = {r["Id"]: r for r in rows}
    assert by_id[labelled]["RepoTags"] == ["busybox:latest"]
    assert by_id[labelled]["Labels"] == {"k": "v", "other": "1"}
    assert by_id[dangling]["RepoTags"] == [] and by_id[other]["Labels"] == {}
    assert all(r["Size"] > 0 and r["Created"] > 0 for r in rows)

    table = ok(daemon, "images").splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    cells = [line.split()[:3] for line in table[1:]]
    assert cells == [
        ["<none>", "<none>", dangling[7:19]],
        ["other", "1", other[7:19]],
        ["busybox", "latest", labelled[7:19]],
    ]
    assert ok(daemon, "images", "-q").split() == [dangling[7:19], other[7:19], labelled[7:19]]

    assert ids(daemon, "-f", "dangling=true") == [dangling]
    assert ids(daemon, "-f", "dangling=false") == [other, labelled]
    assert ids(daemon, "-f", "reference=busy*") == [labelled]
    assert ids(daemon, "-f", "reference=other:*") == [other]
    assert ids(daemon, "-f", "label=k=v") == [labelled]
    assert ids(daemon, "-f", "label=k") == [labelled]
    assert ids(daemon, "-f", "label=k=w") == []
    assert ids(daemon, "-f", "before=other:1") == [labelled]
    assert ids(daemon, "-f", "since=busybox") == [dangling, other]
    assert ids(daemon, "-f", "since=busybox", "-f", "before=" + dangling[7:19]) == [other]
    assert ids(daemon, "-a") == [dangling, other, labelled]

    for bad in ("nosuch=1", "size=3"):
        result = dy(daemon, "images", "-f", bad)
        assert result.code == 2 and "invalid filter" in result.err, result
    result = dy(daemon, "images", "-f", "dangling=maybe")
    assert result.code == 2, result


# --- tag and rmi ----------------------------------------------------------------------------


def test_tag_and_rmi(daemon: Daemon, busybox: bytes) -> None:
    image = import_(daemon, busybox, "busybox:latest")
    short = image.removeprefix("sha256:")[:12]
    ok(daemon, "tag", "busybox", "mine:1")
    table = ok(daemon, "images").splitlines()[1:]
    assert sorted(line.split()[:3] for line in table) == [
        ["busybox", "latest", short],
        ["mine", "1", short],
    ]

    assert ok(daemon, "rmi", "mine:1").splitlines() == ["Untagged: mine:1"]
    assert listed(daemon)[0]["RepoTags"] == ["busybox:latest"]

    ok(daemon, "tag", image, "localhost:5000/team/mine:2")
    result = dy(daemon, "rmi", short)
    assert result.code == 4 and "must be forced" in result.err, result
    assert ids(daemon) == [image]

    out = ok(daemon, "rmi", "-f", short).splitlines()
    assert sorted(out[:2]) == ["Untagged: busybox:latest", "Untagged: localhost:5000/team/mine:2"]
    assert out[2:] == [f"Deleted: {image}"]
    assert ok(daemon, "images", "-q") == ""

    result = dy(daemon, "rmi", "nosuch")
    assert result.code == 3 and "No such image" in result.err, result

    # One tag left: by id, no force needed.
    image = import_(daemon, busybox, "busybox:latest")
    assert ok(daemon, "rmi", image[7:19]).splitlines() == [
        "Untagged: busybox:latest",
        f"Deleted: {image}",
    ]
    daemon.stop()
    assert table_rows(daemon.data_root, "layers") == []
    assert table_rows(daemon.data_root, "tags") == []


# --- save and load --------------------------------------------------------------------------


def test_save_rmi_load_round_trip(daemon: Daemon, busybox: bytes, tmp_path: Path) -> None:
    image = import_(daemon, busybox, "busybox:latest", "-c", "ENV A=1")
    ok(daemon, "tag", "busybox", "bb:2")
    saved = tmp_path / "busybox.tar"
    ok(daemon, "save", "-o", str(saved), "busybox", "bb:2")
    assert saved.is_file() and not Path(f"{saved}.part").exists()
    layers = inspect(daemon, "busybox")["RootFS"]["Layers"]

    ok(daemon, "rmi", "-f", image)
    assert ok(daemon, "images", "-q") == ""

    out = ok(daemon, "load", "-i", str(saved)).splitlines()
    assert sorted(out) == ["Loaded image: bb:2", "Loaded image: busybox:latest"]
    rows = listed(daemon)
    assert [r["Id"] for r in rows] == [image]
    assert sorted(rows[0]["RepoTags"]) == ["bb:2", "busybox:latest"]
    found = inspect(daemon, "bb:2")
    assert found["RootFS"]["Layers"] == layers and found["Config"]["Env"] == ["A=1"]
    tree = tree_lines(daemon)
    assert len(tree) == 1 and layers[0][7:19] in tree[0]
    assert "busybox:latest" in tree[0] and "bb:2" in tree[0]

    # Loading what is already there changes nothing.
    ok(daemon, "load", "-q", "-i", str(saved))
    assert ids(daemon) == [image]

    # A gzip-compressed save loads too.
    ok(daemon, "rmi", "-f", image)
    packed = tmp_path / "busybox.tar.gz"
    packed.write_bytes(gzip.compress(saved.read_bytes(), mtime=0))
    assert "Loaded image: busybox:latest" in ok(daemon, "load", "-i", str(packed))
    assert ids(daemon) == [image]


def test_saves_are_byte_identical(daemon: Daemon, busybox: bytes, tmp_path: Path) -> None:
    import_(daemon, busybox, "busybox:latest")
    import_(daemon, tar_of({"etc/": None, "etc/motd": b"small\n"}), "small:1")

    def save(name: str, *images: str) -> bytes:
        out = tmp_path / name
        ok(daemon, "save", "-o", str(out), *images)
        return out.read_bytes()

    first, second = save("a1.tar", "busybox", "small:1"), save("a2.tar", "busybox", "small:1")
    assert first == second
    one, again = save("b1.tar", "busybox"), save("b2.tar", "busybox")
    assert one == again and one != first
    manifest = archive_json(first, "manifest.json")
    assert [m["RepoTags"] for m in manifest] == [["busybox:latest"], ["small:1"]]
    twice = save("c.tar", "busybox", "busybox")
    assert [m["RepoTags"] for m in archive_json(twice, "manifest.json")] == [["busybox:latest"]]


def test_skopeo_reads_a_save(daemon: Daemon, busybox: bytes, tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    import_(daemon, busybox, "busybox:latest")
    import_(daemon, tar_of({"hello": b"world\n"}), "hello:1")
    saved = tmp_path / "two.tar"
    ok(daemon, "save", "-o", str(saved), "busybox", "hello:1")
    for name in ("busybox:latest", "hello:1"):
        proc = subprocess.run(
            ["skopeo", "inspect", f"docker-archive:{saved}:{name}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["Layers"] == inspect(daemon, name)["RootFS"]["Layers"]


def test_load_moves_a_tag_and_names_the_old_image(
    daemon: Daemon, busybox: bytes, tmp_path: Path
) -> None:
    first = import_(daemon, busybox, "busybox:latest", "-c", "ENV V=1")
    saved = tmp_path / "first.tar"
    ok(daemon, "save", "-o", str(saved), "busybox")
    second = import_(daemon, busybox, "busybox:latest", "-c", "ENV V=2")
    assert listed(daemon, "-f", "dangling=true")[0]["Id"] == first

    assert ok(daemon, "load", "-i", str(saved)).splitlines() == [
        f"The image busybox:latest already exists, renaming the old one with ID {second} "
        "to empty string",
        "Loaded image: busybox:latest",
    ]
    assert inspect(daemon, "busybox")["Id"] == first
    assert ids(daemon, "-f", "dangling=true") == [second]


def test_save_by_id_loads_untagged(daemon: Daemon, busybox: bytes, tmp_path: Path) -> None:
    image = import_(daemon, busybox, "busybox:latest")
    saved = tmp_path / "by-id.tar"
    ok(daemon, "save", "-o", str(saved), image[7:19])
    assert archive_json(saved.read_bytes(), "manifest.json")[0]["RepoTags"] in (None, [])
    ok(daemon, "rmi", "busybox")
    assert ok(daemon, "load", "-i", str(saved)) == f"Loaded image ID: {image}\n"
    assert listed(daemon) == [{**listed(daemon)[0], "Id": image, "RepoTags": []}]


def test_a_failed_load_leaves_no_layer(daemon: Daemon, busybox: bytes, tmp_path: Path) -> None:
    # The first layer is good and gets stored; the second does not match its diff_id.
    base_tar, top_tar = tmp_path / "base.tar", tmp_path / "top.tar"
    base_tar.write_bytes(busybox)
    top_tar.write_bytes(tar_of({"etc/motd": b"lies\n"}))
    archive = tmp_path / "bad.tar"
    wrong = "sha256:" + "1" * 64
    write_docker_archive(archive, [base_tar, top_tar], [digest(busybox), wrong], ["bad:1"], "bad")
    result = dy(daemon, "load", "-i", str(archive))
    assert result.code == 2 and wrong in result.err, result
    assert ok(daemon, "images", "-a", "-q") == ""
    assert ok(daemon, "images", "--tree") == "", "a layer of the failed load was left behind"
    daemon.stop()
    assert table_rows(daemon.data_root, "layers") == []
    assert list((daemon.data_root / "layertars").iterdir()) == []


# --- the Docker routes ----------------------------------------------------------------------


def test_docker_image_routes(daemon: Daemon, busybox: bytes) -> None:
    image = import_(daemon, busybox, "busybox:latest", "-m", "via cli")

    status, headers, body = request(daemon, "GET", "/images/json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert [(i["Id"], i["RepoTags"]) for i in json.loads(body)] == [(image, ["busybox:latest"])]

    status, headers, body = request(daemon, "GET", "/v1.45/images/busybox/json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["Id"] == image

    status, _, body = request(daemon, "GET", "/images/busybox/history")
    assert status == 200
    assert [(h["Id"], h["Comment"]) for h in json.loads(body)] == [(image, "via cli")]

    status, _, body = request(daemon, "GET", "/graph/images/busybox/lineage")
    assert status == 200
    assert json.loads(body) == {"id": image, "ancestors": [], "descendants": []}

    status, _, body = request(daemon, "POST", "/images/busybox/tag?repo=x&tag=y")
    assert (status, body) == (201, b"")
    status, _, body = request(daemon, "POST", "/images/x:y/tag?repo=localhost:5000/team/app")
    assert status == 201
    status, _, body = request(daemon, "GET", "/images/localhost:5000/team/app/json")
    assert status == 200 and json.loads(body)["RepoTags"] == [
        "busybox:latest",
        "x:y",
        "localhost:5000/team/app:latest",
    ]
    status, _, body = request(daemon, "DELETE", "/images/localhost:5000/team/app:latest")
    assert status == 200 and json.loads(body) == [{"Untagged": "localhost:5000/team/app:latest"}]
    status, headers, body = request(daemon, "DELETE", "/images/x:y")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == [{"Untagged": "x:y"}]

    status, headers, saved = request(daemon, "GET", "/images/get?names=busybox")
    assert status == 200 and headers["Content-Type"] == "application/x-tar"
    assert archive_json(saved, "manifest.json")[0]["RepoTags"] == ["busybox:latest"]

    status, _, _ = request(daemon, "DELETE", f"/images/{image}?force=1")
    assert status == 200
    status, headers, body = request(
        daemon, "POST", "/images/load", saved, {"Content-Type": "application/x-tar"}
    )
    assert status == 200 and headers["Content-Type"] == "application/json"
    messages = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert messages == [{"stream": "Loaded image: busybox:latest\n"}]
    assert ids(daemon) == [image]

    # A pull from a registry that does not answer (a closed port on loopback: test traffic never
    # leaves the machine) is refused before the stream starts, with the registry named.
    closed = closed_port()
    status, headers, body = request(
        daemon, "POST", f"/images/create?fromImage=127.0.0.1:{closed}/x"
    )
    assert status == 503 and headers["Content-Type"] == "application/json"
    assert f"127.0.0.1:{closed}: cannot reach the registry" in json.loads(body)["message"]

    status, headers, body = request(daemon, "GET", "/images/nosuch/json")
    assert status == 404 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"message": "No such image: nosuch:latest"}


# --- hostile layers -------------------------------------------------------------------------


def test_import_refuses_an_entry_that_leaves_the_root(daemon: Daemon, tmp_path: Path) -> None:
    name = f"escape-{secrets.token_hex(4)}"
    hostile = tar_of({"ok.txt": b"fine", f"../{name}": b"pwned"})
    result = dy(daemon, "import", "-", "hostile:1", input=hostile)
    assert result.code == 2, result
    assert f"../{name}" in result.err
    assert files_named(tmp_path, name) == []
    assert not Path("/tmp", name).exists() and not Path("/", name).exists()
    assert ok(daemon, "images", "-q") == ""
    daemon.stop()
    assert table_rows(daemon.data_root, "layers") == []
    assert list((daemon.data_root / "layertars").iterdir()) == []


def test_import_keeps_writes_through_an_absolute_symlink_inside(
    daemon: Daemon, tmp_path: Path
) -> None:
    # An absolute symlink is data: a write through it resolves inside the layer's root, as in
    # the image it will be (reliability-security.md TAR-07/TAR-08), never on the host.
    name = f"pwned-{secrets.token_hex(4)}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        link = tarfile.TarInfo("evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/"
        tf.addfile(link)
        pwned = tarfile.TarInfo(f"evil/tmp/{name}")
        pwned.size = 5
        tf.addfile(pwned, io.BytesIO(b"pwned"))
    result = dy(daemon, "import", "-", "hostile:1", input=buf.getvalue())
    assert result.code == 0, result
    assert not Path("/tmp", name).exists()
    found = [str(p.relative_to(daemon.data_root)) for p in files_named(tmp_path, name)]
    assert len(found) == 1, found
    inside = r"(overlay/[0-9a-f]{64}/diff|vfs/dir/[0-9a-f]{64}|btrfs/subvolumes/[0-9a-f]{64})"
    assert re.fullmatch(f"{inside}/tmp/{name}", found[0]), found
    assert (daemon.data_root / found[0]).read_bytes() == b"pwned"
    assert inspect(daemon, "hostile:1")["RepoTags"] == ["hostile:1"]


# --- the image tree -------------------------------------------------------------------------


def test_tree_and_viz_show_shared_layers(daemon: Daemon, busybox: bytes, tmp_path: Path) -> None:
    import_(daemon, busybox, "busybox:latest")
    base_tar, top_tar = tmp_path / "base.tar", tmp_path / "top.tar"
    base_tar.write_bytes(busybox)
    top_tar.write_bytes(tar_of({"etc/": None, "etc/motd": b"two layers\n"}))
    archive = tmp_path / "two.tar"
    two = write_docker_archive(
        archive,
        [base_tar, top_tar],
        [digest(busybox), digest(top_tar.read_bytes())],
        ["two:layers"],
        "layer",
    )
    assert ok(daemon, "load", "-i", str(archive)) == "Loaded image: two:layers\n"
    assert inspect(daemon, "two:layers")["Id"] == two

    rows = [json.loads(line) for line in ok(daemon, "history", "--json", "two:layers").splitlines()]
    assert [(r["Id"], r["CreatedBy"]) for r in rows] == [
        (two, "CMD sh"),
        ("<missing>", "layer 1"),
        ("<missing>", "layer 0"),
    ]
    assert rows[0]["Size"] == 0 and rows[1]["Size"] == len(b"two layers\n")
    assert rows[2]["Size"] == inspect(daemon, "busybox")["Size"]
    assert rows[0]["Tags"] == ["two:layers"] and rows[1]["Tags"] is None

    tree = tree_lines(daemon)
    base = digest(busybox)[7:19]
    assert len(tree) == 2, tree
    assert sum(base in line for line in tree) == 1
    assert tree[0].startswith("└─ " + base) and tree[0].endswith("busybox:latest")
    assert tree[1].startswith("   └─ ") and tree[1].endswith("two:layers")

    dot = ok(daemon, "images", "--viz")
    assert dot.startswith("digraph")
    assert "busybox:latest" in dot and "two:layers" in dot and dot.count(f'"l{base}" [') == 1

    result = dy(daemon, "images", "--viz", "--format", "svg")
    if shutil.which("dot") is None:
        assert result.code == 5, result
    else:
        assert result.code == 0, result
        assert "<svg" in result.out and "two:layers" in result.out

    # Removing the imported image keeps the base layer: the loaded image is on it.
    ok(daemon, "rmi", "busybox")
    tree = tree_lines(daemon)
    assert len(tree) == 2 and tree[0].startswith("└─ " + base) and "busybox" not in tree[0]
    assert tree[1].endswith("two:layers")


# --- crash safety ---------------------------------------------------------------------------


class BigArchive(NamedTuple):
    path: Path
    image: str


@pytest.fixture(scope="module")
def big_archive(busybox: bytes) -> Iterator[BigArchive]:
    """A docker-archive: the busybox layer, then one layer of ~150 MB of random data."""
    work = Path(tempfile.mkdtemp(prefix="dockyard-big-"))
    try:
        base = work / "base.tar"
        base.write_bytes(busybox)
        big = work / "big.tar"
        size = 150 * 1000 * 1000
        with tarfile.open(big, "w", format=tarfile.PAX_FORMAT) as tf:
            info = tarfile.TarInfo("random.bin")
            info.size, info.mtime = size, 1_700_000_000
            tf.addfile(info, _Random(size))
        sha = hashlib.sha256()
        with open(big, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        diff_ids = [digest(busybox), "sha256:" + sha.hexdigest()]
        archive = work / "big-archive.tar"
        image = write_docker_archive(archive, [base, big], diff_ids, ["big:1"], "big")
        big.unlink()
        yield BigArchive(archive, image)
    finally:
        shutil.rmtree(work)


class _Random(io.RawIOBase):
    """*size* random bytes, made as they are read."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left, 1 << 20)
        buffer[:n] = os.urandom(n)
        self.left -= n
        return n


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("moment", ["receiving", "applying"])
def test_killed_during_load_leaves_nothing(
    tmp_path: Path, daemons: list[Daemon], big_archive: BigArchive, moment: str
) -> None:
    base = tmp_path / "d"
    first = start(base)
    daemons.append(first)
    loading = subprocess.Popen(
        [*DOCKYARD, "-H", first.hosts[0], "load", "-i", str(big_archive.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=first.env,
    )
    try:
        deadline = time.monotonic() + 60
        while not _running(first, "load"):
            assert loading.poll() is None, loading.communicate()
            assert time.monotonic() < deadline, "the load job never showed in jobs ps"
            time.sleep(0.02)
        if moment == "applying":  # the busybox layer is ready, the big one half written
            while _layer_states(first) != ["creating", "ready"]:
                assert loading.poll() is None, loading.communicate()
                assert time.monotonic() < deadline, "the big layer was never being written"
                time.sleep(0.01)
        first.stop(signal.SIGKILL)
    finally:
        out, err = loading.communicate(timeout=60)
    assert loading.returncode != 0, (out, err)
    states = sorted(row[0] for row in _query(first.data_root, "SELECT state FROM layers"))
    if moment == "applying":
        assert states == ["creating", "ready"]  # what start-up has to clean
    assert table_rows(first.data_root, "images") == []

    second = start(base)
    daemons.append(second)
    assert ok(second, "images", "-q") == ""
    assert ok(second, "images", "--tree") == ""
    second.stop()

    data = second.data_root
    assert table_rows(data, "layers") == []
    assert table_rows(data, "images") == []
    assert list((data / "layertars").iterdir()) == []
    assert list((data / "tmp").iterdir()) == []
    driver = data / "overlay"
    if driver.is_dir():
        left = sorted(p.name for p in driver.iterdir())
        assert set(left) <= {"l", "children"}, left
        assert list((driver / "l").iterdir()) == []
    else:
        assert list((data / "vfs" / "dir").iterdir()) == []


# --- every driver ---------------------------------------------------------------------------


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=120)


@pytest.fixture
def btrfs_root(tmp_path: Path) -> Iterator[Path]:
    """A 300 MB btrfs image loop-mounted under tmp_path; unmounted and detached at teardown."""
    if shutil.which("mkfs.btrfs") is None:
        pytest.skip("btrfs: mkfs.btrfs missing (apt-get install -y btrfs-progs)")
    image, mnt = tmp_path / "btrfs.img", tmp_path / "btrfs"
    mnt.mkdir()
    _run("truncate", "-s", "300M", str(image))
    _run("mkfs.btrfs", "-q", str(image))
    try:
        _run("mount", "-o", "loop", str(image), str(mnt))
    except subprocess.CalledProcessError as exc:
        image.unlink()
        pytest.skip(f"btrfs: cannot mount a btrfs image here: {exc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        _run("umount", str(mnt))
        loops = subprocess.run(
            ["losetup", "-j", str(image)], capture_output=True, text=True, check=False
        ).stdout
        for line in loops.splitlines():  # autoclear normally detaches it already
            subprocess.run(["losetup", "-d", line.split(":")[0]], check=False)
        image.unlink()


@pytest.fixture
def driver_daemon(
    request: pytest.FixtureRequest, tmp_path: Path, daemons: list[Daemon]
) -> Iterator[tuple[Daemon, Path]]:
    """A daemon using the driver named by the test's parameter, and its data root."""
    name = request.param
    base = tmp_path / "d"
    data = (request.getfixturevalue("btrfs_root") if name == "btrfs" else base) / "data"
    d = start(base, "--storage-driver", name, "--data-root", str(data))
    daemons.append(d)
    yield d, data
    if d.proc.poll() is None:  # before btrfs_root unmounts the data root
        d.stop()


@pytest.mark.parametrize("driver_daemon", ["vfs", "overlay", "btrfs"], indirect=True)
def test_round_trip_on_each_driver(
    driver_daemon: tuple[Daemon, Path], busybox: bytes, tmp_path: Path, request: Any
) -> None:
    daemon, data = driver_daemon
    name = request.node.callspec.params["driver_daemon"]
    image = import_(daemon, busybox, "busybox:latest", "-c", 'CMD ["sh"]')
    found = inspect(daemon, "busybox")
    assert found["GraphDriver"]["Name"] == name
    saved = tmp_path / "busybox.tar"
    ok(daemon, "save", "-o", str(saved), "busybox")
    ok(daemon, "rmi", "busybox")
    assert ok(daemon, "images", "-q") == ""
    assert ok(daemon, "load", "-i", str(saved)) == "Loaded image: busybox:latest\n"
    again = inspect(daemon, "busybox")
    assert again["Id"] == image and again["RootFS"] == found["RootFS"]
    assert again["Size"] == found["Size"]
    ok(daemon, "rmi", "busybox")
    daemon.stop()
    assert table_rows(data, "layers") == []
    assert list((data / "layertars").iterdir()) == []


def closed_port() -> int:
    """A loopback TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
