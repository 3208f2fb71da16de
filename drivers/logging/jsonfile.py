"""The ``json-file`` container log: the monitor's writer and the daemon's readers.

Vocabulary: the *log* is ``<data-root>/containers/<id>/<id>-json.log``; each line of it is one
*record*, a JSON object ``{"log": text, "stream": "stdout"|"stderr", "time": RFC 3339}``. A
record's text is one output line with its newline, or a *partial* chunk without one (a line that
reached 16 KiB, or the last bytes before a stream ended). *Rotation* renames the log to
``<log>.1`` (``.1`` to ``.2``, and so on) and starts a fresh one, keeping *max_file* files in all;
with ``max_file == 1`` the log is truncated in place instead.

Lifecycle: the monitor process owns one ``JsonFileWriter`` per container run (appending to an
existing log) and closes it when the container's streams end. The daemon reads the files at any
time, from another process: ``read_logs`` for a snapshot, ``follow_logs`` for ``logs -f``, which
tracks the writer across rotations by inode. Every record reaches the file in one ``os.write``,
so readers only ever consider bytes up to the last newline. A *mark* (``log_mark``) is where the
log ended at one moment (current file's inode, size, change time and last bytes); ``read_until``
reads the records written before a mark, which is how ``attach?logs=1`` joins its replay to live
output.

Times are integers of nanoseconds since the epoch (``time_ns``): the file keeps all nine digits,
``format_time`` prints them as Go's RFC3339Nano does (``logs -t``).
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import datetime
import functools
import itertools
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from engine.errors import InvalidArgument, NotSupported

MAX_MESSAGE: Final = 16 * 1024  # Docker's largest message; longer lines become partial records
_CHUNK: Final = 256 * 1024  # bytes read per step; bounds how long one step blocks the loop
_BLOCK: Final = 64 * 1024  # bytes read per step when scanning backwards for --tail
_MARK: Final = 64  # bytes before the follow offset compared on each read to detect truncation
_NS: Final = 1_000_000_000
_OPTIONS: Final = frozenset(
    {"max-size", "max-file", "compress", "labels", "labels-regex", "env", "env-regex", "tag"}
)


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record: the stream's name, its bytes, its time and the time text as stored."""

    stream: str
    data: bytes
    time_ns: int
    timestamp: str

    @property
    def time(self) -> float:
        """Return the record's time in seconds since the epoch."""
        return self.time_ns / _NS

    @property
    def partial(self) -> bool:
        """Tell whether the record is a chunk of a longer line (no trailing newline)."""
        return not self.data.endswith(b"\n")


@dataclass(frozen=True, slots=True)
class LogMark:
    """Where the log ended at one moment: the current file's inode, size, modification time and
    last bytes (which end with the last record's time, so they also tell a later file that
    reuses the inode, or the same file truncated and written again). All 0 and empty when there
    was no log. Two equal marks mean nothing was written in between."""

    inode: int
    size: int
    mtime_ns: int
    tail: bytes


