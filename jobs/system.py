"""System jobs: ``version`` and ``info``, in the Docker Engine API's shapes."""

from __future__ import annotations

import asyncio
import functools
import os
import platform
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from engine import VERSION, Engine, Job
from engine.errors import Unavailable
from jobs.services import (
    DAEMON,
    EVENTS,
    EXEC_DRIVER,
    GRAPH_DRIVER,
    IMAGES,
    NETWORK,
    REGISTRY,
    RUNTIME,
)
from registry.endpoint import RegistryConfig

API_VERSION: Final = "1.45"
MIN_API_VERSION: Final = "1.24"
# What the cgroups can enforce, as the exec driver reports it (``"true"``/``"false"``).
CGROUP_FEATURES: Final = (
    "MemoryLimit", "SwapLimit", "KernelMemoryTCP", "CpuCfsPeriod", "CpuCfsQuota", "CPUShares",
    "CPUSet", "PidsLimit", "OomKillDisable",
)  # fmt: skip
_ARCH: Final = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


@functools.cache
def host_facts() -> dict[str, object]:
    """Return the host's facts that do not change while the daemon runs."""
    os_name = _os_release("PRETTY_NAME") or "Linux"
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
            "GitCommit": "",
            "GoVersion": "",
            "BuildTime": "",
            "Experimental": False,
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
            **_docker_fields(engine),
            "UptimeSeconds": round(time.time() - daemon.started, 3),
            "Warnings": list(daemon.warnings),
        }
    )


def _docker_fields(engine: Engine) -> dict[str, object]:
    """The rest of Docker's ``/info`` fields, true of dockyard: no swarm, no registry mirrors, no
    proxies or authorization plugins; what is not there is said empty rather than left out."""
    return {
        "Plugins": {
            "Volume": ["local"],
            "Network": ["bridge", "host", "null"],
            "Authorization": None,
            "Log": ["json-file"],
        },
        "IPv4Forwarding": _sysctl("net/ipv4/ip_forward"),
        "BridgeNfIptables": _sysctl("net/bridge/bridge-nf-call-iptables"),
        "BridgeNfIp6tables": _sysctl("net/bridge/bridge-nf-call-ip6tables"),
        "NFd": len(os.listdir("/proc/self/fd")),
        "NGoroutines": threading.active_count(),
        "LoggingDriver": "json-file",
        "NEventsListener": engine[EVENTS].readers,
        "OSVersion": _os_release("VERSION_ID"),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": _registry_config(engine),
        "GenericResources": None,
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Labels": [],
        "ExperimentalBuild": False,
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": False,
            "Error": "",
            "RemoteManagers": None,
        },
        "LiveRestoreEnabled": True,  # containers outlive the daemon and are re-attached
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "CDISpecDirs": [],
    }


def _registry_config(engine: Engine) -> dict[str, object]:
    try:
        return engine[REGISTRY].config.to_info()
    except Unavailable:  # an engine without the registry service (a tool, a test)
        return RegistryConfig().to_info()


def _sysctl(name: str) -> bool:
    try:
        return Path("/proc/sys", name).read_text().strip() == "1"
    except OSError:
        return False


@functools.cache
def _os_release(key: str) -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith(key + "="):
                return line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return ""


def _containers(engine: Engine) -> dict[str, object]:
    """Container counts, the exec driver, cgroups and the network default for ``info``."""
    runtime, execdriver = engine[RUNTIME], engine[EXEC_DRIVER]
    every = list(runtime.containers.values())
    paused = sum(1 for c in every if c.state.paused)
    running = sum(1 for c in every if c.state.running) - paused
    facts = dict(execdriver.info())
    limits = {k: facts.get(k) == "true" for k in CGROUP_FEATURES}
    return {
        **limits,
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
        **_network_facts(engine),
    }


def _network_facts(engine: Engine) -> dict[str, Any]:
    """The default network and, for the bridge, what it runs on."""
    try:
        net = engine[NETWORK]
    except Unavailable:  # an engine without networks (a tool, a test)
        return {"DefaultNetwork": "none"}
    facts: dict[str, Any] = {"DefaultNetwork": net.default}
    bridge = net.records().get("bridge")
    if bridge is not None and net.default == "bridge":
        facts["DefaultBridge"] = {"Name": bridge.bridge, "Subnet": bridge.subnet,
                                  "Gateway": bridge.gateway}  # fmt: skip
    return facts


def install(engine: Engine) -> None:
    """Register version and info."""
    engine.register("version", version)
    engine.register("info", info)
