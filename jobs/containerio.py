"""Container stream jobs: ``logs``, ``resize``, ``export``, ``commit`` and the archive
jobs behind ``docker cp`` (``archive_stat``, ``archive_get``, ``archive_put``).

Output meant for a Docker client is written raw (``job.stdout.write``): without a TTY each chunk
is framed as Docker multiplexes streams (8-byte header: stream 1 stdout / 2 stderr, 3 zero
bytes, big-endian length), with a TTY it is the terminal's bytes as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from drivers.exec.native import protocol
from drivers.logging import jsonfile
from engine import ArgSpec, Engine, Job
from engine.errors import FailedPrecondition, InvalidArgument
from engine.streams import in_thread, reader, writer
from graph.archive import copy as cp
from graph.containers import Container
from graph.imageconfig import apply_changes, encode, now
from graph.reference import parse, with_default_tag
from jobs.events import image_event
from jobs.runtime import Runtime
from jobs.services import GRAPH_DRIVER, IMAGES, LAYERS, RUNTIME

STREAM_IDS = {protocol.STDOUT: 1, protocol.STDERR: 2}


def mux(stream: int, data: bytes) -> bytes:
    """One frame of Docker's multiplexed stream (1 stdout, 2 stderr)."""
    return struct.pack(">BxxxL", stream, len(data)) + data


@dataclass(frozen=True, slots=True)
class LogsParams:
    follow: bool = False
    stdout: bool = False
    stderr: bool = False
    since: str = ""
    until: str = ""
    timestamps: bool = False
    tail: str = "all"


async def logs(job: Job[LogsParams]) -> None:
    """Write a container's json-file log (framed unless it has a TTY); follow while it runs."""
    rt, p = job.engine[RUNTIME], job.params
    c = rt.get(job.args[0])
    if not (p.stdout or p.stderr):
        raise InvalidArgument("You must choose at least one stream")
    log_config = c.host_config.get("LogConfig") or {}
    if log_config.get("Type") == "none":
        raise FailedPrecondition("configured logging driver does not support reading")
    tail = -1 if p.tail in ("", "all") else _int(p.tail, "tail")
    since = jsonfile.parse_time(p.since) if p.since else 0.0
    until = jsonfile.parse_time(p.until) if p.until else 0.0
    _, max_file = jsonfile.validate_options(log_config.get("Config") or {})
    path = rt.store.dir(c.id) / f"{c.id}-json.log"
    tty = bool(c.config.get("Tty"))
    job.emit({"tty": tty})
    options = dict(max_file=max_file, tail=tail, since=since, until=until,
                   stdout=p.stdout, stderr=p.stderr)  # fmt: skip

    async def out(record: Any) -> None:
        data = record.data
        if p.timestamps:
            data = record.timestamp.encode() + b" " + data
        await job.stdout.write(data if tty else mux(1 if record.stream == "stdout" else 2, data))

    if p.follow and c.state.running:
        live = rt.live[c.id]
        stop = lambda: live.removed or not c.state.running  # noqa: E731
        async for record in jsonfile.follow_logs(path, stop=stop, **options):
            await out(record)
        return
    records = await asyncio.to_thread(lambda: list(jsonfile.read_logs(path, **options)))
    for record in records:
        await out(record)


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"{name}: expected an integer, got {text!r}") from None


@dataclass(frozen=True, slots=True)
class ResizeParams:
    h: int = 0
    w: int = 0


async def resize(job: Job[ResizeParams]) -> None:
    """Resize a running container's terminal."""
    rt = job.engine[RUNTIME]
    c = rt.get(job.args[0])
    if not c.state.running:
        raise FailedPrecondition(f"Container {c.id} is not running")
    if job.params.h < 0 or job.params.w < 0:
        raise InvalidArgument("h, w: must not be negative")
    await rt.execdriver.resize(rt.run_dir(c.id), job.params.h, job.params.w)
    rt.event(c, "resize", height=str(job.params.h), width=str(job.params.w))


@contextlib.contextmanager
def _root(engine: Engine, rt: Runtime, c: Container) -> Any:
    """The container's root as the host can open it: the running container's own view
    (``/proc/<pid>/root``, with its mounts) or its mounted layer."""
    if c.state.running and c.state.pid:
        yield Path(f"/proc/{c.state.pid}/root")
        return
    driver = engine[GRAPH_DRIVER]
    path = driver.get(c.id)
    try:
        yield path
    finally:
        driver.put(c.id)


async def export(job: Job[Any]) -> None:
    """Write the container's whole file system as a tar."""
    rt, driver = job.engine[RUNTIME], job.engine[GRAPH_DRIVER]
    c = rt.get(job.args[0])
    loop = asyncio.get_running_loop()

    def work(stop: threading.Event) -> None:
        with driver.diff(c.id, "") as tar:  # type: ignore[attr-defined]
            out = writer(job.stdout.write, stop, loop)
            while chunk := tar.read(1 << 20):
                out.write(chunk)
            out.flush()

    await in_thread(work)
    rt.event(c, "export")


@dataclass(frozen=True, slots=True)
class CommitParams:
    repo: str = ""
    tag: str = ""
    comment: str = ""
    author: str = ""
    pause: bool = True
    changes: tuple[str, ...] = ()
    config: dict[str, object] = field(default_factory=dict)


