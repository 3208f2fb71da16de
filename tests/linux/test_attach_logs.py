"""``POST /containers/{id}/attach`` with ``logs``, ``stream`` and stream selection, against real
containers, held to dockerd's behaviour: ``logs=1`` replays the container's log (framed, or raw
with a TTY), then with ``stream=1`` a running container's live output follows, without a line
lost or repeated at the seam; otherwise the connection ends after the replay. An attach made
before the start ends when the container is removed, and a client that hangs up ends its job.
The last tests check the pieces the seam relies on: log marks (``read_until``) and ``_fit``.

Vocabulary: an *attachment* is one hijacked connection opened here on the daemon's unix socket
(``Attachment``); *frames* are the multiplexed stream's (stream id, payload) pairs.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from drivers.logging.jsonfile import JsonFileWriter, log_mark, read_until
from jobs.attach import _fit
from tests.daemon.conftest import request
from tests.linux.containerkit import Containers, containers, needs_root

pytestmark = needs_root
__all__ = ["containers"]

Names = Callable[[], str]
COUNT_LOOP = "echo first; i=0; while [ $i -lt 30 ]; do sleep 0.05; echo n$i; i=$((i+1)); done"


@pytest.fixture
def names(containers: Containers) -> Iterator[Names]:
    """Unique container names; every container so named is removed at teardown."""
    made: list[str] = []

    def make() -> str:
        made.append(f"al-{secrets.token_hex(4)}")
        return made[-1]

    yield make
    if made:
        containers.cli("rm", "-f", *made, timeout=60)


class Attachment:
    """One attach request over the daemon's socket, upgraded; then the raw stream."""

    def __init__(self, containers: Containers, ref: str, **query: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(containers.daemon.sock))
        target = f"/v1.45/containers/{ref}/attach?{urlencode(query)}"
        self.sock.sendall(
            f"POST {target} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
            "Upgrade: tcp\r\nContent-Length: 0\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, f"connection closed in the headers: {head!r}"
            head += chunk
        head, _, self.data = head.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        self.status = lines[0]
        self.headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        self.eof = False

    def read_to_end(self, timeout: float = 10) -> bytes:
        """Read until the daemon closes the stream; fail after *timeout* seconds."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the stream did not end; got {self.data!r}"
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            self.eof = not chunk
            self.data += chunk
        return self.data

    def still_open(self, seconds: float) -> bool:
        """Tell whether the stream stays open (no EOF) for *seconds*; keeps what arrives."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return True
            if not chunk:
                self.eof = True
                return False
            self.data += chunk
        return True

    def close(self) -> None:
        """Hang up."""
        self.sock.close()


@contextlib.contextmanager
def attach(containers: Containers, ref: str, **query: int) -> Iterator[Attachment]:
    """An attachment that is closed when the block ends."""
    a = Attachment(containers, ref, **query)
    try:
        assert a.status.startswith("HTTP/1.1 101"), a.status
        yield a
    finally:
        a.close()


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split a multiplexed stream into (stream id, payload) frames."""
    out, pos = [], 0
    while pos < len(data):
        assert len(data) - pos >= 8, f"a cut frame header: {data[pos:]!r}"
        kind, size = struct.unpack(">BxxxL", data[pos : pos + 8])
        assert len(data) - pos - 8 >= size, f"a cut frame: {data[pos:]!r}"
        out.append((kind, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size
    return out


def stream_text(data: bytes, kind: int) -> bytes:
    """All payload of one stream of a multiplexed stream."""
    return b"".join(payload for k, payload in frames(data) if k == kind)


def attach_jobs(containers: Containers, ref: str) -> list[dict[str, object]]:
    """The running attach jobs of container *ref*."""
    status, _, body = request(containers.daemon, "GET", "/jobs/running")
    assert status == 200, body
    return [j for j in json.loads(body) if j["name"] == "attach" and j["args"] == [ref]]


def wait_jobs(containers: Containers, ref: str, count: int, timeout: float) -> None:
    """Wait until container *ref* has *count* running attach jobs."""
    what = f"{count} attach job(s) of {ref}"
    wait_for(lambda: len(attach_jobs(containers, ref)) == count, timeout, what)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll *predicate* every 50 ms until it holds; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_logs(containers: Containers, name: str, text: str) -> None:
    """Wait until the container's log (stdout or stderr) holds *text*."""

    def logged() -> bool:
        proc = containers.cli("logs", name, timeout=10)
        return text in proc.stdout + proc.stderr

    wait_for(logged, 10, f"{text!r} in the logs of {name}")


# -- logs=1: replay -----------------------------------------------------------------------------


def test_exited_container_replays_its_log_and_ends(containers: Containers, names: Names) -> None:
    name = names()
    script = "echo one; echo two >&2; echo three"
    containers.ok("run", "--name", name, "busybox", "sh", "-c", script)
    with attach(containers, name, logs=1, stream=1, stdout=1, stderr=1) as a:
        assert a.headers["content-type"] == "application/vnd.docker.multiplexed-stream"
        data = a.read_to_end()
    assert stream_text(data, 1) == b"one\nthree\n"
    assert stream_text(data, 2) == b"two\n"
    assert sorted(frames(data)) == [(1, b"one\n"), (1, b"three\n"), (2, b"two\n")]
    assert attach_jobs(containers, name) == []


def test_stream_selection_and_stream_0_on_a_running_container(
    containers: Containers, names: Names
) -> None:
    name = names()
    containers.ok("run", "-d", "--name", name, "busybox", "sh", "-c",
                  "echo out; echo err >&2; exec sleep 60")  # fmt: skip
    wait_logs(containers, name, "err")
    # stream=0: the log so far, then the end, though the container keeps running.
    with attach(containers, name, logs=1, stream=0, stdout=1, stderr=1) as a:
        assert sorted(frames(a.read_to_end(5))) == [(1, b"out\n"), (2, b"err\n")]
    with attach(containers, name, logs=1, stream=0, stdout=1, stderr=0) as a:
        assert frames(a.read_to_end(5)) == [(1, b"out\n")]
    with attach(containers, name, logs=1, stream=0, stdout=0, stderr=1) as a:
        assert frames(a.read_to_end(5)) == [(2, b"err\n")]
    with attach(containers, name, logs=0, stream=0, stdout=1, stderr=1) as a:
        assert a.read_to_end(5) == b""
    assert containers.inspect(name, ".State.Status") == "running"


@pytest.mark.slow
def test_running_container_replay_joins_live_output(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "-d", "--name", name, "busybox", "sh", "-c", COUNT_LOOP)
    wait_logs(containers, name, "n3\n")
    with attach(containers, name, logs=1, stream=1, stdout=1, stderr=1) as a:
        data = a.read_to_end(15)  # ends with the container
    expected = ["first"] + [f"n{i}" for i in range(30)]
    assert stream_text(data, 1).decode().splitlines() == expected
    assert stream_text(data, 2) == b""


@pytest.mark.slow
def test_busy_container_loses_and_repeats_nothing_at_the_seam(
    containers: Containers, names: Names
) -> None:
    # Still writing when we subscribe, its output cut at any byte (a pipe read stops mid-line).
    name, lines = names(), 150_000
    containers.ok("run", "-d", "--name", name, "busybox", "seq", "0", "5000000")

    def logged_some() -> bool:
        last = containers.ok("logs", "--tail", "1", name).strip()
        return last.isdigit() and int(last) >= 1000

    wait_for(logged_some, 10, f"lines in the log of {name}")
    with attach(containers, name, logs=1, stream=1, stdout=1, stderr=1) as a:
        assert containers.inspect(name, ".State.Status") == "running"
        out, pos, deadline = bytearray(), 0, time.monotonic() + 30
        while out.count(b"\n") < lines:
            assert time.monotonic() < deadline and a.still_open(0.05), "the output stopped"
            while len(a.data) - pos >= 8:  # complete frames so far
                kind, size = struct.unpack(">BxxxL", a.data[pos : pos + 8])
                if len(a.data) - pos - 8 < size:
                    break
                assert kind == 1
                out += a.data[pos + 8 : pos + 8 + size]
                pos += 8 + size
    assert out.decode().splitlines()[:lines] == [str(i) for i in range(lines)]


def test_stdin_with_logs(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "-d", "-i", "--name", name, "busybox", "sh", "-c", "echo hello; exec cat")
    wait_logs(containers, name, "hello")
    with attach(containers, name, logs=1, stream=1, stdin=1, stdout=1, stderr=1) as a:
        a.sock.sendall(b"ping\n")
        deadline = time.monotonic() + 10
        while not a.data.endswith(b"ping\n") and a.still_open(0.1):
            assert time.monotonic() < deadline, a.data
    assert frames(a.data) == [(1, b"hello\n"), (1, b"ping\n")]


@pytest.mark.slow
def test_tty_replay_and_live_output_are_raw(containers: Containers, names: Names) -> None:
    done, live = names(), names()
    containers.ok("run", "-t", "--name", done, "busybox", "sh", "-c", "echo a; echo b >&2")
    with attach(containers, done, logs=1, stream=1, stdout=1, stderr=1) as a:
        assert a.headers["content-type"] == "application/vnd.docker.raw-stream"
        assert a.read_to_end() == b"a\r\nb\r\n"
    containers.ok("run", "-d", "-t", "--name", live, "busybox", "sh", "-c",
                  "echo early; sleep 1.5; echo late")  # fmt: skip
    wait_logs(containers, live, "early")
    with attach(containers, live, logs=1, stream=1, stdout=1, stderr=1) as a:
        assert a.read_to_end(15) == b"early\r\nlate\r\n"


# -- containers not running ---------------------------------------------------------------------


def test_created_container_logs_end_at_once_and_a_plain_attach_waits_for_the_start(
    containers: Containers, names: Names
) -> None:
    name = names()
    containers.ok("create", "--name", name, "busybox", "echo", "hello")
    with attach(containers, name, logs=1, stream=1, stdout=1, stderr=1) as a:
        assert a.read_to_end(5) == b""
    with attach(containers, name, logs=0, stream=1, stdout=1, stderr=1) as a:
        assert a.still_open(0.5)  # as ``start -a``: attached before the start
        containers.ok("start", name)
        assert frames(a.read_to_end()) == [(1, b"hello\n")]


def test_removal_ends_a_pending_attach(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("create", "--name", name, "busybox", "echo", "never")
    with attach(containers, name, logs=0, stream=1, stdout=1, stderr=1) as a:
        wait_jobs(containers, name, 1, 5)
        containers.ok("rm", name)
        assert a.read_to_end(5) == b""
    wait_jobs(containers, name, 0, 5)


# -- the client side ----------------------------------------------------------------------------


def test_client_hang_up_ends_the_job(containers: Containers, names: Names) -> None:
    running, created = names(), names()
    containers.ok("run", "-d", "--name", running, "busybox", "sleep", "60")
    containers.ok("create", "--name", created, "busybox", "echo", "after")
    for ref in (running, created):
        a = Attachment(containers, ref, logs=0, stream=1, stdout=1, stderr=1)
        try:
            wait_jobs(containers, ref, 1, 5)
        finally:
            a.close()
        wait_jobs(containers, ref, 0, 2)
    # The attachment dropped before the start is not handed to it: the start works as usual.
    assert containers.ok("start", "-a", created) == "after\n"


def test_detach_keys_end_the_attach_not_the_container(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "-d", "-i", "--name", name, "busybox", "cat")
    with attach(containers, name, stream=1, stdin=1, stdout=1, stderr=1) as a:
        a.sock.sendall(b"hi\n")
        deadline = time.monotonic() + 10
        while not a.data.endswith(b"hi\n") and a.still_open(0.1):
            assert time.monotonic() < deadline, a.data
        a.sock.sendall(b"\x10\x11")  # ctrl-p ctrl-q
        assert frames(a.read_to_end(5)) == [(1, b"hi\n")]
    wait_jobs(containers, name, 0, 5)
    assert containers.inspect(name, ".State.Status") == "running"


@pytest.mark.slow
def test_half_close_keeps_the_stream(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "-d", "--name", name, "busybox", "sh", "-c", "sleep 1.5; echo late")
    with attach(containers, name, logs=0, stream=1, stdout=1, stderr=1) as a:
        a.sock.shutdown(socket.SHUT_WR)  # what clients do when they send no stdin
        assert a.still_open(0.5)
        assert len(attach_jobs(containers, name)) == 1
        assert frames(a.read_to_end(10)) == [(1, b"late\n")]


# -- the pieces the seam relies on --------------------------------------------------------------


def test_read_until_stops_at_a_mark_across_rotations(tmp_path: Path) -> None:
    log = tmp_path / "c-json.log"
    writer = JsonFileWriter(log, max_size=400, max_file=4)
    try:
        assert list(read_until(log, max_file=4, end=log_mark(log))) == []
        for i in range(3):
            writer.write("stdout", f"line {i}\n".encode())
        first = log_mark(log)
        for i in range(3, 8):  # rotates: the marked file is now a rotated one
            writer.write("stdout", f"line {i}\n".encode())
        writer.write("stderr", b"err\n")
        second = log_mark(log)
        writer.write("stdout", b"later\n")
        assert len(list(tmp_path.iterdir())) > 1
        got = [r.data for r in read_until(log, max_file=4, end=first)]
        assert got == [b"line 0\n", b"line 1\n", b"line 2\n"]
        window = [(r.stream, r.data) for r in read_until(log, max_file=4, start=first, end=second)]
        assert window == [("stdout", f"line {i}\n".encode()) for i in range(3, 8)] + [
            ("stderr", b"err\n")
        ]
        assert [r.data for r in read_until(log, max_file=4, start=second, end=log_mark(log))] == [
            b"later\n"
        ]
    finally:
        writer.close()


def test_read_until_gives_nothing_once_the_marked_lines_are_gone(tmp_path: Path) -> None:
    log = tmp_path / "c-json.log"
    writer = JsonFileWriter(log, max_size=150, max_file=1)  # rotation truncates in place
    try:
        writer.write("stdout", b"a\n")
        mark = log_mark(log)
        for _ in range(5):
            writer.write("stdout", b"b\n")
        assert list(read_until(log, max_file=1, end=mark)) == []
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("covered", "live", "after", "fitted"),
    [
        # lines logged while subscribing that also came live are dropped
        (b"1\n2\n3\n", b"2\n3\n4\n", b"4\n", (4, b"")),
        # a line begun before subscribing: its start comes from the log
        (b"", b"45\n1246\n", b"12345\n", (0, b"123")),
        # a live newline that ends such a line is not the window's last newline
        (b"18908\n", b"\n18910\n", b"18909\n", (0, b"18909")),
        # ...but is when the window holds that line
        (b"18909\n", b"\n18910\n", b"18910\n", (1, b"")),
        # nothing to fit
        (b"", b"x\n", b"x\n", (0, b"")),
    ],
)
def test_live_output_is_fitted_to_the_replay(
    covered: bytes, live: bytes, after: bytes, fitted: tuple[int, bytes]
) -> None:
    assert _fit(covered, live, after) == fitted
