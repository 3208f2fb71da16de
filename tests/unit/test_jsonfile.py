"""The json-file log: writing, rotation, reading with tail/since/until, and following."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import pytest

from drivers.logging import jsonfile
from drivers.logging.jsonfile import (
    MAX_MESSAGE,
    JsonFileWriter,
    LogRecord,
    follow_logs,
    format_time,
    parse_size,
    parse_time,
    read_logs,
    validate_options,
)
from engine.errors import InvalidArgument, NotSupported

T0 = 1_700_000_000.0


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "c-json.log"


def stored(path: Path) -> list[dict[str, str]]:
    """Decode a log file with the standard library, as any other reader would."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def texts(records: list[LogRecord]) -> list[bytes]:
    return [rec.data for rec in records]


def write_lines(path: Path, count: int, *, max_size: int = 0, max_file: int = 1) -> None:
    writer = JsonFileWriter(path, max_size, max_file)
    try:
        for i in range(count):
            writer.write("stdout", b"line %04d\n" % i, now=T0 + i)
    finally:
        writer.close()


def collect(path: Path, **kwargs: object) -> list[LogRecord]:
    """Follow *path* until it ends; fail if that takes more than 20 s."""

    async def run() -> list[LogRecord]:
        return [rec async for rec in follow_logs(path, **kwargs)]  # type: ignore[arg-type]

    async def bounded() -> list[LogRecord]:
        return await asyncio.wait_for(run(), 20)

    return asyncio.run(bounded())


def test_lines_are_split_and_partial_lines_joined(log: Path) -> None:
    writer = JsonFileWriter(log)
    writer.write("stdout", b"one\ntw", now=T0)
    writer.write("stdout", b"o\nthree\n\nfo", now=T0 + 1)
    assert [r["log"] for r in stored(log)] == ["one\n", "two\n", "three\n", "\n"]
    writer.close()
    writer.close()  # a second close does nothing
    records = stored(log)
    assert [r["log"] for r in records] == ["one\n", "two\n", "three\n", "\n", "fo"]
    assert [r["stream"] for r in records] == ["stdout"] * 5
    assert list(records[0]) == ["log", "stream", "time"]
    assert records[0]["time"] == "2023-11-14T22:13:20.000000000Z"
    assert records[1]["time"] == "2023-11-14T22:13:21.000000000Z"
    partial = list(read_logs(log, max_file=1))[-1]
    assert partial.data == b"fo" and partial.partial


def test_flush_writes_one_streams_partial_line(log: Path) -> None:
    writer = JsonFileWriter(log)
    try:
        writer.write("stdout", b"out")
        writer.write("stderr", b"err")
        writer.flush("stderr")
        assert [(r["stream"], r["log"]) for r in stored(log)] == [("stderr", "err")]
        writer.flush()
        assert [r["log"] for r in stored(log)] == ["err", "out"]
    finally:
        writer.close()
    assert len(stored(log)) == 2


def test_a_long_line_is_cut_into_16k_partial_records(log: Path) -> None:
    writer = JsonFileWriter(log)
    try:
        writer.write("stdout", b"a" * 10_000)
        assert log.stat().st_size == 0  # no newline and under 16 KiB: still buffered
        writer.write("stdout", b"a" * 30_000 + b"\n")
        writer.write("stdout", b"b" * MAX_MESSAGE + b"\n")  # exactly the limit plus its newline
    finally:
        writer.close()
    sizes = [len(r["log"]) for r in stored(log)]
    assert sizes == [MAX_MESSAGE, MAX_MESSAGE, 40_000 - 2 * MAX_MESSAGE + 1, MAX_MESSAGE + 1]
    records = list(read_logs(log, max_file=1))
    assert [r.partial for r in records] == [True, True, False, False]
    assert b"".join(texts(records[:3])) == b"a" * 40_000 + b"\n"


def test_streams_interleave_in_the_order_written(log: Path) -> None:
    writer = JsonFileWriter(log)
    try:
        writer.write("stdout", b"o1\no", now=T0)
        writer.write("stderr", b"e1\n", now=T0 + 1)
        writer.write("stdout", b"2\n", now=T0 + 2)
        writer.write("stderr", b"e2\ne3\n", now=T0 + 3)
    finally:
        writer.close()
    got = [(r.stream, r.data) for r in read_logs(log, max_file=1)]
    assert got == [
        ("stdout", b"o1\n"),
        ("stderr", b"e1\n"),
        ("stdout", b"o2\n"),
        ("stderr", b"e2\n"),
        ("stderr", b"e3\n"),
    ]
    only_err = read_logs(log, max_file=1, stdout=False)
    assert [r.data for r in only_err] == [b"e1\n", b"e2\n", b"e3\n"]