def log_mark(path: str | Path) -> LogMark:
    """Return where the log at *path* ends now (see LogMark)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return LogMark(0, 0, 0, b"")
    try:
        st = os.fstat(fd)
        tail = os.pread(fd, min(_MARK, st.st_size), st.st_size - min(_MARK, st.st_size))
        return LogMark(st.st_ino, st.st_size, st.st_mtime_ns, tail)
    finally:
        os.close(fd)


class JsonFileWriter:
    """Appends a container's output to its log as records, rotating by size.

    Example::

        w = JsonFileWriter(path, max_size=10 << 20, max_file=3)
        w.write("stdout", b"hello\\nwor")  # one record; "wor" waits for its newline
        w.close()  # writes "wor" as a partial record
    """

    def __init__(self, path: str | Path, max_size: int = 0, max_file: int = 1) -> None:
        if max_size < 0:
            raise InvalidArgument(f"log-opts: max-size: must not be negative: {max_size}")
        if max_file < 1:
            raise InvalidArgument(f"log-opts: max-file: cannot be less than 1: {max_file}")
        self.path, self.max_size, self.max_file = Path(path), max_size, max_file
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self._pending: dict[str, bytearray] = {}

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)

    def write(self, stream: str, data: bytes, now: float | None = None) -> None:
        """Buffer *data* of *stream*; append each complete line or full 16 KiB chunk as a record."""
        stamp = time.time_ns() if now is None else round(now * _NS)
        buf = self._pending.setdefault(stream, bytearray())
        buf += data
        start = 0
        while (nl := buf.find(b"\n", start, start + MAX_MESSAGE + 1)) >= 0 or (
            len(buf) >= start + MAX_MESSAGE
        ):
            end = nl + 1 if nl >= 0 else start + MAX_MESSAGE
            self._append(stream, bytes(buf[start:end]), stamp)
            start = end
        del buf[:start]

    def flush(self, stream: str | None = None) -> None:
        """Write the buffered partial line of *stream* (of every stream if None) as a record."""
        stamp = time.time_ns()
        for name, buf in self._pending.items():
            if buf and stream in (None, name):
                self._append(name, bytes(buf), stamp)
                buf.clear()

    def close(self) -> None:
        """Flush all partial lines and close the file; later calls do nothing."""
        if self._fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self._fd)
                self._fd = -1

    def _append(self, stream: str, chunk: bytes, stamp: int) -> None:
        text = chunk.decode("utf-8", errors="replace")
        record = {"log": text, "stream": stream, "time": format_time_ns(stamp, False)}
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        if self.max_size and self._size and self._size + len(line) > self.max_size:
            self._rotate()
        view = memoryview(line)
        while view:  # a regular file only writes short when the disk is full; finish or raise
            view = view[os.write(self._fd, view) :]
        self._size += len(line)

    def _rotate(self) -> None:
        if self.max_file == 1:
            os.ftruncate(self._fd, 0)  # O_APPEND: the next write lands at offset 0
        else:
            for index in range(self.max_file - 1, 0, -1):  # the oldest is replaced, so dropped
                older = f"{self.path}.{index - 1}" if index > 1 else self.path
                with contextlib.suppress(FileNotFoundError):
                    os.replace(older, f"{self.path}.{index}")
            fd = self._open()
            os.close(self._fd)
            self._fd = fd
        self._size = 0


_SIZE = re.compile(r"(\d+(?:\.\d+)?) ?([kmgtp])?i?b?", re.IGNORECASE)
_UNITS: Final = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str) -> int:
    """Return the bytes in a max-size value ("10m", "1.5GB", "512k"); raise InvalidArgument."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise InvalidArgument(f"log-opts: max-size: invalid size: {text!r}")
    return int(float(match[1]) * _UNITS[(match[2] or "").lower()])


def validate_options(opts: Mapping[str, str]) -> tuple[int, int]:
    """Check a container's json-file log options; return (max_size, max_file) for the writer."""
    for key in opts:
        if key not in _OPTIONS:
            raise InvalidArgument(f"unknown log opt '{key}' for json-file log driver")
    max_size, max_file = 0, 1
    if "max-size" in opts:
        max_size = parse_size(opts["max-size"])
        if max_size <= 0:
            raise InvalidArgument("log-opts: max-size: must be a positive number")
    if "max-file" in opts:
        text = opts["max-file"].strip()
        max_file = int(text) if text.isdigit() else 0
        if max_file < 1:
            raise InvalidArgument(f"log-opts: max-file: must be a number >= 1: {text!r}")
        if not max_size:
            raise InvalidArgument("log-opts: max-file: needs max-size")
    if opts.get("compress", "false").lower() not in ("false", "f", "0"):
        raise NotSupported("log-opts: compress: compressed rotated logs are not supported")
    return max_size, max_file


def format_time_ns(ns: int, trim: bool = True) -> str:
    """Return *ns* as RFC 3339 in UTC; *trim* drops trailing zeros of the fraction as Go does."""
    sec, frac = divmod(ns, _NS)
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    digits = f"{frac:09d}".rstrip("0") if trim else f"{frac:09d}"
    return f"{head}.{digits}Z" if digits else f"{head}Z"


def format_time(t: float) -> str:
    """Return *t* (seconds) as Go's RFC3339Nano, as ``logs -t`` prints it (use a record's time_ns
    with format_time_ns for all nine digits: a float of epoch seconds only holds microseconds)."""
    return format_time_ns(round(t * 1_000_000) * 1000)


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)(?:[Tt ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,9})\d*)?)?)?"
    r"(?:([Zz])|([+-])(\d\d):?(\d\d))?"
)
_UNIX = re.compile(r"(\d+)(?:\.(\d{0,9})\d*)?")
_DURATION = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|ms|h|m|s))+")
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|ms|h|m|s)")
_DURATION_NS: Final = {"ns": 1, "us": 10**3, "ms": 10**6, "s": _NS, "m": 60 * _NS, "h": 3600 * _NS}


