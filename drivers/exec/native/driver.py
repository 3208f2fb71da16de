"""The native exec driver, daemon side: talks to the forking helper and to the monitors.

``setup`` replaces any helper a previous daemon left (asks it to quit) and starts a new one in
its own session. ``start`` sends the spec and the attached sockets to the helper; the monitor it
forks answers on the same connection (``{"pid"}``, ``{"started"}``) and later ``{"exit"}``, so
that connection is the ``Watch``. After a daemon restart ``watch`` connects to the monitor's
socket instead, or reads ``exit.json`` if the monitor has already gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from drivers.exec.base import AttachRequest, Started
from drivers.exec.native import cgroups, protocol
from drivers.exec.native.protocol import Connection, ProtocolError
from drivers.exec.spec import ContainerSpec, ExecSpec, Exit, Resources, to_json
from engine.errors import EngineError, FailedPrecondition, NotFound, Unavailable

log = logging.getLogger("execdriver")

FOUND_DEAD = 255  # exit code of a container whose monitor vanished without recording an exit


class StartFailed(FailedPrecondition):
    """The container's process could not be started (bad command, mount, user...);
    ``exit_code`` is the status Docker records for it (127, 126 or 128)."""

    def __init__(self, message: str, exit_code: int = 128) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class MonitorWatch:
    """Waits on a monitor connection for ``{"exit"}``; falls back to ``exit.json``."""

    conn: Connection | None
    bundle: Path

    async def wait(self) -> Exit:
        """Return the exit of the run."""
        if self.conn is not None:
            try:
                message = await self.conn.recv_control()
                if "exit" in message:
                    return _exit(message["exit"])
            except (ProtocolError, OSError):
                pass
            finally:
                self.conn.close()
        return await asyncio.to_thread(read_exit, self.bundle)


@dataclass
class NativeExec:
    """A process started by exec; its exit arrives on the helper connection."""

    pid: int
    conn: Connection

    async def wait(self) -> int:
        """Return the process's exit code (-1 if the connection broke)."""
        try:
            message = await self.conn.recv_control()
            return int(message["exit"]["code"]) if "exit" in message else -1
        except (ProtocolError, OSError, KeyError):
            return -1
        finally:
            self.conn.close()


def read_exit(bundle: Path) -> Exit:
    """The exit the monitor recorded, or FOUND_DEAD if there is none."""
    try:
        return _exit(orjson.loads((bundle / "exit.json").read_bytes()))
    except (FileNotFoundError, orjson.JSONDecodeError):
        return Exit(
            code=FOUND_DEAD, error="the container's monitor ended without recording an exit"
        )


def _exit(raw: Mapping[str, Any]) -> Exit:
    return Exit(
        code=int(raw.get("code", FOUND_DEAD)),
        oom_killed=bool(raw.get("oom_killed")),
        finished=float(raw.get("finished", 0.0)),
        error=str(raw.get("error", "")),
    )


