"""What the daemon hands an exec driver: a container's process, mounts, limits and security.

Everything here is plain data, built by the daemon from a container's Docker-shaped config
(``jobs/containerconfig.py``) and sent to the forking helper as JSON (``to_json``/``from_json``).
The driver applies it as given; it makes no policy decisions of its own.

Glossary:

- ``rootfs``: the host path of the container's mounted root file system (the graph driver's
  ``get`` of the container's read-write layer).
- ``bundle``: the container's directory under the data root (``containers/<id>``): config files,
  ``hostname``, ``hosts``, ``resolv.conf``, the json log, and ``exit.json`` written by the monitor.
- ``run_dir``: the container's directory under the exec root (``<exec-root>/containers/<id>``):
  the monitor's socket and pid file.
- ``Mount.destination`` is always an absolute path *inside* the container; it is resolved in the
  rootfs, never on the host.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson

NAMESPACES: Final = ("mnt", "uts", "ipc", "pid", "net")

# Docker's defaults (daemon/pkg/oci/defaults.go), the modern lists.
MASKED_PATHS: Final = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
)
READONLY_PATHS: Final = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# include/uapi/linux/capability.h: a capability's number is its index.
CAPABILITIES: Final = tuple(
    "CAP_" + name
    for name in [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ]
)
# include/uapi/asm-generic/resource.h: an rlimit's number is its index (``resource`` lacks some).
RLIMITS: Final = tuple(
    [
        "cpu",
        "fsize",
        "data",
        "stack",
        "core",
        "rss",
        "nproc",
        "nofile",
        "memlock",
        "as",
        "locks",
        "sigpending",
        "msgqueue",
        "nice",
        "rtprio",
        "rttime",
    ]
)
ULIMITS: Final = frozenset(RLIMITS) - {"as"}  # the names Docker's Ulimits accept


def held_capabilities(status: str | None = None) -> int:
    """The bounding set of this process (``CapBnd`` of ``/proc/self/status``, or of *status*):
    everything ``--privileged`` can grant."""
    if status is None:
        with open("/proc/self/status") as f:
            status = f.read()
    for line in status.splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    raise OSError("/proc/self/status has no CapBnd line")


# Docker's 14 default capabilities (daemon/pkg/oci/caps/defaults.go).
DEFAULT_CAPS: Final = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)


@dataclass(frozen=True, slots=True)
class Mount:
    """One mount inside the container, applied in order after the standard ones."""

    destination: str
    type: Literal["bind", "tmpfs"] = "bind"
    source: str = ""  # host path for a bind; ignored for tmpfs
    readonly: bool = False
    options: tuple[str, ...] = ()  # tmpfs data such as "size=65536k", "mode=1777"
    propagation: Literal["rprivate", "private", "rslave", "slave", "rshared", "shared"] = "rprivate"


@dataclass(frozen=True, slots=True)
class DeviceRule:
    """A device cgroup rule: ``type`` a (all), c or b; major/minor -1 means any; access rwm."""

    allow: bool
    type: Literal["a", "c", "b"] = "a"
    major: int = -1
    minor: int = -1
    access: str = "rwm"


# Docker's default rules (moby defaults.go) plus what runc always appends.
DEFAULT_DEVICE_RULES: Final = (
    DeviceRule(False, "a", -1, -1, "rwm"),
    DeviceRule(True, "c", -1, -1, "m"),
    DeviceRule(True, "b", -1, -1, "m"),
    DeviceRule(True, "c", 1, 3),  # null
    DeviceRule(True, "c", 1, 5),  # zero
    DeviceRule(True, "c", 1, 7),  # full
    DeviceRule(True, "c", 1, 8),  # random
    DeviceRule(True, "c", 1, 9),  # urandom
    DeviceRule(True, "c", 5, 0),  # tty
    DeviceRule(True, "c", 5, 1),  # console
    DeviceRule(True, "c", 5, 2),  # ptmx
    DeviceRule(True, "c", 136, -1),  # pts
    DeviceRule(False, "c", 10, 229),  # fuse
)
PRIVILEGED_DEVICE_RULES: Final = (DeviceRule(True, "a", -1, -1, "rwm"),)


@dataclass(frozen=True, slots=True)
class Device:
    """A host device node made inside the container's /dev (``--device``)."""

    path: str  # in the container
    type: Literal["c", "b"]
    major: int
    minor: int
    mode: int = 0o666
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True, slots=True)
class Resources:
    """cgroup limits; 0 (or "") means unlimited / unset. ``memory_swap`` -1 is unlimited swap."""

    memory: int = 0
    memory_reservation: int = 0
    memory_swap: int = 0
    cpu_shares: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    pids_limit: int = 0
    blkio_weight: int = 0


