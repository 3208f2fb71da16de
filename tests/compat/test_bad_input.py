"""Raw HTTP against dockyard's API socket: bad bodies, bad types, bad routes, bad versions and
oversized requests get dockerd's answers, never a 5xx or a traceback, and the daemon keeps
serving. Every routed response carries Docker's headers (``Api-Version``, ``Ostype``,
``Docker-Experimental``, ``Builder-Version``, ``Server``), 101 upgrades included."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.compat.conftest import Compat

LOOP = "trap 'exit 0' TERM; while true; do sleep 0.1; done"
DOCKER_HEADERS = ("api-version", "ostype", "docker-experimental", "builder-version", "server")


@dataclass
class Response:
    """A parsed HTTP response: status, lower-cased headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return orjson.loads(self.body)


def call(
    dockyard: Compat,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """One request through http.client over the daemon's socket."""
    status, hdrs, data = dockyard.api(method, path, body, headers)
    return Response(status, {k.lower(): v for k, v in hdrs.items()}, data)


def raw_exchange(sock_path: Path, data: bytes, timeout: float = 20) -> bytes:
    """Send *data* from a thread while reading the reply, so a server that answers and closes
    before reading everything is still heard; the raw reply bytes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(sock_path))
    sock.settimeout(timeout)

    def send() -> None:
        try:
            view = memoryview(data)
            for start in range(0, len(view), 1 << 16):
                sock.sendall(view[start : start + (1 << 16)])
        except OSError:  # the server answered and closed early
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    reply = b""
    try:
        while not _complete(reply):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        sock.close()
        sender.join(timeout)
    return reply


def _complete(reply: bytes) -> bool:
    """Whether *reply* holds a whole response with a Content-Length body."""
    head, sep, body = reply.partition(b"\r\n\r\n")
    found = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return bool(sep) and found is not None and len(body) >= int(found[1])


def parse(reply: bytes) -> Response:
    """Parse one raw HTTP/1.x response (Content-Length or to-the-end body)."""
    head, sep, body = reply.partition(b"\r\n\r\n")
    assert sep, f"no complete response: {reply[:300]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Response(status, headers, body)


def check_headers(response: Response) -> None:
    """Docker's headers on a routed response."""
    missing = [h for h in DOCKER_HEADERS if h not in response.headers]
    assert not missing, f"missing {missing} in {response.headers}"
    h = response.headers
    assert h["api-version"] == "1.45" and h["ostype"] == "linux", h
    assert h["docker-experimental"] in ("true", "false"), h
    assert h["builder-version"] in ("1", "2"), h
    assert re.fullmatch(r"\S+/\S+ \(linux\)", h["server"]), h


def no_traceback(response: Response) -> None:
    """No Python internals leak into a body."""
    for marker in (b"Traceback", b'File "/', b"internal error"):
        assert marker not in response.body, response.body[:2000]


def check_error(response: Response, status: int, message: str | None = None) -> str:
    """Docker's error shape: *status*, ``{"message": ...}`` as application/json exactly, the
    headers, no traceback; return the message."""
    assert response.status == status, (response.status, response.body[:500])
    assert response.headers.get("content-type") == "application/json", response.headers
    check_headers(response)
    no_traceback(response)
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("message"), str), body
    if message is not None:
        assert body["message"] == message
    return str(body["message"])


def assert_serving(dockyard: Compat) -> None:
    """The daemon still answers /_ping."""
    response = call(dockyard, "GET", "/_ping")
    assert (response.status, response.body) == (200, b"OK")
    check_headers(response)


def create(dockyard: Compat, body: bytes, name: str = "") -> Response:
    """POST /containers/create with a raw JSON body."""
    path = "/containers/create" + (f"?name={name}" if name else "")
    return call(dockyard, "POST", path, body, {"Content-Type": "application/json"})


@pytest.fixture(scope="module")
def target(dockyard: Compat) -> Iterator[tuple[str, str]]:
    """A running container for the tests that need one: (id, name)."""
    name = dockyard.unique("raw")
    response = create(dockyard, orjson.dumps({"Image": "busybox", "Cmd": ["sh", "-c", LOOP]}), name)
    assert response.status == 201, response.body
    cid = response.json()["Id"]
    try:
        assert call(dockyard, "POST", f"/containers/{cid}/start").status == 204
        yield cid, name
    finally:
        call(dockyard, "DELETE", f"/containers/{cid}?force=1&v=1")


def test_malformed_json_on_create(dockyard: Compat) -> None:
    for body in (b"{bad", b'{"Image": "busybox"', b"[1, 2]", b'"busybox"', b"\xff\xfe"):
        check_error(create(dockyard, body), 400)
    assert_serving(dockyard)


