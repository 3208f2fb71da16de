"""Every route of the API through a real unix socket to a real daemon process."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest

from cli.client import Client
from engine import errors
from tests.daemon.conftest import Daemon, request


def post_job(daemon: Daemon, name: str, body: object) -> tuple[int, dict[str, str], bytes]:
    return request(
        daemon,
        "POST",
        f"/jobs/{name}",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )


def lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def history(daemon: Daemon, **query: object) -> list[dict[str, Any]]:
    return daemon.client().get("/jobs/history", **query)  # type: ignore[return-value]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("prefix", ["", "/v1.45", "/v1.24"])
def test_ping(daemon: Daemon, method: str, prefix: str) -> None:
    status, headers, body = request(daemon, method, f"{prefix}/_ping")
    assert status == 200
    assert body == (b"OK" if method == "GET" else b"")
    assert headers["Api-Version"] == "1.45" and headers["Ostype"] == "linux"
    assert headers["Docker-Experimental"] == "false"
    assert headers["Server"].startswith("dockyard/")
    assert headers["Cache-Control"] == "no-cache, no-store, must-revalidate"


def test_version(daemon: Daemon) -> None:
    status, headers, body = request(daemon, "GET", "/version")
    assert status == 200 and headers["Content-Type"] == "application/json"
    version = json.loads(body)
    assert version["ApiVersion"] == "1.45" and version["MinAPIVersion"] == "1.24"
    assert version["Os"] == "linux" and version["Components"][0]["Name"] == "Engine"


def test_info(daemon: Daemon) -> None:
    status, headers, body = request(daemon, "GET", "/v1.45/info")
    assert status == 200 and headers["Content-Type"] == "application/json"
    info = json.loads(body)
    assert info["DockerRootDir"] == str(daemon.data_root)
    assert info["ExecRoot"] == str(daemon.exec_root)
    assert info["OSType"] == "linux" and info["NCPU"] >= 1 and info["MemTotal"] > 0
    assert info["Jobs"]["Registered"] >= 7
    assert info["JobPlugins"]["Loaded"]["tests.plugins.slow"] == ["fail", "sleep", "wc"]
    assert info["Warnings"] == []
    assert info["Swarm"]["LocalNodeState"] == "inactive" and info["NEventsListener"] == 0
    assert info["Plugins"]["Log"] == ["json-file"] and info["LoggingDriver"] == "json-file"
    for field in ("MemoryLimit", "SwapLimit", "CpuCfsQuota", "CPUShares", "PidsLimit"):
        assert isinstance(info[field], bool), field
    again = json.loads(request(daemon, "GET", "/info")[2])
    assert again["ID"] == info["ID"]  # the engine id is stable


def test_jobs_lists_commands(daemon: Daemon) -> None:
    status, headers, body = request(daemon, "GET", "/jobs")
    assert status == 200 and headers["Content-Type"] == "application/json"
    by_name = {c["name"]: c for c in json.loads(body)}
    for name in ("commands", "jobs", "cancel", "version", "info", "serveapi", "sleep", "fail"):
        assert name in by_name
    assert by_name["sleep"]["params"]["required"] == ["seconds"]
    assert by_name["serveapi"]["service"] is True


def test_post_job_streams_records_then_status(daemon: Daemon) -> None:
    status, headers, body = post_job(daemon, "sleep", {"params": {"seconds": 0, "announce": True}})
    assert status == 200 and headers["Content-Type"] == "application/x-ndjson"
    first, second, end = lines(body)
    assert (first, second) == ({"sleeping": 0.0}, {"slept": 0.0})
    assert end["state"] == "ok" and end["status"] == 0 and end["error"] is None
    assert len(end["job"]) == 16


def test_post_job_with_string_params_and_empty_body(daemon: Daemon) -> None:
    status, _, body = post_job(daemon, "sleep", {"params": {"seconds": "0.01"}})
    assert status == 200 and lines(body)[-1]["state"] == "ok"
    status, _, body = request(daemon, "POST", "/jobs/version")
    assert status == 200 and lines(body)[0]["ApiVersion"] == "1.45"


@pytest.mark.parametrize(
    ("name", "body", "status", "kind", "message"),
    [
        ("nosuch", {}, 404, "JobNotFound", "no such job: nosuch"),
        ("sleep", {}, 400, "InvalidArgument", "seconds: required param is missing"),
        (
            "sleep",
            {"params": {"seconds": "soon"}},
            400,
            "InvalidArgument",
            "seconds: expected number",
        ),
        ("sleep", {"params": {"seconds": 1, "x": 1}}, 400, "InvalidArgument", "x: unknown param"),
        (
            "sleep",
            {"params": {"seconds": 0}, "extra": 1},
            400,
            "InvalidArgument",
            "extra: unknown key",
        ),
        (
            "sleep",
            {"args": [1], "params": {}},
            400,
            "InvalidArgument",
            "args: expected an array of strings",
        ),
        ("cancel", {}, 400, "InvalidArgument", "args: job cancel takes ID"),
        ("cancel", {"args": ["feedface"]}, 404, "NotFound", "no running job with id feedface"),
        ("fail", {}, 409, "FailedPrecondition", "this job always fails"),
        ("serveapi", {"args": ["ftp://x"]}, 400, "InvalidArgument", "host: ftp://x"),
    ],
)
def test_job_errors_map_to_statuses(
    daemon: Daemon, name: str, body: object, status: int, kind: str, message: str
) -> None:
    got, headers, data = post_job(daemon, name, body)
    assert got == status
    assert headers["Content-Type"] == "application/json"
    assert headers["Dockyard-Error"] == kind
    assert list(json.loads(data)) == ["message"]
    assert json.loads(data)["message"].startswith(message)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"{not json", "application/json", "invalid JSON"),
        (b'{"params": {}}', "text/plain", "unsupported Content-Type header (text/plain)"),
        (b"[1, 2]", "application/json", "body: expected a JSON object"),
    ],
)
def test_bad_bodies(daemon: Daemon, body: bytes, content_type: str, message: str) -> None:
    status, _, data = request(daemon, "POST", "/jobs/version", body, {"Content-Type": content_type})
    assert status == 400 and json.loads(data)["message"].startswith(message)


def test_binary_body_is_the_jobs_stdin(daemon: Daemon) -> None:
    data = b"x" * 3_000_000
    status, _, body = request(
        daemon, "POST", "/jobs/wc?arg=a&arg=b", data, {"Content-Type": "application/octet-stream"}
    )
    assert status == 200
    assert lines(body)[0] == {"bytes": 3_000_000, "args": ["a", "b"]}


def test_unknown_route_and_method(daemon: Daemon) -> None:
    status, headers, data = request(daemon, "GET", "/no/such/route")
    assert status == 404 and headers["Content-Type"] == "application/json"
    assert json.loads(data) == {"message": "page not found"}
    status, _, data = request(daemon, "PUT", "/version")  # dockerd: 404 for a wrong method too
    assert status == 404 and json.loads(data) == {"message": "page not found"}


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (
            "1.12",
            "client version 1.12 is too old. Minimum supported API version is 1.24, please upgrade your client to a newer version",  # noqa: E501
        ),
        ("1.99", "client version 1.99 is too new. Maximum supported API version is 1.45"),
    ],
)
def test_api_version_range(daemon: Daemon, version: str, message: str) -> None:
    status, _, data = request(daemon, "GET", f"/v{version}/version")
    assert status == 400 and json.loads(data) == {"message": message}


def test_cross_origin_requests_are_refused(daemon: Daemon) -> None:
    status, headers, data = request(
        daemon, "GET", "/info", headers={"Origin": "http://evil.example"}
    )
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    assert "cross-origin" in json.loads(data)["message"]


def wait_running(daemon: Daemon, name: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in daemon.client().get("/jobs/running"):  # type: ignore[union-attr]
            if job["name"] == name:
                return job  # type: ignore[no-any-return]
        time.sleep(0.02)
    raise AssertionError(f"job {name} never ran")


def test_running_jobs_and_cancel_by_id(daemon: Daemon) -> None:
    result: dict[str, Any] = {}

    def long_job() -> None:
        result["lines"] = lines(
            post_job(daemon, "sleep", {"params": {"seconds": 60, "announce": True}})[2]
        )

    thread = threading.Thread(target=long_job)
    thread.start()
    running = wait_running(daemon, "sleep")
    assert running["state"] == "running" and running["params"] == {
        "seconds": 60.0,
        "announce": True,
    }
    status, _, _ = request(daemon, "DELETE", f"/jobs/running/{running['id']}")
    assert status == 204
    thread.join(10)
    assert result["lines"][0] == {"sleeping": 60.0}
    end = result["lines"][-1]
    assert end["state"] == "cancelled" and end["status"] == 1
    assert end["error"]["kind"] == "Cancelled"
    assert history(daemon, limit=5)[1]["state"] == "cancelled"  # newest is the cancel job
    assert request(daemon, "DELETE", f"/jobs/running/{running['id']}")[0] == 404


def test_cancelled_job_without_output_ends_in_band(daemon: Daemon) -> None:
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.update(r=post_job(daemon, "sleep", {"params": {"seconds": 60}}))
    )
    thread.start()
    running = wait_running(daemon, "sleep")
    daemon.client().delete(f"/jobs/running/{running['id']}")
    thread.join(10)
    status, _, body = result["r"]
    assert status == 200 and lines(body) == [
        {"job": running["id"], "state": "cancelled", "status": 1, "error": lines(body)[0]["error"]}
    ]


def test_client_hanging_up_cancels_its_job(daemon: Daemon) -> None:
    body = json.dumps({"params": {"seconds": 60}}).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(daemon.sock))
    sock.sendall(
        b"POST /jobs/sleep HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    running = wait_running(daemon, "sleep")
    sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = [j for j in history(daemon) if j["id"] == running["id"]]
        if done:
            assert done[0]["state"] == "cancelled" and "cancelled" in done[0]["error"]
            return
        time.sleep(0.05)
    raise AssertionError("the job kept running after its client hung up")


def test_history_records_jobs(daemon: Daemon) -> None:
    post_job(daemon, "fail", {})
    post_job(daemon, "nosuch", {"args": ["a"]})
    newest = history(daemon, limit=2)
    assert [(j["name"], j["state"], j["status"]) for j in newest] == [
        ("nosuch", "not found", 127),
        ("fail", "error", 1),
    ]
    assert newest[0]["args"] == ["a"] and newest[1]["error"] == "this job always fails"
    assert newest[1]["started"].endswith("Z") and newest[1]["duration"] >= 0


def test_client_rebuilds_error_classes(daemon: Daemon) -> None:
    client: Client = daemon.client()
    with pytest.raises(errors.JobNotFound):
        list(client.run_job("nosuch", [], {}))
    with pytest.raises(errors.InvalidArgument):
        list(client.run_job("sleep", [], {}))
