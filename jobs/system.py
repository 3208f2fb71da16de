"""System jobs: ``version`` and ``info``, in the Docker Engine API's shapes."""

from __future__ import annotations

import asyncio
import functools
import os
import platform
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from engine import VERSION, Engine, Job
from jobs.services import DAEMON, EXEC_DRIVER, GRAPH_DRIVER, IMAGES, RUNTIME

API_VERSION: Final = "1.45"
MIN_API_VERSION: Final = "1.24"
_ARCH: Final = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


@functools.cache
def host_facts() -> dict[str, object]:
    """Return the host's facts that do not change while the daemon runs."""
    os_name = "Linux"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "KernelVersion": platform.release(),
        "OperatingSystem": os_name,
        "OSType": "linux",
        "Architecture": platform.machine(),
        "NCPU": os.cpu_count() or 1,
        "MemTotal": mem,
    }


async def version(job: Job[Any]) -> None:
    """Emit the daemon's version record (Docker's ``/version`` shape)."""
    facts = host_facts()
    details = {
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
        "Arch": _ARCH.get(str(facts["Architecture"]), str(facts["Architecture"])),
        "KernelVersion": facts["KernelVersion"],
        "PythonVersion": platform.python_version(),
    }
    job.emit(
        {
            "Platform": {"Name": "dockyard"},
            "Components": [{"Name": "Engine", "Version": VERSION, "Details": details}],
            "Version": VERSION,
            **details,
        }
    )


async def info(job: Job[Any]) -> None:
    """Emit what the daemon runs with: host, storage driver, images, jobs, plugins, warnings."""
    daemon = job.engine[DAEMON]
    engine = job.engine
    driver = engine[GRAPH_DRIVER]
    status, images = await asyncio.gather(
        asyncio.to_thread(driver.status), asyncio.to_thread(engine[IMAGES].count)
    )
    job.emit(
        {
            "ID": daemon.engine_id,
            "Name": socket.gethostname(),
            "ServerVersion": VERSION,
            "Images": images,
            "Driver": driver.name,
            "DriverStatus": [list(pair) for pair in status],
            **_containers(engine),
            **host_facts(),
            "DockerRootDir": str(daemon.data_root),
            "ExecRoot": str(daemon.exec_root),
            "Debug": daemon.debug,
            "SystemTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "Hosts": list(daemon.hosts),
            "Jobs": {
                "Registered": len(engine.names()),
                "Running": len(engine.running()),
                "Finished": dict(sorted(engine.counts.items())),
            },
            "JobPlugins": {"Loaded": daemon.plugins, "Failed": daemon.plugin_failures},
            "UptimeSeconds": round(time.time() - daemon.started, 3),
            "Warnings": list(daemon.warnings),
        }
    )


def _containers(engine: Engine) -> dict[str, object]:
    """Container counts, the exec driver, cgroups and the network default for ``info``."""
    runtime, execdriver = engine[RUNTIME], engine[EXEC_DRIVER]
    every = list(runtime.containers.values())
    paused = sum(1 for c in every if c.state.paused)
    running = sum(1 for c in every if c.state.running) - paused
    facts = dict(execdriver.info())
    return {
        "Containers": len(every),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": len(every) - running - paused,
        "ExecutionDriver": execdriver.name,
        "CgroupDriver": facts.get("Cgroup Driver", ""),
        "CgroupVersion": facts.get("Cgroup Version", ""),
        "DefaultRuntime": execdriver.name,
        "Runtimes": {execdriver.name: {"path": "dockyard-native"}},
        "SecurityOptions": ["name=no-new-privileges"],
        "DefaultNetwork": "none (the bridge driver is not available yet: containers get "
        "--network none unless --network host is given)",
    }


def install(engine: Engine) -> None:
    """Register version and info."""
    engine.register("version", version)
    engine.register("info", info)