@dataclass(frozen=True, slots=True)
class Rlimit:
    name: str  # "nofile", "nproc", ...
    soft: int
    hard: int


@dataclass(frozen=True, slots=True)
class Process:
    """The process to run: the container's main process, or one started by ``exec``."""

    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = ""  # "", "uid", "uid:gid", "name", "name:group"; resolved in the rootfs
    tty: bool = False
    stdin: bool = False  # keep stdin open (docker -i)
    caps: tuple[str, ...] = DEFAULT_CAPS  # bounding, permitted and effective (for root)
    no_new_privileges: bool = False
    rlimits: tuple[Rlimit, ...] = ()
    console_size: tuple[int, int] = (0, 0)  # rows, columns; (0, 0) leaves the default


@dataclass(frozen=True, slots=True)
class LogConfig:
    """The json-file log the monitor writes. 0 means no rotation."""

    path: str
    max_size: int = 0
    max_file: int = 1


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    """Everything needed to start a container's main process."""

    id: str
    rootfs: str
    bundle: str
    run_dir: str
    process: Process
    hostname: str = ""
    domainname: str = ""
    namespaces: tuple[str, ...] = NAMESPACES  # those to create; others are the host's
    join: dict[str, str] = field(default_factory=dict)  # ns kind → /proc/<pid>/ns/<kind>
    mounts: tuple[Mount, ...] = ()
    devices: tuple[Device, ...] = ()
    device_rules: tuple[DeviceRule, ...] = DEFAULT_DEVICE_RULES
    masked_paths: tuple[str, ...] = MASKED_PATHS
    readonly_paths: tuple[str, ...] = READONLY_PATHS
    privileged: bool = False
    readonly_rootfs: bool = False
    shm_size: int = 64 << 20
    sysctls: dict[str, str] = field(default_factory=dict)
    cgroup_parent: str = ""  # relative to the daemon's own cgroup unless absolute
    resources: Resources = field(default_factory=Resources)
    init: bool = False  # run a reaper as PID 1 that forwards signals to the process
    log: LogConfig | None = None
    wait_for_network: bool = False  # pause after namespaces exist until the daemon says go


@dataclass(frozen=True, slots=True)
class ExecSpec:
    """A process started in a running container (``docker exec``)."""

    id: str  # the exec's own id
    container_id: str
    pid: int  # the container's PID 1, as the host sees it
    cgroup: dict[str, str]  # controller ("" for v2) → absolute cgroup directory to join
    process: Process
    privileged: bool = False


@dataclass(frozen=True, slots=True)
class Exit:
    """How a container's main process ended, as the monitor records it in ``exit.json``."""

    code: int  # 128 + signal number when killed by a signal
    oom_killed: bool = False
    finished: float = 0.0  # unix time
    error: str = ""  # set when the process never started


def to_json(value: object) -> bytes:
    """Serialize a spec dataclass."""
    return orjson.dumps(dataclasses.asdict(value))  # type: ignore[call-overload]


def from_json(cls: type[Any], data: bytes | dict[str, Any]) -> Any:
    """Rebuild a spec dataclass (and its nested ones) from ``to_json`` output."""
    raw = orjson.loads(data) if isinstance(data, bytes) else data
    return _build(cls, raw)


def _build(cls: type[Any], raw: dict[str, Any]) -> Any:
    import typing

    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        values[f.name] = _value(hints[f.name], raw[f.name])
    return cls(**values)


def _value(tp: Any, value: Any) -> Any:
    import types
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _value(inner[0], value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(args[0], v) for v in value)
        return tuple(_value(a, v) for a, v in zip(args, value, strict=True))
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return _build(tp, value)  # type: ignore[arg-type]
    return value