@pytest.mark.parametrize(
    "body",
    [
        {"Image": "busybox", "Cmd": 5},
        {"Image": "busybox", "HostConfig": {"Memory": "x"}},
        {"Image": "busybox", "Env": {}},
        {"Image": 5},
        {"Image": "busybox", "HostConfig": []},
        {"Image": "busybox", "Labels": ["a=b"]},
        {"Image": "busybox", "HostConfig": {"Binds": "/tmp:/tmp"}},
    ],
    ids=["cmd-int", "memory-str", "env-object", "image-int", "hostconfig-array", "labels-array",
         "binds-str"],
)  # fmt: skip
def test_wrong_types_on_create(dockyard: Compat, body: dict[str, object]) -> None:
    check_error(create(dockyard, orjson.dumps(body)), 400)
    assert_serving(dockyard)


def test_unknown_objects_are_404_with_docker_messages(dockyard: Compat) -> None:
    check_error(call(dockyard, "GET", "/containers/x/json"), 404, "No such container: x")
    check_error(call(dockyard, "POST", "/containers/x/start"), 404, "No such container: x")
    check_error(call(dockyard, "DELETE", "/containers/x"), 404, "No such container: x")
    check_error(call(dockyard, "GET", "/v1.45/images/x/json"), 404, "No such image: x:latest")
    check_error(call(dockyard, "DELETE", "/images/x:1"), 404, "No such image: x:1")
    response = create(dockyard, orjson.dumps({"Image": "nosuchimage", "Cmd": ["true"]}))
    check_error(response, 404, "No such image: nosuchimage:latest")
    check_error(call(dockyard, "GET", "/volumes/nosuchvolume"), 404)
    check_error(call(dockyard, "GET", "/exec/nosuchexec/json"), 404)
    assert_serving(dockyard)


def test_name_conflicts_are_409(dockyard: Compat, target: tuple[str, str]) -> None:
    cid, name = target
    body = orjson.dumps({"Image": "busybox", "Cmd": ["true"]})
    message = check_error(create(dockyard, body, name), 409)
    assert f'The container name "/{name}" is already in use by container "{cid}"' in message
    other = create(dockyard, body, dockyard.unique("other"))
    assert other.status == 201, other.body
    check_error(call(dockyard, "POST", f"/containers/{other.json()['Id']}/rename?name={name}"), 409)
    assert_serving(dockyard)


def test_oversized_header_line(dockyard: Compat) -> None:
    # The HTTP layer refuses these before any route runs (Go's net/http answers 431 in
    # text/plain there too), so only the status and the absence of internals are Docker's.
    request = b"GET /_ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    response = parse(raw_exchange(dockyard.daemon.sock, request))
    assert response.status in (400, 431), response
    no_traceback(response)
    assert_serving(dockyard)


def test_a_32_kib_header_line_is_served(dockyard: Compat) -> None:
    # X-Registry-Auth and -Config carry base64 JSON; Go accepts far more than aiohttp's 8 KiB.
    request = b"GET /_ping HTTP/1.1\r\nHost: x\r\nX-Registry-Auth: " + b"e" * 32_768 + b"\r\n\r\n"
    response = parse(raw_exchange(dockyard.daemon.sock, request))
    assert response.status == 200, response


def test_a_megabyte_of_headers(dockyard: Compat) -> None:
    fields = b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 4000) for i in range(256))
    request = b"GET /_ping HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    assert len(request) > 1_000_000
    response = parse(raw_exchange(dockyard.daemon.sock, request))
    assert response.status in (400, 431), response
    no_traceback(response)
    assert_serving(dockyard)


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_huge_json_body_on_create(dockyard: Compat, chunked: bool) -> None:
    pid = dockyard.daemon.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # restart the peak-RSS count
    before = _peak_rss_kib(pid)
    size = 64 << 20
    payload = b'{"Image": "busybox", "Env": ["A=' + b"x" * size + b'"]}'
    head = b"POST /containers/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    if chunked:
        step = 1 << 20
        chunks = [payload[i : i + step] for i in range(0, len(payload), step)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        request = head + b"Transfer-Encoding: chunked\r\n\r\n" + body
    else:
        request = head + b"Content-Length: %d\r\n\r\n" % len(payload) + payload
    response = parse(raw_exchange(dockyard.daemon.sock, request))
    assert 400 <= response.status < 500, (response.status, response.body[:300])
    check_error(response, response.status)
    grown = _peak_rss_kib(pid) - before
    assert grown < 32 * 1024, f"the daemon's peak RSS grew by {grown} KiB"
    assert_serving(dockyard)


def test_bodies_on_get_are_ignored(dockyard: Compat) -> None:
    conn = dockyard.daemon.raw()
    try:
        for path, body in (
            ("/containers/json", b'{"all": true}'),
            ("/_ping", b"hello"),
            ("/version", b"GET /containers/json HTTP/1.1\r\nHost: x\r\n\r\n"),
        ):
            conn.request("GET", path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            assert response.status == 200, (path, data)
            hdrs = {k.lower(): v for k, v in response.getheaders()}
            check_headers(Response(response.status, hdrs, data))
        # The last body looked like a request: the connection must not have served it.
        conn.request("GET", "/_ping")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"OK")
    finally:
        conn.close()
    assert_serving(dockyard)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nosuch"),
        ("GET", "/v1.45/nosuch/route"),
        ("POST", "/containers/x/nosuch"),
        ("GET", "/v1.45/containers/x/nosuch"),
        ("PUT", "/containers/json"),
    ],
)
def test_unknown_routes(dockyard: Compat, method: str, path: str) -> None:
    check_error(call(dockyard, method, path), 404, "page not found")
    assert_serving(dockyard)