def _rfc3339_ns(text: str) -> int | None:
    """Return the time of an RFC 3339 text in ns (local time if it has no zone); None if not."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    fields = match.group(1, 2, 3, 4, 5, 6, 8, 9, 10, 11)
    sec = _utc_seconds(fields) if fields[6] or fields[7] else _seconds(fields)
    return None if sec is None else sec * _NS + int((match[7] or "").ljust(9, "0"))


@functools.lru_cache(maxsize=64)  # the records written in one second share it
def _utc_seconds(fields: tuple[str | None, ...]) -> int | None:
    return _seconds(fields)


def _seconds(fields: tuple[str | None, ...]) -> int | None:
    """Return the epoch seconds of the date, time and zone fields of an RFC 3339 match."""
    year, month, day, hour, minute, second = (int(x or 0) for x in fields[:6])
    try:
        when = datetime.datetime(year, month, day, hour, minute, second)
        if not (fields[6] or fields[7]):  # no zone: local time, as the Docker CLI reads it
            return int(when.timestamp())
    except (ValueError, OverflowError):
        return None
    offset = int(fields[8] or 0) * 3600 + int(fields[9] or 0) * 60
    return calendar.timegm(when.timetuple()) + (-offset if fields[7] == "+" else offset)


def parse_time(text: str, *, now: float | None = None, field: str = "since") -> float:
    """Return seconds for a --since/--until value: RFC 3339, unix seconds or a duration ago."""
    text = text.strip().replace("µ", "u").replace("μ", "u")  # Go's two spellings of micro
    if text != "0" and _DURATION.fullmatch(text):
        ago = sum(float(num) * _DURATION_NS[unit] for num, unit in _DURATION_PART.findall(text))
        sign = -1 if text.startswith("-") else 1
        return (time.time() if now is None else now) - sign * ago / _NS
    unix = _UNIX.fullmatch(text)
    if unix is not None:
        return int(unix[1]) + int((unix[2] or "").ljust(9, "0")) / _NS
    ns = _rfc3339_ns(text)
    if ns is None:
        raise InvalidArgument(f"{field}: invalid time value {text!r}")
    return ns / _NS


def _parse_line(line: bytes) -> LogRecord | None:
    """Decode one stored line; None for a damaged one (a reader skips it)."""
    try:
        obj = orjson.loads(line)
        stream, stamp, data = obj["stream"], obj["time"], obj["log"].encode("utf-8", "replace")
        ns = _rfc3339_ns(stamp)  # TypeError unless a str
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError, AttributeError):
        return None
    if ns is None or not isinstance(stream, str):
        return None
    return LogRecord(stream, data, ns, stamp)


def _parse_lines(block: bytes) -> list[LogRecord]:
    """Decode the newline-terminated lines of *block*."""
    found = (_parse_line(line) for line in block.split(b"\n")[:-1])
    return [rec for rec in found if rec is not None]


def _complete_end(fd: int) -> int:
    """Return the offset just after the last newline of *fd* (0 if it has none)."""
    end = os.fstat(fd).st_size
    while end > 0:
        start = max(0, end - _BLOCK)
        found = os.pread(fd, end - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        end = start
    return 0


def _reverse_lines(fd: int, end: int) -> Iterator[bytes]:
    """Yield the lines of *fd* before *end* (just after a newline), last first."""
    carry, offset = b"", end - 1  # (end 0 gives one empty line, which no reader can decode)
    while offset > 0:
        size = min(_BLOCK, offset)
        offset -= size
        parts = (os.pread(fd, size, offset) + carry).split(b"\n")
        carry = parts[0]
        yield from reversed(parts[1:])
    yield carry


def _open_chain(path: Path, max_file: int) -> list[tuple[int, int]]:
    """Open the log and its rotated files; return (fd, inode) pairs, newest first."""
    # The current file is opened first: if a rotation happens meanwhile, that file shows up
    # again as ".1" and is dropped, so the list stays in order and without duplicates.
    chain: list[tuple[int, int]] = []
    for index in range(max_file):
        name = f"{path}.{index}" if index else str(path)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        inode = os.fstat(fd).st_ino
        if any(inode == seen for _, seen in chain):
            os.close(fd)
        else:
            chain.append((fd, inode))
    return chain


def _close_all(chain: list[tuple[int, int]]) -> None:
    for fd, _ in chain:
        os.close(fd)


_Test = Callable[[LogRecord], bool]  # is a record wanted (stream, since, until)?


def _wanted(stdout: bool, stderr: bool, since: float, until: float) -> _Test:
    """Return the test for records wanted: stream chosen, at or after since, before until."""
    streams = {name for name, on in (("stdout", stdout), ("stderr", stderr)) if on}
    since_ns, until_ns = round(since * _NS), round(until * _NS)
    return lambda rec: (
        rec.stream in streams
        and since_ns <= rec.time_ns
        and (not until_ns or rec.time_ns < until_ns)
    )


def _tail(chain: list[tuple[int, int]], count: int, wanted: _Test) -> tuple[list[LogRecord], int]:
    """Return the last *count* wanted records of *chain* (newest first) and the current end."""
    ends = [_complete_end(fd) for fd, _ in chain]
    lines = (
        line for (fd, _), end in zip(chain, ends, strict=True) for line in _reverse_lines(fd, end)
    )
    records = (rec for rec in map(_parse_line, lines) if rec is not None and wanted(rec))
    found = list(itertools.islice(records, count))
    found.reverse()
    return found, ends[0]


def read_logs(
    path: str | Path,
    *,
    max_file: int,
    tail: int = -1,
    since: float = 0,
    until: float = 0,
    stdout: bool = True,
    stderr: bool = True,
) -> Iterator[LogRecord]:
    """Yield the stored records, oldest first; *tail* >= 0 keeps only that many from the end."""
    wanted = _wanted(stdout, stderr, since, until)
    cursor = _Cursor(Path(path), max_file)
    try:
        yield from cursor.start(tail, wanted)
        moved = tail < 0
        while moved:
            recs, moved = cursor.step()
            yield from filter(wanted, recs)
    finally:
        cursor.close()


def read_until(
    path: str | Path,
    *,
    max_file: int,
    end: LogMark,
    start: LogMark | None = None,
    stdout: bool = True,
    stderr: bool = True,
) -> Iterator[LogRecord]:
    """Yield the records stored before *end* (and after *start*, if given), oldest first, across
    rotations since; nothing if a marked file was rotated away or truncated meanwhile."""
    if not end.inode:
        return
    wanted = _wanted(stdout, stderr, 0, 0)
    cursor = _Cursor(
        Path(path), max_file, end, start if start is not None and start.inode else None
    )
    try:
        yield from cursor.start(-1, wanted)
        moved = True
        while moved:
            recs, moved = cursor.step()
            yield from filter(wanted, recs)
    finally:
        cursor.close()


def _holds(fd: int, end: LogMark) -> bool:
    """Tell whether *fd* is the file *end* was taken of, still holding what it marked."""
    start = end.size - len(end.tail)
    return start >= 0 and os.pread(fd, len(end.tail), start) == end.tail


class _Cursor:
    """A reader's place in the log: an open file and the offset after its last line read.

    Each read also covers the bytes before the offset (a truncation in place changes them). At
    the end of a file whose name now holds another inode it reads once more (the writer may have
    appended before renaming) and moves on to the file rotated in after it. With an *end* mark it
    stops there: in the file of that inode, at that size; with a *begin* mark it starts there.
    """

    def __init__(
        self, path: Path, max_file: int, end: LogMark | None = None, begin: LogMark | None = None
    ) -> None:
        self.path, self.max_file, self.end, self.begin = path, max_file, end, begin
        self.fd, self.inode, self.pos, self.mark = -1, 0, 0, b""
        self.rotated = self.closed = self.finished = False
        self._lock = threading.Lock()  # start() may finish in a thread after close()

    def start(self, tail: int, wanted: _Test) -> list[LogRecord]:
        """Open the log; return the last *tail* wanted records, placing the cursor after them."""
        # With tail < 0 the cursor starts at the oldest file and returns nothing here.
        chain = _open_chain(self.path, self.max_file)
        try:
            if not chain:
                return []
            end = self.end
            if end is not None and not any(i == end.inode and _holds(fd, end) for fd, i in chain):
                self.finished = True  # the marked file is gone, and every older one with it
                return []
            if self.begin is not None:
                begin = self.begin
                at = [i for i, (fd, inode) in enumerate(chain) if inode == begin.inode]
                if not at or not _holds(chain[at[0]][0], begin):
                    self.finished = True  # the file it starts in is gone
                    return []
                found, pos, (fd, inode) = list[LogRecord](), begin.size, chain.pop(at[0])
            elif tail < 0:
                found, pos, (fd, inode) = list[LogRecord](), 0, chain.pop()
            else:
                (found, pos), (fd, inode) = _tail(chain, tail, wanted), chain.pop(0)
            with self._lock:
                if self.closed:
                    chain.append((fd, inode))
                else:
                    self.attach(fd, inode, pos)
            return found
        finally:
            _close_all(chain)

    def attach(self, fd: int, inode: int, pos: int) -> None:
        """Continue in *fd* at *pos* (just after a newline); close the file read before."""
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.inode, self.pos, self.rotated = fd, inode, pos, False
        size = min(pos, _MARK)
        self.mark = os.pread(fd, size, pos - size)
        if self.end is not None and inode == self.end.inode and not _holds(fd, self.end):
            self.finished = True  # another file now has the inode, or it was truncated

    def close(self) -> None:
        """Close the file; a later start() closes what it opened."""
        with self._lock:
            self.closed = True
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

    def step(self) -> tuple[list[LogRecord], bool]:
        """Read at most one chunk; return its records and whether the cursor moved at all."""
        if self.finished:
            return [], False
        if self.fd < 0:
            chain = _open_chain(self.path, 1)
            if chain:
                self.attach(*chain[0], 0)
            return [], bool(chain)
        size, want = len(self.mark), _CHUNK
        last = self.end is not None and self.inode == self.end.inode
        if self.end is not None and last:
            want = min(want, self.end.size - self.pos)
        buf = os.pread(self.fd, want + size, self.pos - size) if want > 0 else b""
        if buf[:size] != self.mark or (last and want > 0 and len(buf) == size):
            if last:  # the marked file was truncated in place: its lines are gone
                self.finished = True
                return [], False
            self.pos, self.mark = 0, b""  # truncated in place (max-file 1): start again at 0
            return [], True
        data = buf[size:]
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) >= _CHUNK:  # a damaged over-long line: skip it
            cut = len(data)
        if cut:
            self.pos += cut
            self.mark = (self.mark + data[:cut])[-_MARK:]
            return _parse_lines(data[:cut]), True
        if last:  # at the mark
            self.finished = True
            return [], False
        if self.rotated:
            return [], self._next_file()
        # A missing name is the moment between the writer's rename and its new file.
        with contextlib.suppress(FileNotFoundError):
            self.rotated = os.stat(self.path).st_ino != self.inode
        return [], self.rotated

    def _next_file(self) -> bool:
        """Move to the file written after the one read (the oldest left, if it was dropped)."""
        chain = _open_chain(self.path, self.max_file)
        inodes = [inode for _, inode in chain]
        index = inodes.index(self.inode) if self.inode in inodes else len(chain)
        if index == 0:  # not rotated after all (the name was briefly replaced)
            self.rotated = False
            _close_all(chain)
            return False
        successor = chain.pop(index - 1)
        _close_all(chain)
        self.attach(*successor, 0)
        return True


async def follow_logs(
    path: str | Path,
    *,
    max_file: int,
    tail: int = -1,
    since: float = 0,
    until: float = 0,
    stdout: bool = True,
    stderr: bool = True,
    poll: float = 0.1,
    stop: Callable[[], bool] | None = None,
) -> AsyncIterator[LogRecord]:
    """Yield the stored records, then new ones across rotations, till drained after *stop*()
    returned True or *until* passed (``logs -f``); a log that does not exist yet is waited for."""
    wanted = _wanted(stdout, stderr, since, until)
    until_ns = round(until * _NS)
    cursor = _Cursor(Path(path), max_file)
    stopping = False
    try:
        # Scanning backwards for the tail may take a while: keep the event loop free meanwhile.
        for rec in await asyncio.to_thread(cursor.start, tail, wanted):
            yield rec
        while True:
            recs, moved = cursor.step()
            for rec in recs:
                if until_ns and rec.time_ns >= until_ns:
                    return
                if wanted(rec):
                    yield rec
            if moved:
                await asyncio.sleep(0)
                continue
            if stopping or (until_ns and time.time_ns() >= until_ns):
                return
            if stop is not None and stop():
                stopping = True  # drain once more: lines may have landed since the last read
                continue
            await asyncio.sleep(poll)
    finally:
        cursor.close()