def test_invalid_utf8_and_control_characters_round_trip(log: Path) -> None:
    raw = b'\xff\xfeok \x00\x01\x1b[31mred\x1b[0m \xe2\x82\xac\t"q"\\\r\n'
    writer = JsonFileWriter(log)
    try:
        writer.write("stdout", raw)
    finally:
        writer.close()
    text = log.read_bytes()
    assert b"\\u0000" in text and b"\\u001b" in text and b"\x1b" not in text
    expected = raw.decode("utf-8", errors="replace").encode()
    assert stored(log)[0]["log"].encode() == expected
    assert [r.data for r in read_logs(log, max_file=1)] == [expected]


def test_reopening_appends_and_counts_the_existing_size(log: Path) -> None:
    write_lines(log, 3)
    writer = JsonFileWriter(log, max_size=log.stat().st_size + 10, max_file=2)
    try:
        writer.write("stdout", b"more\n")
    finally:
        writer.close()
    assert [r["log"] for r in stored(Path(f"{log}.1"))] == [f"line {i:04d}\n" for i in range(3)]
    assert [r["log"] for r in stored(log)] == ["more\n"]


def test_rotation_keeps_max_file_files_and_drops_the_oldest(log: Path) -> None:
    write_lines(log, 200, max_size=1000, max_file=3)
    names = sorted(p.name for p in log.parent.iterdir())
    assert names == [log.name, log.name + ".1", log.name + ".2"]
    for name in names:
        assert 0 < (log.parent / name).stat().st_size <= 1000
    got = [int(r.data.split()[1]) for r in read_logs(log, max_file=3)]
    assert got == list(range(got[0], 200))  # a contiguous run ending at the last line
    assert got[0] > 0
    on_disk = sum(len(stored(log.parent / name)) for name in names)
    assert on_disk == len(got)


def test_rotation_loses_no_line_while_files_are_kept(log: Path) -> None:
    write_lines(log, 300, max_size=2000, max_file=100)
    files = list(log.parent.iterdir())
    assert 10 < len(files) < 100
    got = [r.data for r in read_logs(log, max_file=100)]
    assert got == [b"line %04d\n" % i for i in range(300)]


def test_max_file_one_truncates_in_place(log: Path) -> None:
    write_lines(log, 100, max_size=500, max_file=1)
    assert [p.name for p in log.parent.iterdir()] == [log.name]
    assert log.stat().st_size <= 500
    got = [r.data for r in read_logs(log, max_file=1)]
    assert got[-1] == b"line 0099\n" and len(got) < 100


def test_tail_counts_across_rotated_files(log: Path) -> None:
    write_lines(log, 100, max_size=600, max_file=50)
    assert len(stored(log)) < 12  # the tail below spans several files
    for tail in (1, 12, 99, 100, 150):
        got = [r.data for r in read_logs(log, max_file=50, tail=tail)]
        assert got == [b"line %04d\n" % i for i in range(max(0, 100 - tail), 100)]
    assert list(read_logs(log, max_file=50, tail=0)) == []
    all_of_it = read_logs(log, max_file=50, tail=-1)
    assert len(list(all_of_it)) == 100


def test_since_and_until_filter_by_time(log: Path) -> None:
    write_lines(log, 20, max_size=300, max_file=20)
    got = [r.data for r in read_logs(log, max_file=20, since=T0 + 5, until=T0 + 10)]
    assert got == [b"line %04d\n" % i for i in range(5, 10)]  # until is exclusive
    tail = [r.data for r in read_logs(log, max_file=20, until=T0 + 10, tail=2)]
    assert tail == [b"line 0008\n", b"line 0009\n"]
    rec = next(read_logs(log, max_file=20, since=T0 + 18.5, until=0))
    assert rec.data == b"line 0019\n" and rec.time == T0 + 19
    assert rec.timestamp == "2023-11-14T22:13:39.000000000Z"


def test_damaged_lines_are_skipped(log: Path) -> None:
    write_lines(log, 2)
    with open(log, "ab") as f:
        f.write(b'not json\n{"log": 1}\n{"log":"x","stream":"stdout","time":"yesterday"}\n')
    write_lines(log, 1)
    with open(log, "ab") as f:
        f.write(b'{"log":"half')  # a record still being written
    got = [r.data for r in read_logs(log, max_file=1)]
    assert got == [b"line 0000\n", b"line 0001\n", b"line 0000\n"]
    assert [r.data for r in read_logs(log, max_file=1, tail=2)] == got[1:]


def test_a_missing_log_reads_as_empty(log: Path) -> None:
    assert list(read_logs(log, max_file=3)) == []
    assert list(read_logs(log, max_file=3, tail=5)) == []


