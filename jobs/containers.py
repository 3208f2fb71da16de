"""Container lifecycle jobs: ``create``, ``start``, ``stop``, ``kill``, ``restart``,
``container_delete``, ``pause``, ``unpause``, ``wait``, ``rename`` and ``update``.

Each handler resolves its container through the runtime (``RUNTIME``), does one transition
under the container's lock, and emits Docker's response shape where Docker has a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import signal as signals
import time
from dataclasses import dataclass, field
from typing import Any

from drivers.exec.spec import ContainerSpec
from engine import ArgSpec, Engine, Job
from engine.errors import (
    EngineError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from graph import initlayer
from graph.containers import Container
from jobs import containerconfig as cc
from jobs import netplan
from jobs.links import parse_link
from jobs.netplan import Plan
from jobs.runtime import Runtime, now_rfc3339
from jobs.services import GRAPH_DRIVER, IMAGES, NETWORK, RUNTIME, VOLUMES

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CreateParams:
    body: dict[str, object] = field(
        default_factory=dict, metadata={"doc": "Docker's create body: Config + HostConfig"}
    )
    name: str = field(default="", metadata={"doc": "container name (random when empty)"})


async def create(job: Job[CreateParams]) -> None:
    """Create a container from Docker's create body; emit ``{"Id", "Warnings"}``."""
    rt, images = job.engine[RUNTIME], job.engine[IMAGES]
    request = cc.parse_create(job.params.body)
    ref = str(request.config.get("Image") or "")
    if not ref:
        raise InvalidArgument("Config.Image: an image is required")
    image = await asyncio.to_thread(images.resolve, ref)  # "No such image: x:latest" as dockerd
    config = cc.merge_image(request.config, image.json().get("config") or {})  # type: ignore[arg-type]
    net = job.engine[NETWORK]
    endpoints = request.networking.get("EndpointsConfig") or {}
    mode = str(request.host_config["NetworkMode"])
    networks = await asyncio.to_thread(netplan.initial_networks, net, mode, endpoints)  # type: ignore[arg-type]
    links = _link_targets(rt, request.host_config.get("Links") or [])
    name = cc.check_name(job.params.name) if job.params.name else ""
    name = name or cc.random_name(rt.store.name_taken)
    id = secrets.token_hex(32)
    await asyncio.to_thread(rt.store.reserve, id, name, image.id, time.time())
    try:
        container = await asyncio.to_thread(
            _make, job.engine, rt, id, name, image.id, image.layers[-1] if image.layers else "",
            config, request.host_config, networks, links,
        )  # fmt: skip
    except BaseException:
        await asyncio.to_thread(_undo_create, job.engine, rt, id)
        raise
    rt.add(container)
    rt.volume_events(container, "create")
    rt.event(container, "create")
    job.emit({"Id": id, "Warnings": []})


def _link_targets(rt: Runtime, specs: list[str]) -> list[tuple[str, str]]:
    """(child id, alias) of each ``HostConfig.Links`` entry; InvalidArgument for a missing one."""
    out = []
    for i, spec in enumerate(specs):
        child, alias = parse_link(spec, f"HostConfig.Links[{i}]")
        try:
            out.append((rt.get(child).id, alias))
        except NotFound:
            raise InvalidArgument(
                f"HostConfig.Links[{i}]: could not get container for {child}"
            ) from None
    return out


