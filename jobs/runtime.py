"""The container runtime: every container the daemon knows, and the moves between its states.

States (Docker's): ``created`` → ``running`` ⇄ ``paused``; ``running`` → ``exited`` (or
``restarting`` → ``running`` under a restart policy); ``removing`` → gone. Each container has
one lock; every transition happens under it, is saved to disk (``ContainerStore.save``) and
wakes the waiters (``changed``). A running container has a watcher task that awaits its exit
from the exec driver and applies it: state, unmount, restart policy (Docker's doubling back-off
from 100 ms, reset after 10 s of running), ``AutoRemove``.

The monitor owns the process, so the daemon can die at any time: at start ``restore`` reloads
every container and reconnects to the running ones; exits that happened meanwhile are applied
then, as if they had just happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drivers.exec.base import AttachRequest, ExecDriver, Watch
from drivers.exec.native.protocol import Connection
from drivers.exec.spec import Exit, held_capabilities
from drivers.graph import GraphDriver
from engine.errors import FailedPrecondition, InvalidArgument, NotFound
from graph.containers import Container, ContainerStore, not_found
from jobs.eventlog import EventLog

log = logging.getLogger("containers")

NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
BACKOFF_START = 0.1
BACKOFF_RESET_AFTER = 10.0
BACKOFF_MAX = 60.0


def now_rfc3339(t: float | None = None) -> str:
    """RFC 3339 UTC with nanosecond digits, as Docker writes times."""
    t = time.time() if t is None else t
    stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{int((t % 1) * 1e9):09d}Z"


@dataclass
class Live:
    """What the daemon holds for a container in memory only."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    watcher: asyncio.Task[None] | None = None
    pending: list[tuple[AttachRequest, asyncio.Future[None]]] = field(default_factory=list)
    stop_requested: bool = False
    restart_sleep: asyncio.Task[None] | None = None
    backoff: float = BACKOFF_START
    rootfs_held: bool = False
    removed: bool = False