class NativeDriver:
    """Namespaces, cgroups and a monitor per container, forked by one helper."""

    name = "native"

    def __init__(self, exec_root: Path) -> None:
        self.exec_root = exec_root
        self.socket = exec_root / "helper.sock"
        self._helper: subprocess.Popen[bytes] | None = None

    async def setup(self) -> None:
        """Replace a leftover helper, start ours and wait until it serves."""
        if self.socket.exists():
            with contextlib.suppress(OSError, ProtocolError):
                conn = await Connection.open(str(self.socket))
                await conn.request({"op": "quit"})
                await asyncio.wait_for(conn.recv_control(), 5)
                conn.close()
        root = Path(__file__).resolve().parents[3]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        }
        self._helper = subprocess.Popen(
            [sys.executable, "-m", "drivers.exec.native.helper", str(self.socket)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
            cwd="/",
            env=env,
        )
        assert self._helper.stdout is not None
        line = await asyncio.to_thread(self._helper.stdout.readline)
        if line.strip() != b"ready":
            raise Unavailable(f"the exec helper did not start (exit {self._helper.poll()})")
        self._helper.stdout.close()

    async def shutdown(self) -> None:
        """Ask the helper to quit; containers and their monitors keep running."""
        if self._helper is None:
            return
        with contextlib.suppress(OSError, ProtocolError, asyncio.TimeoutError):
            conn = await Connection.open(str(self.socket))
            await conn.request({"op": "quit"})
            await asyncio.wait_for(conn.recv_control(), 5)
            conn.close()
        try:
            await asyncio.wait_for(asyncio.to_thread(self._helper.wait), 5)
        except TimeoutError:
            self._helper.kill()
            await asyncio.to_thread(self._helper.wait)
        self._helper = None

    async def _helper_conn(self) -> Connection:
        try:
            return await Connection.open(str(self.socket))
        except OSError as exc:
            raise Unavailable(f"exec helper: {exc}") from None

    async def start(
        self,
        spec: ContainerSpec,
        attach: list[AttachRequest],
        on_pid: Callable[[int], Awaitable[None]] | None = None,
    ) -> tuple[Started, MonitorWatch]:
        """Start a container through the helper; see ``ExecDriver.start``."""
        conn = await self._helper_conn()
        try:
            options = [
                {"stdin": a.stdin, "stdout": a.stdout, "stderr": a.stderr,
                 "stdin_once": a.stdin_once}
                for a in attach
            ]  # fmt: skip
            await conn.request(
                {"op": "start", "spec": orjson.loads(to_json(spec)), "attach": options},
                [a.fd for a in attach],
            )
            message = await conn.recv_control()
            if "pid" in message:
                if spec.wait_for_network:
                    try:
                        if on_pid is not None:
                            await on_pid(int(message["pid"]))
                    except BaseException as exc:
                        await conn.send(protocol.CONTROL, orjson.dumps({"error": str(exc)}))
                        raise
                    await conn.send(protocol.CONTROL, orjson.dumps({"go": True}))
                message = await conn.recv_control()
            if "error" in message:
                raise StartFailed(str(message["error"]), int(message.get("code", 128)))
            state = message["started"]
        except BaseException:
            conn.close()
            raise
        started = Started(
            pid=int(state["pid"]),
            monitor_pid=int(state["monitor_pid"]),
            started=float(state["started"]),
            state=state,
        )
        return started, MonitorWatch(conn, Path(spec.bundle))

    async def watch(self, run_dir: Path, bundle: Path) -> MonitorWatch:
        """Reconnect to a container's monitor; a gone monitor means read ``exit.json``."""
        try:
            conn = await Connection.open(str(run_dir / "monitor.sock"))
        except OSError:
            return MonitorWatch(None, bundle)
        try:
            await conn.request({"op": "watch"})
            reply = await conn.recv_control()
        except (ProtocolError, OSError):
            conn.close()
            return MonitorWatch(None, bundle)
        if not reply.get("ok"):
            conn.close()
            return MonitorWatch(None, bundle)
        return MonitorWatch(conn, bundle)

    async def _monitor(
        self, run_dir: Path, request: dict[str, Any], fds: list[int] | None = None
    ) -> Connection:
        try:
            conn = await Connection.open(str(run_dir / "monitor.sock"))
        except OSError:
            raise NotFound("the container is not running") from None
        try:
            await conn.request(request, fds)
            reply = await conn.recv_control()
        except (ProtocolError, OSError):
            conn.close()
            raise NotFound("the container is not running") from None
        if "error" in reply:
            conn.close()
            raise EngineError(str(reply["error"]))
        return conn

    async def kill(self, run_dir: Path, signal: int) -> None:
        """Signal the container's first process through its monitor."""
        (await self._monitor(run_dir, {"op": "kill", "signal": signal})).close()

    async def resize(self, run_dir: Path, rows: int, cols: int) -> None:
        """Resize the container's terminal."""
        (await self._monitor(run_dir, {"op": "resize", "rows": rows, "cols": cols})).close()

    async def attach(self, run_dir: Path, request: AttachRequest) -> Connection:
        """Attach to a running container: the returned connection carries the frames."""
        return await self._monitor(
            run_dir,
            {"op": "attach", "stdin": request.stdin, "stdout": request.stdout,
             "stderr": request.stderr, "stdin_once": request.stdin_once},
        )  # fmt: skip

    async def exec(self, spec: ExecSpec, stdio: tuple[int, int, int]) -> NativeExec:
        """Start a process in a running container."""
        conn = await self._helper_conn()
        try:
            await conn.request({"op": "exec", "spec": orjson.loads(to_json(spec))}, list(stdio))
            message = await conn.recv_control()
        except BaseException:
            conn.close()
            raise
        if "error" in message:
            conn.close()
            raise StartFailed(str(message["error"]), int(message.get("code", 128)))
        return NativeExec(int(message["pid"]), conn)

    def _cgroup(self, state: Mapping[str, Any]) -> cgroups.Cgroup:
        return cgroups.Cgroup.from_paths(state.get("cgroup") or {})

    def pause(self, state: Mapping[str, Any]) -> None:
        """Freeze the container's cgroup."""
        self._cgroup(state).freeze()

    def resume(self, state: Mapping[str, Any]) -> None:
        """Thaw the container's cgroup."""
        self._cgroup(state).thaw()

    def pids(self, state: Mapping[str, Any]) -> list[int]:
        """Every pid in the container's cgroup."""
        return list(self._cgroup(state).pids())

    def stats(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The cgroup's usage in Docker's stats shape."""
        return dict(self._cgroup(state).stats())

    def update(self, state: Mapping[str, Any], resources: Resources) -> None:
        """Change the limits of the container's cgroup."""
        self._cgroup(state).update(resources)

    def info(self) -> list[tuple[str, str]]:
        """Key/values for ``info``."""
        facts = [("Cgroup Driver", cgroups.DRIVER), ("Cgroup Version", cgroups.version())]
        facts += [(k, "true" if v else "false") for k, v in cgroups.features().items()]
        return facts