def _make(
    engine: Engine, rt: Runtime, id: str, name: str, image: str, top: str,
    config: dict[str, Any], host_config: dict[str, Any], networks: dict[str, dict[str, Any]],
    links: list[tuple[str, str]],
) -> Container:  # fmt: skip
    graph, volumes = engine[GRAPH_DRIVER], engine[VOLUMES]
    graph.create(f"{id}-init", top)
    initlayer.populate(graph, f"{id}-init")
    graph.create(id, f"{id}-init")
    plans = cc.plan_mounts(config, host_config, volumes_from=lambda ref: rt.get(ref).mounts)
    sources: list[str] = []
    named: list[tuple[str, str]] = []
    for plan in plans:
        if plan.type == "volume":
            volume = volumes.create(plan.source)
            sources.append(volume.mountpoint)
            named.append((volume.name, plan.destination))
        else:
            sources.append(plan.source)
    mounts = cc.docker_mounts(plans, sources, [n for n, _ in named])
    if not config.get("Hostname"):  # as dockerd: the short id (the host's name with its network)
        config["Hostname"] = cc.hostname_for(id, config, host_config)
    entrypoint = list(config.get("Entrypoint") or [])
    command = entrypoint + list(config.get("Cmd") or [])
    container = Container(
        id=id, name=name, image=image, created=now_rfc3339(), config=config,
        host_config=host_config, path=command[0], args=command[1:], driver=graph.name,
        mounts=mounts, networks=networks,
    )  # fmt: skip
    rt.store.set_volumes(id, named)
    for child, alias in links:
        rt.store.names.set(f"/{name}/{alias}", child)
    netplan.write_files(engine[NETWORK], container, rt.store.dir(id), Plan("new"))
    rt.store.save(container)
    return container


def _undo_create(engine: Engine, rt: Runtime, id: str) -> None:
    graph = engine[GRAPH_DRIVER]
    for layer in (id, f"{id}-init"):
        with contextlib.suppress(EngineError, OSError):
            if graph.exists(layer):
                graph.remove(layer)
    rt.store.forget(id)


async def remove_volumes(volumes: Any, container: Container) -> list[Any]:
    """Remove the anonymous volumes of a removed container (``rm -v``); named ones stay.
    Return the volumes removed."""
    removed = []
    for mount in container.mounts:
        if mount.get("Type") != "volume" or not mount.get("Name"):
            continue
        with contextlib.suppress(EngineError, OSError):
            volume = await asyncio.to_thread(volumes.get, mount["Name"])
            if volume.anonymous:
                await asyncio.to_thread(volumes.remove, volume.name)
                removed.append(volume)
    return removed


async def start_container(rt: Runtime, container: Container, *, restarting: bool = False) -> bool:
    """Start a container (the runtime's ``starter``); False if it was running already."""
    live = rt.live[container.id]
    async with live.lock:
        state = container.state
        if live.removed:
            raise NotFound(f"No such container: {container.id}")
        if state.running and not (restarting and state.restarting):
            return False
        pending = rt.take_attachments(container.id)
        net = rt.network
        try:
            plan = await asyncio.to_thread(netplan.plan, net, container)
            rootfs = await asyncio.to_thread(rt.hold_rootfs, container)
            spec = cc.build_spec(
                id=container.id,
                config=container.config,
                host_config=container.host_config,
                rootfs=rootfs,
                bundle=str(rt.store.dir(container.id)),
                run_dir=str(rt.run_dir(container.id)),
                mounts=cc.spec_mounts(container.mounts, container.host_config),
                held_caps=rt.held_caps,
                join=plan.join,
            )
            spec = _networked(spec, plan, rt.cgroup_parent)
            bundle = rt.store.dir(container.id)

            async def on_pid(pid: int) -> None:
                await net.attach(container, plan, pid)
                await asyncio.to_thread(netplan.write_files, net, container, bundle, plan)

            if not plan.networks:
                await asyncio.to_thread(netplan.write_files, net, container, bundle, plan)
            started, watch = await rt.execdriver.start(spec, [p for p, _ in pending], on_pid)
        except (Exception, asyncio.CancelledError) as exc:  # not GeneratorExit: never await then
            await asyncio.to_thread(rt.release_rootfs, container)
            with contextlib.suppress(Exception):
                await net.release(container)
            state.error = str(exc)
            state.exit_code = getattr(exc, "exit_code", 128)
            state.running = state.restarting = False
            state.status = "exited" if container.started_before else "created"
            await rt.save(container)
            raise
        finally:
            rt.close_pending(pending)
        state.running, state.paused, state.restarting = True, False, False
        state.status = "running"
        state.pid = started.pid
        state.exit_code = 0
        state.error = ""
        state.oom_killed = False
        state.started_at = now_rfc3339(started.started)
        state.monitor = started.state
        container.started_before = True
        if not restarting:
            container.manually_stopped = False
        await rt.save(container)
        rt.running(container, watch)
        rt.volume_events(container, "mount")
        rt.event(container, "start")
    if plan.networks:
        await net.refresh_parents(container)
    return True