def test_tail_of_a_large_log_reads_only_its_end(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    line = b'{"log":"%s\\n","stream":"stdout","time":"2023-11-14T22:13:20.000000000Z"}\n'
    filler = line % (b"f" * 80)
    with open(log, "wb") as f:
        f.write(filler * (50 * 1024 * 1024 // len(filler)))
    write_lines(log, 10)
    assert log.stat().st_size > 50_000_000
    read = 0
    real_pread = os.pread

    def counting_pread(fd: int, size: int, offset: int) -> bytes:
        nonlocal read
        data = real_pread(fd, size, offset)
        read += len(data)
        return data

    monkeypatch.setattr(jsonfile.os, "pread", counting_pread)
    got = [r.data for r in read_logs(log, max_file=1, tail=5)]
    assert got == [b"line %04d\n" % i for i in range(5, 10)]
    assert read < 1024 * 1024


def test_follow_reads_lines_exactly_once_across_rotations(log: Path) -> None:
    count = 3000
    done = threading.Event()

    def produce() -> None:
        try:
            writer = JsonFileWriter(log, max_size=4096, max_file=20)
            try:
                for i in range(count):
                    writer.write("stdout" if i % 3 else "stderr", b"line %05d\n" % i)
                    if i % 5 == 0:
                        time.sleep(0.001)
            finally:
                writer.close()
        finally:
            done.set()

    async def follow() -> tuple[list[bytes], int]:
        got, live = [], 0
        async for rec in follow_logs(log, max_file=20, poll=0.005, stop=done.is_set):
            got.append(rec.data)
            live += not done.is_set()
        return got, live

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        got, live = asyncio.run(asyncio.wait_for(follow(), 30))
    finally:
        done.wait(30)
        thread.join(30)
    assert got == [b"line %05d\n" % i for i in range(count)]
    assert live > 0  # read while the writer was writing, not only afterwards
    assert len(list(log.parent.iterdir())) == 20  # it did rotate, many times over


def test_follow_notices_truncation_even_when_the_file_grew_back(log: Path) -> None:
    writer = JsonFileWriter(log, max_size=1000, max_file=1)
    closed = threading.Event()

    async def scenario() -> list[bytes]:
        for i in range(5):
            writer.write("stdout", b"line %04d\n" % i, now=T0 + i)
        size = log.stat().st_size
        follower = follow_logs(log, max_file=1, poll=0.005, stop=closed.is_set)
        got = [(await anext(follower)).data for _ in range(5)]
        i = 5
        while log.stat().st_size < size or i < 15:  # truncated, then past the old offset
            writer.write("stdout", b"line %04d\n" % i, now=T0 + i)
            i += 1
        writer.close()
        closed.set()
        return got + [rec.data async for rec in follower]

    try:
        got = asyncio.run(asyncio.wait_for(scenario(), 20))
    finally:
        writer.close()
    lines = [r.data for r in read_logs(log, max_file=1)]
    assert got[:5] == [b"line %04d\n" % i for i in range(5)]
    assert got[5:] == lines and int(lines[0].split()[1]) > 5


def test_follow_across_truncation_in_place(log: Path) -> None:
    writer = JsonFileWriter(log, max_size=2000, max_file=1)
    received: list[bytes] = []
    finished = False

    async def run() -> None:
        async for rec in follow_logs(log, max_file=1, poll=0.005, stop=lambda: finished):
            received.append(rec.data)

    async def produce() -> None:
        nonlocal finished
        for i in range(200):
            writer.write("stdout", b"line %04d\n" % i)
            deadline = time.monotonic() + 10
            while len(received) <= i and time.monotonic() < deadline:  # wait till read
                await asyncio.sleep(0.001)
        finished = True

    async def both() -> None:
        await asyncio.wait_for(asyncio.gather(run(), produce()), 30)

    try:
        asyncio.run(both())
    finally:
        writer.close()
    assert received == [b"line %04d\n" % i for i in range(200)]
    assert log.stat().st_size <= 2000


def test_follow_ends_after_draining_when_stopped(log: Path) -> None:
    write_lines(log, 50, max_size=500, max_file=10)
    got = collect(log, max_file=10, stop=lambda: True)
    assert [r.data for r in got] == [b"line %04d\n" % i for i in range(50)]
    tail = collect(log, max_file=10, tail=3, stop=lambda: True, stdout=True, stderr=False)
    assert [r.data for r in tail] == [b"line 0047\n", b"line 0048\n", b"line 0049\n"]
    assert collect(log, max_file=10, tail=0, stop=lambda: True) == []


def test_follow_gets_lines_written_just_before_stop(log: Path) -> None:
    state = {"stopped": False}
    writer = JsonFileWriter(log)

    def stop() -> bool:
        if not state["stopped"]:  # the container writes its last words, then exits
            writer.write("stdout", b"last words\n")
            writer.close()
            state["stopped"] = True
        return True

    try:
        writer.write("stdout", b"first\n")
        got = collect(log, max_file=1, poll=0.01, stop=stop)
    finally:
        writer.close()
    assert [r.data for r in got] == [b"first\n", b"last words\n"]


def test_follow_waits_for_the_log_to_appear(log: Path) -> None:
    ready = threading.Event()

    def produce() -> None:
        time.sleep(0.1)
        write_lines(log, 3)
        ready.set()

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        got = collect(log, max_file=1, tail=10, poll=0.01, stop=ready.is_set)
    finally:
        thread.join(30)
    assert [r.data for r in got] == [b"line %04d\n" % i for i in range(3)]


def test_follow_ends_when_until_passes(log: Path) -> None:
    write_lines(log, 5)
    started = time.monotonic()
    got = collect(log, max_file=1, poll=0.01, until=time.time() + 0.3)
    assert 0.25 < time.monotonic() - started < 10
    assert len(got) == 5
    early = collect(log, max_file=1, since=T0 + 1, until=T0 + 3)
    assert [r.data for r in early] == [b"line 0001\n", b"line 0002\n"]


def test_parse_size() -> None:
    assert parse_size("10m") == 10 * 1024 * 1024
    assert parse_size("10M") == parse_size("10mb") == parse_size("10MiB") == parse_size("10 MB")
    assert parse_size("512") == parse_size("512b") == 512
    assert parse_size("1.5k") == 1536
    assert parse_size("2g") == 2 << 30
    for bad in ("", "m", "-1m", "10x", "1.2.3k", "ten"):
        with pytest.raises(InvalidArgument, match="max-size"):
            parse_size(bad)


def test_validate_options() -> None:
    assert validate_options({}) == (0, 1)
    assert validate_options({"max-size": "1m", "max-file": "3"}) == (1 << 20, 3)
    assert validate_options({"max-size": "10k", "tag": "x", "compress": "false"}) == (10240, 1)
    cases: list[tuple[dict[str, str], str]] = [
        ({"foo": "1"}, "unknown log opt 'foo' for json-file log driver"),
        ({"max-size": "0"}, "max-size"),
        ({"max-size": "huge"}, "max-size"),
        ({"max-size": "1m", "max-file": "0"}, "max-file"),
        ({"max-size": "1m", "max-file": "two"}, "max-file"),
        ({"max-file": "3"}, "max-file: needs max-size"),
    ]
    for opts, message in cases:
        with pytest.raises(InvalidArgument, match=message):
            validate_options(opts)
    with pytest.raises(NotSupported, match="compress"):
        validate_options({"max-size": "1m", "compress": "true"})


def test_writer_refuses_bad_limits(log: Path) -> None:
    with pytest.raises(InvalidArgument, match="max-file"):
        JsonFileWriter(log, max_size=10, max_file=0)
    with pytest.raises(InvalidArgument, match="max-size"):
        JsonFileWriter(log, max_size=-1)
    assert not log.exists()


def test_format_time_trims_like_go() -> None:
    assert format_time(T0) == "2023-11-14T22:13:20Z"
    assert format_time(T0 + 0.5) == "2023-11-14T22:13:20.5Z"
    assert format_time(T0 + 0.000123) == "2023-11-14T22:13:20.000123Z"
    assert jsonfile.format_time_ns(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert jsonfile.format_time_ns(1_700_000_000_000_000_010, False).endswith(".000000010Z")


def test_parse_time_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    def check(text: str, want: float) -> None:
        assert parse_time(text, now=T0) == pytest.approx(want, abs=1e-6), text

    check("2023-11-14T22:13:20Z", T0)
    check("2023-11-14T22:13:20.25Z", T0 + 0.25)
    check("2023-11-14T22:13:20.123456789Z", T0 + 0.123456789)
    check("2023-11-15T00:13:20+02:00", T0)
    check("2023-11-14T20:13:20-02:00", T0)
    check("2023-11-14Z", T0 - (22 * 3600 + 13 * 60 + 20))
    check("1700000000", T0)
    check("1700000000.5", T0 + 0.5)
    check("1700000000.000000001", T0 + 1e-9)
    check("0", 0)
    check("10m", T0 - 600)
    check("1h30m", T0 - 5400)
    check("42s", T0 - 42)
    check("1.5h", T0 - 5400)
    check("250ms", T0 - 0.25)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        check("2023-11-14T22:13:20", T0)  # no zone: local time
        check("2023-11-14", T0 - (22 * 3600 + 13 * 60 + 20))
    finally:
        monkeypatch.undo()
        time.tzset()
    for bad in ("", "yesterday", "10x", "2023-13-01", "1h-5m", "12:00"):
        with pytest.raises(InvalidArgument, match="since"):
            parse_time(bad)
    with pytest.raises(InvalidArgument, match="until"):
        parse_time("soon", field="until")
