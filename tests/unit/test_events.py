"""The event log, its filters, since/until parsing and the ``events`` job (no daemon)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, TypeVar

import pytest
from aiohttp import web

from engine import Engine, InvalidArgument
from jobs import events
from jobs.eventlog import EventFilter, EventLog, Message, message
from jobs.events import parse_time
from jobs.services import EVENTS
from server.app import build_app

T = TypeVar("T")
CID = "4f1d" + "0" * 60
IMAGE_ID = "sha256:" + "ab" * 32
NOW = 1_700_000_000 * 10**9


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def container(action: str, **attrs: str) -> Message:
    return message("container", action, CID, {"image": "busybox", "name": "web", **attrs}, NOW)


# -- messages ----------------------------------------------------------------------------------


def test_container_message_has_dockers_shape_and_legacy_keys() -> None:
    m = container("die", exitCode="0")
    assert m == {
        "status": "die", "id": CID, "from": "busybox", "Type": "container", "Action": "die",
        "Actor": {"ID": CID, "Attributes": {"image": "busybox", "name": "web", "exitCode": "0"}},
        "scope": "local", "time": 1_700_000_000, "timeNano": NOW,
    }  # fmt: skip


def test_image_message_has_status_and_id_but_no_from() -> None:
    m = message("image", "tag", IMAGE_ID, {"name": "busybox:latest"}, NOW + 5)
    assert (m["status"], m["id"], "from" in m) == ("tag", IMAGE_ID, False)
    assert m["time"] == 1_700_000_000 and m["timeNano"] == NOW + 5


def test_volume_message_has_no_legacy_keys_and_string_attributes() -> None:
    m = message("volume", "create", "data", {"driver": "local", "n": 1}, NOW)  # type: ignore[dict-item]
    assert not {"status", "id", "from"} & set(m)
    assert m["Actor"] == {"ID": "data", "Attributes": {"driver": "local", "n": "1"}}


# -- since / until -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700000000", NOW),
        ("1700000000.5", NOW + 500_000_000),
        ("1700000000.000000001", NOW + 1),  # the docker CLI's form: seconds.nanoseconds
        ("1700000000.1234567891", NOW + 123_456_789),  # beyond nanoseconds is cut
        ("2023-11-14T22:13:20Z", NOW),
        ("2023-11-14T22:13:20.000000042Z", NOW + 42),
        ("2023-11-14T23:13:20+01:00", NOW),
    ],
)
def test_parse_time_absolute_forms(text: str, expected: int) -> None:
    assert parse_time(text, 0) == expected


@pytest.mark.parametrize(
    ("text", "ago"),
    [("10m", 600 * 10**9), ("1h30m", 5400 * 10**9), ("1.5s", 1_500_000_000), ("250ms", 25 * 10**7)],
)
def test_parse_time_durations_mean_that_long_ago(text: str, ago: int) -> None:
    assert parse_time(text, NOW) == NOW - ago


def test_parse_time_negative_duration_is_ahead() -> None:
    assert parse_time("-5s", NOW) == NOW + 5 * 10**9


def test_parse_time_without_zone_is_local_time() -> None:
    local = datetime(2024, 3, 1, 12, 30, 0).timestamp()
    assert parse_time("2024-03-01T12:30:00", 0) == int(local) * 10**9
    assert parse_time("2024-03-01", 0) == int(datetime(2024, 3, 1).timestamp()) * 10**9


@pytest.mark.parametrize("text", ["yesterday", "10x", "1700000000.", "2024-13-01T00:00:00Z"])
def test_parse_time_refuses_garbage_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidArgument, match="^until: "):
        parse_time(text, NOW, "until")


# -- filters -----------------------------------------------------------------------------------


def passes(filters: dict[str, list[str]], m: Message) -> bool:
    return EventFilter.parse(filters)(m)


def test_no_filter_passes_everything() -> None:
    assert passes({}, container("start"))
    assert passes({"type": []}, container("start"))  # an empty list is no filter


def test_type_and_event_filters() -> None:
    m = container("start")
    assert passes({"type": ["container"]}, m)
    assert not passes({"type": ["image"]}, m)
    assert passes({"type": ["image", "container"]}, m)  # values of one key: any
    assert passes({"event": ["start"]}, m)
    assert not passes({"event": ["sta"]}, m)  # exact, but for exec_* and health_status
    assert not passes({"type": ["container"], "event": ["stop"]}, m)  # keys: all


def test_exec_event_filters_match_the_command_suffix() -> None:
    m = container("exec_start: echo hi", execID="e1")
    assert passes({"event": ["exec_start"]}, m)
    assert passes({"event": ["exec_start: echo hi"]}, m)
    assert not passes({"event": ["exec_create"]}, m)
    assert not passes({"event": ["exec_die"]}, m)


def test_container_filter_by_id_prefix_or_name() -> None:
    m = container("start")
    assert passes({"container": [CID]}, m)
    assert passes({"container": [CID[:12]]}, m)
    assert passes({"container": ["web"]}, m)
    assert not passes({"container": ["other"]}, m)
    image = message("image", "tag", IMAGE_ID, {"name": "busybox:latest"}, NOW)
    assert not passes({"container": ["web"]}, image)  # as dockerd: every event is matched


def test_image_filter_matches_container_image_and_image_events() -> None:
    assert passes({"image": ["busybox"]}, container("start"))
    tagged = message("container", "start", CID, {"image": "busybox:1.36", "name": "w"}, NOW)
    assert passes({"image": ["busybox"]}, tagged)  # the repository without its tag
    assert passes({"image": ["busybox:1.36"]}, tagged)
    assert not passes({"image": ["alpine"]}, tagged)
    image = message("image", "tag", IMAGE_ID, {"name": "docker.io/library/busybox:2"}, NOW)
    assert passes({"image": [IMAGE_ID]}, image)
    assert passes({"image": ["busybox"]}, image)
    assert not passes({"image": ["busybox:1.36"]}, image)


def test_label_filters_key_or_key_value_all_must_match() -> None:
    m = container("start", app="web", tier="front")
    assert passes({"label": ["app"]}, m)
    assert passes({"label": ["app=web"]}, m)
    assert passes({"label": ["app=web", "tier=front"]}, m)
    assert not passes({"label": ["app=db"]}, m)
    assert not passes({"label": ["app=web", "missing"]}, m)


def test_volume_network_daemon_scope_filters() -> None:
    volume = message("volume", "mount", "data", {"driver": "local", "container": CID}, NOW)
    assert passes({"volume": ["data"]}, volume)
    assert not passes({"volume": ["other"]}, volume)
    assert not passes({"network": ["bridge"]}, volume)
    assert not passes({"daemon": ["d1"]}, volume)
    assert passes({"scope": ["local"]}, volume)
    assert not passes({"scope": ["swarm"]}, volume)


def test_unknown_filter_key_is_refused_by_name() -> None:
    with pytest.raises(InvalidArgument, match="'colour'"):
        EventFilter.parse({"type": ["container"], "colour": ["red"]})


# -- the log -----------------------------------------------------------------------------------


def test_ring_keeps_only_the_newest() -> None:
    log = EventLog(size=3)
    for n in range(5):
        log.emit("volume", "create", f"v{n}", {"driver": "local"})
    assert [m["Actor"]["ID"] for m in log.past()] == ["v2", "v3", "v4"]  # type: ignore[index]


def test_subscribe_replays_then_follows_without_gap() -> None:
    async def go() -> list[str]:
        log = EventLog()
        log.emit("volume", "create", "old")
        with log.subscribe(EventFilter.parse({"type": ["volume"]})) as (past, live):
            log.emit("image", "tag", IMAGE_ID, {"name": "x:1"})  # filtered out
            log.emit("volume", "destroy", "old")
            got = await live.next(1.0)
            assert got is not None
            assert await live.next(0.01) is None  # nothing more: a timeout
            return [str(m["Action"]) for m in (*past, got)]

    assert run(go()) == ["create", "destroy"]


def test_slow_subscriber_is_dropped_and_never_blocks_emit() -> None:
    async def go() -> None:
        log = EventLog(queue_size=2)
        with log.subscribe() as (_, slow), log.subscribe() as (_, fast):
            for n in range(5):
                log.emit("volume", "create", f"v{n}")  # never blocks, nothing is read
                assert await fast.next(1.0) is not None
            assert slow.dropped and slow.closed and not fast.dropped
            assert log.readers == 1
            queued = [await slow.next(1.0), await slow.next(1.0)]
            assert [m["Actor"]["ID"] for m in queued if m] == ["v0", "v1"]  # type: ignore[index]
            assert await slow.next(None) is None  # ended: returns at once
        assert log.readers == 0

    run(go())


def test_emit_from_another_thread_reaches_the_loop() -> None:
    async def go() -> Message | None:
        log = EventLog()
        with log.subscribe() as (_, live):
            worker = threading.Thread(target=log.emit, args=("image", "load", IMAGE_ID))
            worker.start()
            got = await live.next(2.0)
            worker.join()
            return got

    got = run(go())
    assert got is not None and got["Action"] == "load"


# -- the job -----------------------------------------------------------------------------------


def engine_with_log() -> tuple[Engine, EventLog]:
    engine = Engine()
    events.install(engine)
    return engine, engine[EVENTS]


def actions(records: list[Any]) -> list[str]:
    return [r["Action"] for r in records if "Action" in r]


def test_job_replays_between_since_and_until() -> None:
    async def go() -> None:
        engine, log = engine_with_log()
        first = log.emit("volume", "create", "a")
        second = log.emit("volume", "create", "b")
        log.emit("volume", "create", "c")
        records = await engine.call("events", since=_stamp(first), until=_stamp(second))
        assert records[0] == {"subscribed": True}
        assert [r["Actor"]["ID"] for r in records[1:]] == ["a", "b"]  # type: ignore[index]
        only_c = await engine.call("events", since=_stamp(second, 1), until="0s")
        assert [r["Actor"]["ID"] for r in only_c[1:]] == ["c"]  # type: ignore[index]

    run(go())


def _stamp(m: Message, plus_ns: int = 0) -> str:
    ns = int(str(m["timeNano"])) + plus_ns
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def test_job_without_since_or_until_replays_nothing_and_streams_live() -> None:
    async def go() -> list[Any]:
        engine, log = engine_with_log()
        log.emit("container", "create", CID, {"image": "busybox", "name": "web"})
        job = engine.job("events", filters={"type": ["container"], "event": ["start"]})
        got: list[Any] = []
        job.stdout.attach(got.append)
        task = asyncio.ensure_future(job.run())
        while not got:
            await asyncio.sleep(0.01)
        log.emit("container", "start", CID, {"image": "busybox", "name": "web"})
        log.emit("container", "stop", CID, {"image": "busybox", "name": "web"})
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.wait([task])
        assert log.readers == 0  # the subscription ends with the job
        return got

    assert actions(run(go())) == ["start"]


def test_job_until_in_the_future_ends_on_time_without_events() -> None:
    async def go() -> tuple[list[Any], float]:
        engine, _ = engine_with_log()
        began = time.monotonic()
        records = await engine.call("events", until=str(time.time() + 0.3))
        return records, time.monotonic() - began

    records, took = run(go())
    assert records == [{"subscribed": True}]
    assert 0.25 <= took < 2


def test_job_refuses_bad_params_before_subscribing() -> None:
    async def go() -> None:
        engine, log = engine_with_log()
        with pytest.raises(InvalidArgument, match="'colour'"):
            await engine.call("events", filters={"colour": ["red"]})
        with pytest.raises(InvalidArgument, match="since"):
            await engine.call("events", since="20", until="10")
        with pytest.raises(InvalidArgument, match="until"):
            await engine.call("events", until="soon")
        assert log.readers == 0

    run(go())


# -- the route ---------------------------------------------------------------------------------


def test_route_cuts_off_a_client_that_does_not_read() -> None:
    """A client that never reads must not make the daemon buffer without bound."""

    async def go() -> None:
        engine, log = engine_with_log()
        runner = web.AppRunner(build_app(engine), handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        loop = asyncio.get_running_loop()
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        try:
            await loop.sock_connect(client, ("127.0.0.1", port))
            await loop.sock_sendall(client, b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += await asyncio.wait_for(loop.sock_recv(client, 1024), 5)
            assert head.startswith(b"HTTP/1.1 200") and b"application/json" in head
            attrs = {"driver": "local", "padding": "x" * 2000}
            deadline = time.monotonic() + 20
            while log.readers and time.monotonic() < deadline:  # and the client reads nothing
                for _ in range(200):
                    log.emit("volume", "create", "v", attrs)
                await asyncio.sleep(0.005)
            assert log.readers == 0, "the slow client was never dropped"
            assert not [j for j in engine.running() if j.name == "events"]
        finally:
            client.close()
            await runner.cleanup()

    run(go())