def _networked(spec: ContainerSpec, plan: Plan, cgroup_parent: str) -> ContainerSpec:
    """*spec* with what the network plan adds: link variables, the pause for interfaces, the
    daemon's cgroup parent."""
    process = spec.process
    if plan.env:
        process = dataclasses.replace(process, env=(*process.env, *plan.env))
    namespaces = spec.namespaces  # "default" may mean the host's network (--network-driver host)
    if plan.sandbox == "host":
        namespaces = tuple(n for n in namespaces if n != "net")
    return dataclasses.replace(
        spec, process=process, wait_for_network=bool(plan.networks), namespaces=namespaces,
        cgroup_parent=spec.cgroup_parent or cgroup_parent,
    )  # fmt: skip


async def start(job: Job[Any]) -> None:
    """Start a container; emit ``{"started": bool}`` (false: it was running already).

    An ``AutoRemove`` container that fails to start is removed with its anonymous volumes, as
    dockerd does: ``docker run --rm`` waits for the removal (``wait?condition=removed``).
    """
    rt = job.engine[RUNTIME]
    container = rt.get(job.args[0])
    try:
        started = await start_container(rt, container)
    except EngineError:
        if container.host_config.get("AutoRemove"):
            try:
                await rt.remove(container, force=True, volumes=True)
            except EngineError as exc:
                log.warning("could not remove %s after it failed to start: %s", container.id, exc)
        raise
    job.emit({"started": started})


@dataclass(frozen=True, slots=True)
class StopParams:
    t: int | None = field(default=None, metadata={"doc": "seconds before SIGKILL (default 10)"})
    signal: str = field(default="", metadata={"doc": "signal to stop with (default StopSignal)"})


def _stop_args(container: Container, p: StopParams) -> tuple[int, float]:
    signum = cc.signal_number(p.signal or container.config.get("StopSignal") or "SIGTERM")
    timeout = p.t if p.t is not None else container.config.get("StopTimeout")
    return signum, float(10 if timeout is None else timeout)


async def stop(job: Job[StopParams]) -> None:
    """Stop a container: its stop signal, then SIGKILL after ``t`` seconds."""
    rt = job.engine[RUNTIME]
    container = rt.get(job.args[0])
    signum, timeout = _stop_args(container, job.params)
    stopped = await rt.stop(container, signum, timeout)
    if stopped:
        rt.event(container, "stop")
    job.emit({"stopped": stopped})


async def restart(job: Job[StopParams]) -> None:
    """Stop (if running) and start a container."""
    rt = job.engine[RUNTIME]
    container = rt.get(job.args[0])
    signum, timeout = _stop_args(container, job.params)
    if await rt.stop(container, signum, timeout):
        rt.event(container, "stop")
    await start_container(rt, container)
    container.restart_count = 0
    rt.event(container, "restart")


@dataclass(frozen=True, slots=True)
class KillParams:
    signal: str = field(default="KILL", metadata={"doc": "signal name or number"})


async def kill(job: Job[KillParams]) -> None:
    """Send a signal to a running container."""
    rt = job.engine[RUNTIME]
    container = rt.get(job.args[0])
    signum = cc.signal_number(job.params.signal)
    stop_signal = cc.signal_number(str(container.config.get("StopSignal") or "TERM"))
    if signum in (signals.SIGKILL, stop_signal):
        container.manually_stopped = True
    await rt.kill(container, signum, stopping=signum == signals.SIGKILL)


@dataclass(frozen=True, slots=True)
class DeleteParams:
    force: bool = field(default=False, metadata={"doc": "kill a running container first"})
    v: bool = field(default=False, metadata={"doc": "remove its anonymous volumes too"})
    link: bool = field(default=False, metadata={"doc": "remove a link, not the container"})