async def commit(job: Job[CommitParams]) -> None:
    """Make an image of the container's changes on top of its image; emit ``{"Id"}``."""
    rt, p = job.engine[RUNTIME], job.params
    c = rt.get(job.args[0])
    ref = None
    if p.repo:
        ref = with_default_tag(parse(f"{p.repo}:{p.tag}" if p.tag else p.repo))
    base_config = apply_changes(dict(c.config), p.changes)
    base_config.update(p.config)
    paused = False
    if p.pause and c.state.running and not c.state.paused:
        await asyncio.to_thread(rt.execdriver.pause, c.state.monitor)
        paused = True
    try:
        image_id = await asyncio.to_thread(_commit, job.engine, c, base_config, p, ref)
    finally:
        if paused:
            await asyncio.to_thread(rt.execdriver.resume, c.state.monitor)
    if ref is not None:
        image_event(job.engine, "tag", image_id, ref.familiar)
    rt.event(c, "commit", comment=p.comment, imageID=image_id,
             imageRef=ref.familiar if ref else "")  # fmt: skip
    job.emit({"Id": image_id})


def _commit(engine: Engine, c: Container, run_config: dict[str, Any], p: CommitParams,
            ref: Any) -> str:  # fmt: skip
    driver, layers, images = engine[GRAPH_DRIVER], engine[LAYERS], engine[IMAGES]
    parent = images.get(c.image)
    with driver.diff(c.id, f"{c.id}-init") as tar:  # type: ignore[attr-defined]
        layer = layers.register(cast(BinaryIO, tar), parent.layers[-1] if parent.layers else "")
    try:
        config = parent.json()
        history = list(config.get("history") or [])  # type: ignore[call-overload]
        entry: dict[str, Any] = {"created": now(), "created_by": " ".join([c.path, *c.args])}
        if p.author:
            entry["author"] = p.author
        if p.comment:
            entry["comment"] = p.comment
        history.append(entry)
        rootfs = dict(config.get("rootfs") or {})  # type: ignore[call-overload]
        rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), layer.diff_id]
        run = {k: v for k, v in run_config.items() if k not in ("Hostname", "Image")}
        new = {**config, "created": entry["created"], "config": run, "container": c.id,
               "history": history, "rootfs": rootfs, "author": p.author or ""}  # fmt: skip
        chain = [layers.get(i) for i in parent.layers] + [layer]
        image = images.add(encode(new), chain, parent=parent.id)
        if ref is not None:
            images.tag(image.id, ref)
        return image.id
    except BaseException:
        layers.release([layer.id])
        raise


@dataclass(frozen=True, slots=True)
class ArchiveParams:
    path: str = ""
    noOverwriteDirNonDir: bool = False
    copyUIDGID: bool = False


def _path(p: ArchiveParams) -> str:
    if not p.path:
        raise InvalidArgument("path: a path in the container is required")
    return p.path


async def archive_stat(job: Job[ArchiveParams]) -> None:
    """Emit ``{"stat": header}`` for a path in the container."""
    rt = job.engine[RUNTIME]
    c = rt.get(job.args[0])

    def work() -> str:
        with _root(job.engine, rt, c) as root:
            return cp.stat_path(root, _path(job.params)).header()

    job.emit({"stat": await asyncio.to_thread(_named(work, c))})


async def archive_get(job: Job[ArchiveParams]) -> None:
    """Emit ``{"stat": header}`` then write a tar of the path."""
    rt = job.engine[RUNTIME]
    c = rt.get(job.args[0])
    loop = asyncio.get_running_loop()
    with _root(job.engine, rt, c) as root:
        header = await asyncio.to_thread(
            _named(lambda: cp.stat_path(root, _path(job.params)).header(), c)
        )
        job.emit({"stat": header})

        def work(stop: threading.Event) -> None:
            out = writer(job.stdout.write, stop, loop)
            cp.archive_path(root, _path(job.params), cast(BinaryIO, out))
            out.flush()

        await in_thread(work)
    rt.event(c, "archive-path")


async def archive_put(job: Job[ArchiveParams]) -> None:
    """Extract the tar on stdin under a directory of the container."""
    rt, p = job.engine[RUNTIME], job.params
    c = rt.get(job.args[0])
    loop = asyncio.get_running_loop()
    if c.host_config.get("ReadonlyRootfs"):
        raise FailedPrecondition("container rootfs is marked read-only")
    with _root(job.engine, rt, c) as root:

        def work(stop: threading.Event) -> None:
            cp.extract_to(root, _path(p), reader(job.stdin.read, stop, loop),
                          no_overwrite_dir_non_dir=p.noOverwriteDirNonDir,
                          copy_uid_gid=p.copyUIDGID)  # fmt: skip

        await in_thread(_named(work, c))
    rt.event(c, "extract-to-dir")


def _named(fn: Any, c: Container) -> Any:
    """Add the container's id to a not-found message, as Docker words it."""

    def run(*args: Any) -> Any:
        try:
            return fn(*args)
        except FileNotFoundError as exc:
            from engine.errors import NotFound

            raise NotFound(
                f"Could not find the file {exc.filename} in container {c.name}"
            ) from None

    return run


def install(engine: Engine) -> None:
    """Register logs, resize, export, commit and the archive jobs."""
    one = ArgSpec(("container",))
    engine.register("logs", logs, params=LogsParams, args=one)
    engine.register("resize", resize, params=ResizeParams, args=one)
    engine.register("export", export, args=one)
    engine.register("commit", commit, params=CommitParams, args=one)
    engine.register("archive_stat", archive_stat, params=ArchiveParams, args=one)
    engine.register("archive_get", archive_get, params=ArchiveParams, args=one)
    engine.register("archive_put", archive_put, params=ArchiveParams, args=one)
