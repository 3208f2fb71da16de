"""Exec drivers: how a container's processes are started, signalled, paused and watched.

Lifecycle, as the daemon uses a driver: ``setup`` once at daemon start → ``start`` a container
(returns ``Started`` and a ``Watch``; attach requests given to ``start`` see the output from
the first byte) → ``kill``/``pause``/``resume``/``resize``/``attach``/``exec`` while it runs →
``Watch.wait`` returns its ``Exit`` → ``shutdown`` at daemon exit, which leaves containers
running. After a daemon restart, ``watch(run_dir, bundle)`` finds a running container again (or
the exit it recorded while the daemon was away).

Glossary: ``run_dir`` and ``bundle`` as in ``drivers/exec/spec.py``; ``state`` is what the
driver recorded when the container started (pids, cgroup paths) and hands back for later calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from drivers.exec.spec import ContainerSpec, ExecSpec, Exit

ENV_VAR: Final = "DOCKER_EXECDRIVER"


@dataclass(frozen=True, slots=True)
class Started:
    """What a driver knows of a container it started."""

    pid: int
    monitor_pid: int
    started: float
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AttachRequest:
    """Which streams an attached client wants; ``fd`` is its end of a socket pair."""

    fd: int
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    stdin_once: bool = False


class Watch(Protocol):
    """Waits for one run of a container to end."""

    async def wait(self) -> Exit:
        """Return the exit of the run (after the monitor recorded it)."""
        ...


class ExecHandle(Protocol):
    """A process started by ``exec``."""

    pid: int

    async def wait(self) -> int:
        """Return the process's exit code."""
        ...


@runtime_checkable
class ExecDriver(Protocol):
    """Runs containers; see the module docstring for the lifecycle."""

    name: str

    async def setup(self) -> None:
        """Start whatever helpers the driver needs (once, at daemon start)."""
        ...

    async def shutdown(self) -> None:
        """Stop the helpers; running containers keep running."""
        ...

    async def start(
        self,
        spec: ContainerSpec,
        attach: list[AttachRequest],
        on_pid: Callable[[int], Awaitable[None]] | None = None,
    ) -> tuple[Started, Watch]:
        """Start a container; *on_pid* runs once its namespaces exist, before it execs."""
        ...

    async def watch(self, run_dir: Path, bundle: Path) -> Watch:
        """Find a container started before the daemon restarted."""
        ...

    async def kill(self, run_dir: Path, signal: int) -> None:
        """Send *signal* to the container's first process (NotFound when it is not running)."""
        ...

    async def attach(self, run_dir: Path, request: AttachRequest) -> Any:
        """Attach to a running container's stdio; return the connection carrying its frames."""
        ...

    async def resize(self, run_dir: Path, rows: int, cols: int) -> None:
        """Resize the container's terminal."""
        ...

    async def exec(self, spec: ExecSpec, stdio: tuple[int, int, int]) -> ExecHandle:
        """Start a process in a running container with *stdio* as its fds 0-2."""
        ...

    def pause(self, state: Mapping[str, Any]) -> None:
        """Freeze every process of the container."""
        ...

    def resume(self, state: Mapping[str, Any]) -> None:
        """Thaw the container."""
        ...

    def pids(self, state: Mapping[str, Any]) -> list[int]:
        """Every pid in the container, as the host sees them."""
        ...

    def stats(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """Resource usage in the shape of Docker's stats."""
        ...

    def update(self, state: Mapping[str, Any], resources: Any) -> None:
        """Change the limits of a running container."""
        ...

    def info(self) -> list[tuple[str, str]]:
        """Key/values for ``info``."""
        ...