def test_bad_version_prefixes(dockyard: Compat) -> None:
    check_error(
        call(dockyard, "GET", "/v1.23/version"),
        400,
        "client version 1.23 is too old. Minimum supported API version is 1.24, "
        "please upgrade your client to a newer version",
    )
    check_error(
        call(dockyard, "GET", "/v9.9/containers/json"),
        400,
        "client version 9.9 is too new. Maximum supported API version is 1.45",
    )
    assert call(dockyard, "GET", "/v1.24/version").status == 200
    assert call(dockyard, "GET", "/v1.45/version").status == 200
    assert_serving(dockyard)


def test_out_of_range_query_values(dockyard: Compat, target: tuple[str, str]) -> None:
    cid, _ = target
    check_error(call(dockyard, "POST", f"/containers/{cid}/stop?t=abc"), 400)
    check_error(call(dockyard, "POST", f"/containers/{cid}/resize?h=-1&w=80"), 400)
    check_error(call(dockyard, "POST", f"/containers/{cid}/resize?h=40&w=x"), 400)
    check_error(call(dockyard, "POST", f"/containers/{cid}/kill?signal=NOSUCH"), 400)
    check_error(call(dockyard, "GET", "/containers/json?filters=notjson"), 400)
    # dockerd reads a tail it cannot parse as "all"; a 400 is as good.
    logs = call(dockyard, "GET", f"/containers/{cid}/logs?stdout=1&tail=x")
    if logs.status != 200:
        check_error(logs, 400)
    else:
        check_headers(logs)
    assert call(dockyard, "GET", f"/containers/{cid}/json").json()["State"]["Running"] is True
    assert_serving(dockyard)


def test_success_responses_carry_docker_headers(dockyard: Compat, target: tuple[str, str]) -> None:
    cid, _ = target
    for method, path in (
        ("GET", "/_ping"),
        ("HEAD", "/_ping"),
        ("GET", "/v1.45/version"),
        ("GET", "/info"),
        ("GET", "/containers/json"),
        ("GET", f"/containers/{cid}/json"),
        ("GET", "/images/json"),
    ):
        response = call(dockyard, method, path)
        assert response.status == 200, (path, response.body[:300])
        check_headers(response)
        if path not in ("/_ping",):
            assert response.headers["content-type"] == "application/json", (path, response)


def test_upgrade_responses_carry_docker_headers(dockyard: Compat, target: tuple[str, str]) -> None:
    cid, _ = target
    created = call(
        dockyard, "POST", f"/v1.45/containers/{cid}/exec",
        orjson.dumps({"Cmd": ["echo", "hi"], "AttachStdout": True, "AttachStderr": True}),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert created.status == 201, created.body
    exec_id = created.json()["Id"]
    body = b'{"Detach":false,"Tty":false}'
    request = (
        f"POST /v1.45/exec/{exec_id}/start HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        f"Upgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    reply = raw_exchange(dockyard.daemon.sock, request)
    head, _, stream = reply.partition(b"\r\n\r\n")
    response = parse(head + b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n"), head
    check_headers(response)
    assert response.headers["content-type"] == "application/vnd.docker.multiplexed-stream"
    assert (response.headers["connection"], response.headers["upgrade"]) == ("Upgrade", "tcp")
    assert stream == b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n"
    deadline = time.monotonic() + 5
    while (info := call(dockyard, "GET", f"/exec/{exec_id}/json").json())["Running"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert info["ExitCode"] == 0
    assert_serving(dockyard)