async def container_delete(job: Job[DeleteParams]) -> None:
    """Remove a container (``docker rm``), or with ``link`` one of its links (``/web/db``)."""
    rt = job.engine[RUNTIME]
    if job.params.link:
        path = "/" + job.args[0].strip("/")
        if path.count("/") != 2:
            raise InvalidArgument(
                f"Conflict, cannot remove the default link name of the container: {path}"
            )
        parent = rt.get(path.split("/")[1])
        try:
            await asyncio.to_thread(rt.store.names.delete, f"/{parent.name}/{path.split('/')[2]}")
        except NotFound:
            raise NotFound(f"No such container: {path}") from None
        return
    container = rt.get(job.args[0])
    await rt.remove(container, force=job.params.force, volumes=job.params.v)


async def pause(job: Job[Any]) -> None:
    """Freeze every process of a running container."""
    rt = job.engine[RUNTIME]
    container = rt.get(job.args[0])
    async with rt.live[container.id].lock:
        state = container.state
        if not state.running or state.restarting:
            raise FailedPrecondition(f"Container {container.id} is not running")
        if state.paused:
            raise FailedPrecondition(f"Container {container.id} is already paused")
        await asyncio.to_thread(rt.execdriver.pause, state.monitor)
        state.paused, state.status = True, "paused"
        await rt.save(container)
        rt.event(container, "pause")


async def unpause(job: Job[Any]) -> None:
    """Thaw a paused container."""
    rt = job.engine[RUNTIME]
    container = rt.get(job.args[0])
    async with rt.live[container.id].lock:
        state = container.state
        if not state.paused:
            raise FailedPrecondition(f"Container {container.id} is not paused")
        await asyncio.to_thread(rt.execdriver.resume, state.monitor)
        state.paused, state.status = False, "running"
        await rt.save(container)
        rt.event(container, "unpause")


@dataclass(frozen=True, slots=True)
class WaitParams:
    condition: str = field(
        default="not-running", metadata={"doc": "not-running, next-exit or removed"}
    )


async def wait(job: Job[WaitParams]) -> None:
    """Wait for a container; emit ``{"StatusCode", "Error"}`` as Docker's wait."""
    condition = job.params.condition or "not-running"
    if condition not in ("not-running", "next-exit", "removed"):
        raise InvalidArgument(f"condition: invalid condition: {condition!r}")
    rt = job.engine[RUNTIME]
    container = rt.get(job.args[0])
    job.emit({"waiting": True})
    await rt.wait(container, condition)
    error = container.state.error
    job.emit({"StatusCode": container.state.exit_code,
              "Error": {"Message": error} if error else None})  # fmt: skip


async def rename(job: Job[Any]) -> None:
    """Rename a container (the name graph keeps its links)."""
    rt = job.engine[RUNTIME]
    container = rt.get(job.args[0])
    new = cc.check_name(job.args[1])
    if new == container.name:
        raise InvalidArgument("Renaming a container with the same name as its current name")
    await asyncio.to_thread(rt.store.rename, container.id, container.name, new)
    old, container.name = container.name, new
    await rt.save(container)
    rt.event(container, "rename", oldName=f"/{old}")


async def update(job: Job[CreateParams]) -> None:
    """Change the resources (and restart policy) of a container; emit ``{"Warnings"}``."""
    rt = job.engine[RUNTIME]
    container = rt.get(job.args[0])
    changes = cc.parse_update(job.params.body, container.host_config)
    async with rt.live[container.id].lock:
        if container.state.running:
            resources = cc.build_resources({**container.host_config, **changes})
            await asyncio.to_thread(rt.execdriver.update, container.state.monitor, resources)
        container.host_config.update(changes)
        await rt.save(container)
    rt.event(container, "update")
    job.emit({"Warnings": []})


def install(engine: Engine) -> None:
    """Register the lifecycle jobs."""
    one = ArgSpec(("container",))
    engine.register("create", create, params=CreateParams)
    engine.register("start", start, args=one)
    engine.register("stop", stop, params=StopParams, args=one)
    engine.register("restart", restart, params=StopParams, args=one)
    engine.register("kill", kill, params=KillParams, args=one)
    engine.register("container_delete", container_delete, params=DeleteParams, args=one)
    engine.register("pause", pause, args=one)
    engine.register("unpause", unpause, args=one)
    engine.register("wait", wait, params=WaitParams, args=one)
    engine.register("rename", rename, args=ArgSpec(("container", "name")))
    engine.register("update", update, params=CreateParams, args=one)