class _PendingConnection(Connection):
    """The daemon's end of an attachment made before the start, with its entry in
    ``Live.pending``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        entry: tuple[AttachRequest, asyncio.Future[None]],
    ) -> None:
        super().__init__(reader, writer)
        self.entry = entry


class Runtime:
    """Containers in memory, their transitions and their watchers; see the module docstring."""

    def __init__(
        self,
        store: ContainerStore,
        graph: GraphDriver,
        execdriver: ExecDriver,
        exec_root: Path,
        events: EventLog | None = None,
    ) -> None:
        self.store, self.graph, self.execdriver = store, graph, execdriver
        self.exec_root = exec_root
        self.containers: dict[str, Container] = {}
        self.live: dict[str, Live] = {}
        self.broken: dict[str, str] = {}
        self.changed = asyncio.Condition()
        self.starter: Any = None  # set by jobs.containers: builds the spec and starts
        self.on_remove_volumes: Any = None  # set by the daemon: removes anonymous volumes
        self.network: Any = None  # set by the daemon: the network controller
        self.cgroup_parent = ""  # the daemon's --cgroup-parent
        self.held_caps = held_capabilities()  # read once: what --privileged can grant
        self.execs: dict[str, Any] = {}  # exec instances (jobs.execs)
        # The daemon's event log (``engine[EVENTS]``): the runtime logs exits itself, including
        # those ``restore`` finds before any job is installed.
        self.events = events if events is not None else EventLog()
        self._tasks: set[asyncio.Task[None]] = set()  # watchers and restarts, until they end

    # -- lookup --------------------------------------------------------------------------------

    def get(self, ref: str) -> Container:
        """Find a container by full id, name (with or without "/") or unique id prefix."""
        if ref in self.containers:
            return self.containers[ref]
        name = ref.removeprefix("/")
        if NAME.fullmatch(name) and self.store.name_taken(name):
            id = self.store.names.get(f"/{name}")
            if id in self.containers:
                return self.containers[id]
        if ref and all(c in "0123456789abcdef" for c in ref):
            found = [c for id, c in self.containers.items() if id.startswith(ref)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise InvalidArgument(f"multiple containers match the prefix {ref}")
        raise not_found(ref)

    def run_dir(self, id: str) -> Path:
        """The container's directory under the exec root."""
        return self.exec_root / "containers" / id

    def add(self, container: Container) -> None:
        """Track a new container."""
        self.containers[container.id] = container
        self.live[container.id] = Live()

    async def notify(self) -> None:
        """Wake everyone waiting on a state change."""
        async with self.changed:
            self.changed.notify_all()

    async def save(self, container: Container) -> None:
        """Persist the container and wake the waiters."""
        await asyncio.to_thread(self.store.save, container)
        await self.notify()

    # -- events --------------------------------------------------------------------------------

    def event(self, container: Container, action: str, **attributes: str) -> None:
        """Log a container event with dockerd's attributes: *attributes*, the container's
        labels, ``image`` (as the user named it) and ``name``."""
        labels = container.config.get("Labels") or {}
        image = str(container.config.get("Image") or container.image)
        attrs = {**attributes, **labels, "image": image, "name": container.name}
        self.events.emit("container", action, container.id, attrs)

    def volume_events(self, container: Container, action: str) -> None:
        """Log *action* (``create``, ``mount``, ``unmount``) for each volume the container
        uses, with dockerd's attributes."""
        for m in container.mounts:
            if m.get("Type") != "volume":
                continue
            attrs = {"driver": str(m.get("Driver") or "local")}
            if action in ("mount", "unmount"):
                attrs["container"] = container.id
            if action == "mount":
                attrs.update({"destination": str(m.get("Destination", "")),
                              "read/write": "true" if m.get("RW", True) else "false",
                              "propagation": str(m.get("Propagation") or "")})  # fmt: skip
            self.events.emit("volume", action, str(m.get("Name", "")), attrs)

    # -- running -------------------------------------------------------------------------------

    def hold_rootfs(self, container: Container) -> str:
        """Mount the container's root file system (once per run); return its path."""
        live = self.live[container.id]
        path = self.graph.get(container.id)
        if live.rootfs_held:
            self.graph.put(container.id)
        live.rootfs_held = True
        return str(path)

    def release_rootfs(self, container: Container) -> None:
        """Unmount the root file system held for the run."""
        live = self.live[container.id]
        if live.rootfs_held:
            live.rootfs_held = False
            with contextlib.suppress(Exception):
                self.graph.put(container.id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        # The loop holds tasks only weakly: a restart that has dropped ``live.restart_sleep`` and
        # waits on a future nothing else holds would be collected half-way (its coroutine closed
        # with GeneratorExit, its container's lock never released). Held here until done.
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def take_attachments(self, id: str) -> list[tuple[AttachRequest, asyncio.Future[None]]]:
        """The clients that attached before the start, handed to the starting run."""
        live = self.live[id]
        pending, live.pending = live.pending, []
        return pending

    def running(self, container: Container, watch: Watch) -> None:
        """Start the watcher of a run that has begun."""
        live = self.live[container.id]
        live.stop_requested = False
        live.watcher = self._spawn(self._watch(container, watch, time.monotonic()))

    async def _watch(self, container: Container, watch: Watch, began: float) -> None:
        try:
            exit_ = await watch.wait()
        except asyncio.CancelledError:
            return  # the daemon is shutting down; the monitor keeps the container
        await self.exited(container, exit_, time.monotonic() - began)

    async def exited(self, container: Container, exit_: Exit, ran: float) -> None:
        """Apply the end of a run: state, unmount, restart policy, auto-remove."""
        live = self.live.get(container.id)
        if live is None or live.removed:
            return
        async with live.lock:
            state = container.state
            state.running = state.paused = state.restarting = False
            state.pid = 0
            state.exit_code = exit_.code
            state.oom_killed = exit_.oom_killed
            state.error = exit_.error
            state.finished_at = now_rfc3339(exit_.finished or None)
            state.status = "exited"
            state.monitor = {}
            await asyncio.to_thread(self.release_rootfs, container)
            if self.network is not None:
                try:
                    await self.network.release(container)
                except Exception as exc:  # the exit is recorded whatever the network says
                    log.error("container %s: releasing its network: %s", container.short_id, exc)
            restart = self._should_restart(container, exit_, live)
            if restart:
                live.backoff = (
                    BACKOFF_START
                    if ran > BACKOFF_RESET_AFTER
                    else min(live.backoff * 2, BACKOFF_MAX)
                )
                state.status, state.restarting, state.running = "restarting", True, True
            await self.save(container)
        if exit_.oom_killed:
            self.event(container, "oom")
        self.event(container, "die", exitCode=str(exit_.code), execDuration=str(int(ran)))
        self.volume_events(container, "unmount")
        log.info("container %s exited with %d", container.short_id, exit_.code)
        if restart:
            live.restart_sleep = self._spawn(self._restart_later(container, live))
        elif container.host_config.get("AutoRemove"):
            with contextlib.suppress(Exception):
                await self.remove(container, force=True, volumes=True)

    def _should_restart(self, container: Container, exit_: Exit, live: Live) -> bool:
        if live.stop_requested or container.manually_stopped:
            return False
        policy = container.host_config.get("RestartPolicy") or {}
        name = policy.get("Name") or "no"
        if name in ("always", "unless-stopped"):
            return True
        if name == "on-failure" and exit_.code != 0:
            limit = int(policy.get("MaximumRetryCount") or 0)
            return limit == 0 or container.restart_count < limit
        return False

    async def _restart_later(self, container: Container, live: Live) -> None:
        try:
            await asyncio.sleep(live.backoff)
        except asyncio.CancelledError:
            return
        live.restart_sleep = None
        if live.removed or live.stop_requested:
            return
        container.restart_count += 1
        try:
            await self.starter(container, restarting=True)
        except Exception as exc:
            log.error("restart of %s failed: %s", container.short_id, exc)
            async with live.lock:
                container.state.restarting = container.state.running = False
                container.state.status = "exited"
                container.state.error = str(exc)
                await self.save(container)

    async def cancel_restart(self, container: Container) -> bool:
        """Stop a pending restart; return whether there was one."""
        live = self.live[container.id]
        live.stop_requested = True
        task, live.restart_sleep = live.restart_sleep, None
        if task is None:
            return False
        task.cancel()
        async with live.lock:
            state = container.state
            state.restarting = state.running = False
            state.status = "exited"
            await self.save(container)
        return True

    # -- waiting -------------------------------------------------------------------------------

    async def wait_for(self, predicate: Any, timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` is true; False on timeout."""
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(predicate), timeout)
            except TimeoutError:
                return False
        return True

    async def wait(self, container: Container, condition: str) -> Container:
        """Docker's wait: until not running, the next exit, or removal; returns the container."""
        live = self.live[container.id]
        if condition == "next-exit":
            finished = container.state.finished_at
            await self.wait_for(
                lambda: (
                    live.removed
                    or (container.state.finished_at != finished and not container.state.running)
                    or (container.state.finished_at != finished and container.state.restarting)
                )
            )
        elif condition == "removed":
            await self.wait_for(lambda: live.removed)
        else:
            await self.wait_for(lambda: live.removed or not container.state.running)
        return container

    # -- signals ---------------------------------------------------------------------------------

    async def kill(self, container: Container, signum: int, *, stopping: bool = False) -> None:
        """Send *signum* to the container's process (Docker's ``KillSig``)."""
        state = container.state
        if state.paused and not stopping:
            raise FailedPrecondition(
                f"Container {container.id} is paused. "
                "Unpause the container before stopping or killing"
            )
        if not state.running:
            raise FailedPrecondition(f"Container {container.id} is not running")
        if stopping:
            self.live[container.id].stop_requested = True
        if state.restarting:
            await self.cancel_restart(container)
            return
        await self.execdriver.kill(self.run_dir(container.id), signum)
        self.event(container, "kill", signal=str(signum))

    async def stop(self, container: Container, signum: int, timeout: float) -> bool:
        """Signal, wait *timeout* seconds (forever if negative), then SIGKILL; False if it was
        not running."""
        live = self.live[container.id]
        if not container.state.running:
            return False
        container.manually_stopped = True
        live.stop_requested = True
        if await self.cancel_restart(container):
            return True
        if container.state.paused:
            await asyncio.to_thread(self.execdriver.pause, container.state.monitor)
        with contextlib.suppress(NotFound):
            await self.kill(container, signum, stopping=True)
            if container.state.paused:
                await asyncio.to_thread(self.execdriver.resume, container.state.monitor)
        stopped = lambda: not container.state.running or live.removed  # noqa: E731
        if not await self.wait_for(stopped, None if timeout < 0 else timeout):
            with contextlib.suppress(NotFound, FailedPrecondition):
                await self.kill(container, 9, stopping=True)
            await self.wait_for(stopped)
        return True

    # -- removal ---------------------------------------------------------------------------------

    async def remove(self, container: Container, *, force: bool, volumes: bool) -> None:
        """Remove a container: its layers, directories, name and (with *volumes*) anonymous
        volumes."""
        live = self.live[container.id]
        if container.state.running and not container.state.restarting:
            if not force:
                raise FailedPrecondition(
                    f"You cannot remove a {container.state.status} container {container.id}. "
                    "Stop the container before attempting removal or force remove"
                )
            await self.stop(container, 9, -1)
        await self.cancel_restart(container)
        async with live.lock:
            if live.removed:
                return
            container.state.status = "removing"
            await asyncio.to_thread(self._remove_files, container)
            live.removed = True
            self.close_pending(self.take_attachments(container.id))  # their run never comes
            self.containers.pop(container.id, None)
            self.live.pop(container.id, None)
            self.event(container, "destroy")
            if volumes and self.on_remove_volumes is not None:
                for volume in await self.on_remove_volumes(container) or ():
                    self.events.emit("volume", "destroy", volume.name, {"driver": volume.driver})
        await self.notify()

    def _remove_files(self, container: Container) -> None:
        self.release_rootfs(container)
        for layer in (container.id, f"{container.id}-init"):
            if self.graph.exists(layer):
                self.graph.remove(layer)
        self.store.forget(container.id)
        run_dir = self.run_dir(container.id)
        for name in ("state.json", "monitor.sock"):
            with contextlib.suppress(FileNotFoundError):
                (run_dir / name).unlink()
        with contextlib.suppress(OSError):
            run_dir.rmdir()

    # -- attach ----------------------------------------------------------------------------------

    async def attach(self, container: Container, request: AttachRequest) -> Connection:
        """Attach to a container: at once if running, else from the first byte of its next
        run (*pending* until then). Returns the daemon's end of the stream; give it back with
        ``end_attach``. A pending attachment ends (EOF) if the container is removed first."""
        if container.state.running and not container.state.restarting:
            return await self.execdriver.attach(self.run_dir(container.id), request)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = AttachRequest(theirs.detach(), request.stdin, request.stdout, request.stderr,
                                request.stdin_once)  # fmt: skip
        entry = (pending, done)
        self.live[container.id].pending.append(entry)
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours)
        except BaseException:
            self._forget_pending(container.id, entry)
            ours.close()
            raise
        return _PendingConnection(reader, writer, entry)

    def end_attach(self, container: Container, conn: Connection) -> None:
        """Close an attachment; one still pending is unregistered, so no start inherits it."""
        if isinstance(conn, _PendingConnection):
            self._forget_pending(container.id, conn.entry)
        conn.close()

    def _forget_pending(self, id: str, entry: tuple[AttachRequest, asyncio.Future[None]]) -> None:
        live = self.live.get(id)
        if live is not None and entry in live.pending:  # else a start or removal took it
            live.pending.remove(entry)
            self.close_pending([entry])

    def close_pending(self, items: Iterable[tuple[AttachRequest, asyncio.Future[None]]]) -> None:
        """Close the fds of attachments handed to the helper (it has its own copies)."""
        for request, done in items:
            with contextlib.suppress(OSError):
                os.close(request.fd)
            if not done.done():
                done.set_result(None)

    # -- restore ---------------------------------------------------------------------------------

    async def restore(self) -> None:
        """Load every container; reconnect to running ones; apply exits that happened while
        the daemon was away; bring back ``always`` containers."""
        loaded, broken = await asyncio.to_thread(self.store.load)
        self.broken = dict(broken)
        for container in loaded:
            self.add(container)
        for container in loaded:
            state = container.state
            if state.running and not state.restarting:
                watch = await self.execdriver.watch(
                    self.run_dir(container.id), self.store.dir(container.id)
                )
                if getattr(watch, "conn", None) is not None:
                    await asyncio.to_thread(self.hold_rootfs, container)
                    self.running(container, watch)
                    if self.network is not None:
                        try:
                            await self.network.restore(container)
                        except Exception as exc:
                            log.error("container %s: restoring its network: %s",
                                      container.short_id, exc)  # fmt: skip
                    log.info("container %s is still running", container.short_id)
                    continue
                await self.exited(container, await watch.wait(), 0.0)
            elif state.restarting or self._comes_back(container):
                state.restarting = False
                state.running = False
                with contextlib.suppress(Exception):
                    await self.starter(container, restarting=True)

    def _comes_back(self, container: Container) -> bool:
        policy = (container.host_config.get("RestartPolicy") or {}).get("Name") or "no"
        if container.manually_stopped or not container.started_before:
            return False
        return policy in ("always", "unless-stopped")

    async def shutdown(self) -> None:
        """Stop watching; containers keep running under their monitors, and keep their root
        file systems mounted (an unmount would propagate into their mount namespaces)."""
        for live in self.live.values():
            for task in (live.watcher, live.restart_sleep):
                if task is not None:
                    task.cancel()
        for container in self.containers.values():
            live = self.live[container.id]
            if live.rootfs_held and container.state.running:
                self.graph.forget(container.id)
                live.rootfs_held = False
