"""``docker exec``: ``exec_create``, ``exec_start``, ``exec_inspect`` and ``exec_resize``.

An exec instance lives in the daemon's memory (as Docker's) from ``exec_create`` until its
container is removed. ``exec_start`` makes the process's stdio here (a pty for ``Tty``, else
pipes), hands the child ends to the exec driver, and copies between them and the job's streams
until the process ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from drivers.exec.native.linux import open_pty, set_winsize
from drivers.exec.spec import ExecSpec, Process
from engine import ArgSpec, Engine, Job
from engine.errors import FailedPrecondition, InvalidArgument, NotFound
from jobs import containerconfig as cc
from jobs.containerio import ResizeParams, mux
from jobs.runtime import Runtime
from jobs.services import RUNTIME


@dataclass
class ExecInstance:
    """One exec, as ``exec_inspect`` shows it."""

    id: str
    container_id: str
    process: Process
    config: dict[str, Any]
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    master: int = -1
    started: bool = False
    task: asyncio.Future[None] | None = None  # a detached exec's waiter


def _find(rt: Runtime, id: str) -> ExecInstance:
    instance = rt.execs.get(id)
    if instance is None:
        raise NotFound(f"No such exec instance: {id}")
    return instance


@dataclass(frozen=True, slots=True)
class ExecCreateParams:
    body: dict[str, object] = field(default_factory=dict, metadata={"doc": "Docker's exec body"})


async def exec_create(job: Job[ExecCreateParams]) -> None:
    """Prepare a process to run in a running container; emit ``{"Id"}``."""
    rt = job.engine[RUNTIME]
    c = rt.get(job.args[0])
    if not c.state.running or c.state.restarting:
        raise FailedPrecondition(f"Container {c.id} is not running")
    if c.state.paused:
        raise FailedPrecondition(f"Container {c.id} is paused, unpause the container before exec")
    attached = rt.network.attached.get(c.id) if rt.network is not None else None
    hostname = cc.hostname_for(c.id, c.config, c.host_config)
    process = cc.exec_process(job.params.body, c.config, c.host_config, rt.held_caps, hostname,
                              attached.env if attached is not None else ())  # fmt: skip
    id = secrets.token_hex(32)
    rt.execs[id] = ExecInstance(id, c.id, process, dict(job.params.body))
    rt.event(c, f"exec_create: {' '.join(process.args)}", execID=id)
    job.emit({"Id": id})


@dataclass(frozen=True, slots=True)
class ExecStartParams:
    Detach: bool = False
    Tty: bool = False
    ConsoleSize: list[int] | None = None


async def exec_start(job: Job[ExecStartParams]) -> None:
    """Start an exec; unless detached, emit ``{"attached"}`` and copy its stdio until it ends."""
    rt = job.engine[RUNTIME]
    instance = _find(rt, job.args[0])
    if instance.started:
        raise FailedPrecondition(f"Error: Exec command {instance.id} has already run")
    c = rt.get(instance.container_id)
    if not c.state.running:
        raise FailedPrecondition(f"Container {c.id} is not running")
    instance.started = True
    process = instance.process
    detach = job.params.Detach
    ours, theirs = _stdio(process, detach, c.state.pid)
    spec = ExecSpec(
        id=instance.id, container_id=c.id, pid=c.state.pid,
        cgroup=dict(c.state.monitor.get("cgroup") or {}), process=process,
        privileged=bool(instance.config.get("Privileged")),
    )  # fmt: skip
    rt.event(c, f"exec_start: {' '.join(process.args)}", execID=instance.id)
    try:
        handle = await rt.execdriver.exec(spec, theirs)
    except BaseException:
        for fd in {*ours.values(), *theirs}:
            with contextlib.suppress(OSError):
                os.close(fd)
        instance.exit_code = 126
        raise
    for fd in set(theirs):
        os.close(fd)
    instance.running, instance.pid = True, handle.pid
    if process.tty:
        instance.master = ours["out"]
        size = job.params.ConsoleSize
        if size and len(size) == 2 and size[0] and size[1]:
            set_winsize(instance.master, size[0], size[1])
    if detach:
        instance.task = asyncio.ensure_future(_finish(rt, instance, handle))
        return
    job.emit({"attached": True, "tty": process.tty})
    try:
        await _relay(job, ours, process.tty, handle)
    finally:
        for fd in set(ours.values()):
            with contextlib.suppress(OSError):
                os.close(fd)
        instance.master = -1
    await _finish(rt, instance, handle)


async def _finish(rt: Runtime, instance: ExecInstance, handle: Any) -> None:
    instance.exit_code = await handle.wait()
    instance.running = False
    if (c := rt.containers.get(instance.container_id)) is not None:
        rt.event(c, "exec_die", execID=instance.id, exitCode=str(instance.exit_code))


def _stdio(process: Process, detach: bool, pid: int) -> tuple[dict[str, int], tuple[int, int, int]]:
    if detach:
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        return {}, (null, null, null)
    if process.tty:
        # A pty from the container's own devpts instance, so that ``tty`` inside names it.
        master, slave = open_pty(f"/proc/{pid}/root/dev/pts/ptmx")
        os.set_blocking(master, False)
        return {"out": master, "in": master}, (slave, slave, slave)
    ours: dict[str, int] = {}
    if process.stdin:
        stdin_r, ours["in"] = os.pipe2(os.O_CLOEXEC)
    else:
        stdin_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    ours["out"], ours["err"] = out_r, err_r
    for fd in ours.values():
        os.set_blocking(fd, False)
    return ours, (stdin_r, out_w, err_w)


async def _relay(job: Job[Any], ours: dict[str, int], tty: bool, handle: Any) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    open_fds = {ours["out"]: 1}
    if "err" in ours:
        open_fds[ours["err"]] = 2

    def readable(fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
        queue.put_nowait((fd, data))

    for fd in open_fds:
        loop.add_reader(fd, readable, fd)
    feeder = asyncio.ensure_future(_feed(job, ours.get("in", -1), tty)) if "in" in ours else None
    try:
        while open_fds:
            fd, data = await queue.get()
            if not data:
                del open_fds[fd]
                continue
            await job.stdout.write(data if tty else mux(open_fds[fd], data))
    finally:
        for fd in open_fds:
            loop.remove_reader(fd)
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(BaseException):
                await feeder


async def _feed(job: Job[Any], fd: int, tty: bool) -> None:
    while True:
        data = await job.stdin.read(65536)
        if not data:
            if tty:
                with contextlib.suppress(OSError):
                    os.write(fd, b"\x04")
            else:
                os.close(fd)
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                await asyncio.sleep(0.01)
            except OSError:
                return


async def exec_inspect(job: Job[Any]) -> None:
    """Emit an exec instance in Docker's ``/exec/{id}/json`` shape."""
    rt = job.engine[RUNTIME]
    e = _find(rt, job.args[0])
    p = e.process
    job.emit({
        "ID": e.id, "Running": e.running, "ExitCode": e.exit_code, "Pid": e.pid,
        "ContainerID": e.container_id, "OpenStdin": p.stdin, "OpenStdout": True,
        "OpenStderr": True, "CanRemove": False, "DetachKeys": "",
        "ProcessConfig": {"tty": p.tty, "entrypoint": p.args[0], "arguments": list(p.args[1:]),
                          "privileged": bool(e.config.get("Privileged")), "user": p.user},
    })  # fmt: skip


async def exec_resize(job: Job[ResizeParams]) -> None:
    """Resize an exec's terminal."""
    rt = job.engine[RUNTIME]
    e = _find(rt, job.args[0])
    if e.master < 0:
        raise FailedPrecondition(f"exec {e.id} has no running terminal")
    if job.params.h < 0 or job.params.w < 0:
        raise InvalidArgument("h, w: must not be negative")
    set_winsize(e.master, job.params.h, job.params.w)


def install(engine: Engine) -> None:
    """Register exec_create, exec_start, exec_inspect and exec_resize."""
    engine.register("exec_create", exec_create, params=ExecCreateParams,
                    args=ArgSpec(("container",)))  # fmt: skip
    engine.register("exec_start", exec_start, params=ExecStartParams, args=ArgSpec(("id",)))
    engine.register("exec_inspect", exec_inspect, args=ArgSpec(("id",)))
    engine.register("exec_resize", exec_resize, params=ResizeParams, args=ArgSpec(("id",)))
