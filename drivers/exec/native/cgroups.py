"""A container's control groups on cgroup v1 or v2 ("cgroupfs" driver: plain directory writes).

Vocabulary:

- *hierarchy*: where the cgroup file systems are mounted (``Hierarchy``). Version "2" when
  ``/sys/fs/cgroup`` is the unified ``cgroup2`` tree; otherwise version "1", one mount per
  controller (or per co-mounted set such as ``cpu,cpuacct``), read from ``/proc/self/mountinfo``.
- *controller*: ``memory``, ``cpu``, ``cpuacct``, ``cpuset``, ``pids``, ``freezer``, ``devices``,
  ``blkio`` on v1. On v2 there is one directory for all of them, keyed ``""``.
- *own cgroup*: the daemon's cgroup per controller (``/proc/self/cgroup``). A container's cgroup is
  ``<own>/<parent>/<id>`` (parent defaults to ``dockyard``); an absolute parent (``/x``) is taken
  from the hierarchy's root instead: ``<mount>/x/<id>``.
- *paths*: controller → absolute directory of the container's cgroup, JSON-serialisable. The daemon
  records it so that after a restart ``Cgroup.from_paths`` finds the cgroup of a running container.

Lifecycle: ``Cgroup.for_container(id, parent)`` → ``create(resources, rules)`` → ``add(pid)`` →
any of ``update``, ``freeze``/``thaw``, ``pids``, ``stats``, ``oom_killed`` → ``remove()`` once
the processes are gone (remove kills nothing). ``plan`` turns ``Resources`` into file writes
(pure, unit-tested). Device rules: v1 writes ``devices.deny``/``devices.allow`` in order; v2
attaches an eBPF program (``bpfdevices``) or raises NotSupported so the container is refused.

cgroup v2 and "no internal processes": a non-root cgroup whose ``cgroup.subtree_control`` enables
controllers cannot hold processes itself. Before enabling controllers in the daemon's own cgroup
(when it is not the root and holds processes) we move every process in it into the leaf
``<own>/daemon``, once; the daemon's processes stay there. ``Hierarchy.detect`` treats a cgroup
named ``daemon`` as that leaf and uses its parent as the own cgroup, so a restarted daemon (or the
forking helper) finds the same place. Controllers (cpu, cpuset, memory, pids, io, those the
hierarchy offers) are enabled in ``cgroup.subtree_control`` of every ancestor on the way down.

Everything is synchronous and starts no threads: it runs in the daemon's worker threads and in the
single-threaded forking helper.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from drivers.exec.native import bpfdevices
from drivers.exec.spec import DEFAULT_DEVICE_RULES, DeviceRule, Resources
from engine.errors import FailedPrecondition, InvalidArgument, NotFound, NotSupported, Unavailable

log = logging.getLogger(__name__)

DRIVER: Final = "cgroupfs"
ROOT: Final = "/sys/fs/cgroup"
DEFAULT_PARENT: Final = "dockyard"
DAEMON_LEAF: Final = "daemon"
V1_CONTROLLERS: Final = frozenset(
    ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"]
)
V2_CONTROLLERS: Final = ("cpu", "cpuset", "memory", "pids", "io")
MIN_MEMORY: Final = 6 << 20  # Docker's minimum memory limit (linuxMinMemory)
_REFUSED: Final = {errno.EINVAL, errno.ERANGE, errno.EBUSY, errno.EOVERFLOW, errno.EDOM}
_CPULIST: Final = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_OCTAL: Final = re.compile(r"\\([0-7]{3})")
_NS_PER_TICK: Final = 10**9 // os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Mountinfo:
    """One line of /proc/self/mountinfo, the parts we use."""

    root: str  # the path inside the file system that is mounted
    mountpoint: str
    fstype: str
    superopts: str


def parse_mountinfo(text: str) -> list[Mountinfo]:
    """Parse /proc/<pid>/mountinfo text (octal escapes such as ``\\040`` decoded)."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if sep and len(fields) >= 5 and len(tail) >= 3:
            root, mountpoint = (_OCTAL.sub(lambda m: chr(int(m[1], 8)), f) for f in fields[3:5])
            out.append(Mountinfo(root, mountpoint, tail[0], tail[2]))
    return out


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """Parse /proc/<pid>/cgroup: controller (``""`` for v2, ``name=x`` kept) → cgroup path."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                out[controller] = parts[2]
    return out


def _under(path: str, mount_root: str) -> str:
    """*path* (as /proc/self/cgroup shows it) relative to a mount of *mount_root*."""
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root) :]
    return path.strip("/")


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """Where the cgroup file systems are and where this process sits in them."""

    version: Literal["1", "2"]
    mounts: dict[str, str]  # controller ("" on v2) → mount point
    own: dict[str, str]  # controller → absolute directory of this process's cgroup

    @classmethod
    def detect(
        cls,
        root: str = ROOT,
        mountinfo: str = "/proc/self/mountinfo",
        proc_cgroup: str = "/proc/self/cgroup",
    ) -> Hierarchy:
        """Read the mounts under *root* and this process's cgroups; NotSupported if none."""
        root = os.path.normpath(root)
        with open(mountinfo) as f:
            mounts = parse_mountinfo(f.read())
        with open(proc_cgroup) as f:
            own = parse_proc_cgroup(f.read())
        for m in mounts:
            if m.mountpoint == root and m.fstype == "cgroup2":
                path = own.get("", "/")
                if os.path.basename(path) == DAEMON_LEAF:  # see the module doc
                    path = os.path.dirname(path)
                own_dir = os.path.normpath(os.path.join(root, _under(path, m.root)))
                return cls("2", {"": root}, {"": own_dir})
        dirs: dict[str, str] = {}
        own_dirs: dict[str, str] = {}
        for m in mounts:
            if m.fstype != "cgroup" or not m.mountpoint.startswith(root + "/"):
                continue
            for controller in m.superopts.split(","):
                if controller in V1_CONTROLLERS and controller not in dirs:
                    dirs[controller] = m.mountpoint
                    rel = _under(own.get(controller, "/"), m.root)
                    own_dirs[controller] = os.path.normpath(os.path.join(m.mountpoint, rel))
        if not dirs:
            raise NotSupported(f"no cgroup file system is mounted at or under {root}")
        return cls("1", dirs, own_dirs)


def version(root: str = ROOT) -> str:
    """The cgroup version of this host, "1" or "2", for ``info``."""
    return Hierarchy.detect(root).version


def features(root: str = ROOT) -> dict[str, bool]:
    """Which limits this host's cgroups can enforce, under Docker's ``info`` field names."""
    h = Hierarchy.detect(root)
    if h.version == "2":
        own = h.own[""]
        text = read(os.path.join(own, "cgroup.controllers")) or ""
        have = set(text.split())
        # The root cgroup has no memory.swap.max; below it, the file is there exactly when the
        # kernel accounts swap (it does unless booted with cgroup.memory=noswap).
        swap = own == os.path.normpath(root) or os.path.exists(os.path.join(own, "memory.swap.max"))
        return {
            "MemoryLimit": "memory" in have,
            "SwapLimit": "memory" in have and swap,
            "KernelMemoryTCP": False,  # HostConfig.KernelMemoryTCP is not applied
            "CpuCfsPeriod": "cpu" in have,
            "CpuCfsQuota": "cpu" in have,
            "CPUShares": "cpu" in have,
            "CPUSet": "cpuset" in have,
            "PidsLimit": "pids" in have,
            "OomKillDisable": False,
        }

    def has(controller: str, name: str) -> bool:
        mount = h.mounts.get(controller)
        return mount is not None and os.path.exists(os.path.join(mount, name))

    return {
        "MemoryLimit": "memory" in h.mounts,
        "SwapLimit": has("memory", "memory.memsw.limit_in_bytes"),
        "KernelMemoryTCP": False,  # HostConfig.KernelMemoryTCP is not applied
        "CpuCfsPeriod": has("cpu", "cpu.cfs_period_us"),
        "CpuCfsQuota": has("cpu", "cpu.cfs_quota_us"),
        "CPUShares": has("cpu", "cpu.shares"),
        "CPUSet": "cpuset" in h.mounts,
        "PidsLimit": "pids" in h.mounts,
        "OomKillDisable": has("memory", "memory.oom_control"),
    }


@dataclass(frozen=True, slots=True)
class Write:
    """One limit to write into the container's cgroup."""

    controller: str  # the prefix of the file's name
    file: str
    value: str
    field: str  # the Docker field, for error messages
    optional: bool = False  # skipped with a warning where the kernel lacks it (as Docker does)


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000), as runc converts it."""
    return 1 + ((shares - 2) * 9999) // 262142


def memsw_limit(memory: int, memory_swap: int, update: bool = False) -> int:
    """Docker's MemorySwap (memory+swap; -1 unlimited; 0 = twice Memory, or unchanged on update)."""
    if memory_swap == 0 and not update and memory > 0:
        return 2 * memory
    return memory_swap


def _validate(r: Resources) -> None:
    def bad(field: str, why: str) -> InvalidArgument:
        return InvalidArgument(f"Resources.{field}: {why}")

    if r.memory < 0 or 0 < r.memory < MIN_MEMORY:
        raise bad("Memory", f"{r.memory} is below the minimum of {MIN_MEMORY} bytes (6MB)")
    if r.memory_reservation < 0 or (r.memory and r.memory_reservation > r.memory):
        raise bad("MemoryReservation", "must be between 0 and Memory")
    if r.memory_swap < -1 or (r.memory_swap > 0 and r.memory_swap < r.memory):
        raise bad("MemorySwap", "must be -1 (unlimited) or at least Memory")
    if r.memory_swap > 0 and not r.memory:
        raise bad("MemorySwap", "set Memory as well when limiting memory+swap")
    if r.cpu_shares < 0:
        raise bad("CpuShares", "must not be negative")
    if r.cpu_period and not 1000 <= r.cpu_period <= 1000000:
        raise bad("CpuPeriod", "must be between 1000 and 1000000 microseconds")
    if r.cpu_quota < -1 or 0 < r.cpu_quota < 1000:
        raise bad("CpuQuota", "must be -1 or at least 1000 microseconds")
    for field, value in (("CpusetCpus", r.cpuset_cpus), ("CpusetMems", r.cpuset_mems)):
        if value and not _CPULIST.match(value):
            raise bad(field, f"{value!r} is not a list such as 0-3,6")
    if r.pids_limit < -1:
        raise bad("PidsLimit", "must be -1, 0 (unlimited) or positive")
    if r.blkio_weight and not 10 <= r.blkio_weight <= 1000:
        raise bad("BlkioWeight", "must be between 10 and 1000")


def plan(r: Resources, version: str, update: bool = False) -> list[Write]:
    """The writes applying *r* in order; zero fields are left alone. InvalidArgument if bad."""
    _validate(r)
    v2, out = version == "2", list[Write]()

    def add(when: object, v1_file: str, v2_file: str, value: object, field: str) -> None:
        if when:
            file = v2_file if v2 else v1_file  # named <controller>.<knob> on both versions
            optional = field in ("MemorySwap", "BlkioWeight")  # Docker drops them if unsupported
            out.append(Write(file.split(".")[0], file, str(value), f"Resources.{field}", optional))

    total = memsw_limit(r.memory, r.memory_swap, update)
    swap = ("max" if total == -1 else total - r.memory) if v2 and total else total  # v2: swap only
    clamped = min(max(r.cpu_shares, 2), 262144)  # the kernel's range, clamped as Docker does
    shares = shares_to_weight(clamped) if v2 else clamped
    quota = "max" if r.cpu_quota in (0, -1) else str(r.cpu_quota)
    cpu_max = f"{quota} {r.cpu_period}" if r.cpu_period else quota
    reserve, set_pids = r.memory_reservation, r.pids_limit > 0 or (update and r.pids_limit == -1)
    pids = "max" if r.pids_limit == -1 else r.pids_limit
    weight = 1 + (r.blkio_weight - 10) * 9999 // 990 if v2 else r.blkio_weight
    add(r.memory, "memory.limit_in_bytes", "memory.max", r.memory, "Memory")
    add(swap, "memory.memsw.limit_in_bytes", "memory.swap.max", swap, "MemorySwap")
    add(reserve, "memory.soft_limit_in_bytes", "memory.low", reserve, "MemoryReservation")
    add(r.cpu_shares, "cpu.shares", "cpu.weight", shares, "CpuShares")
    add(r.cpu_period and not v2, "cpu.cfs_period_us", "", r.cpu_period, "CpuPeriod")
    add(r.cpu_quota and not v2, "cpu.cfs_quota_us", "", r.cpu_quota, "CpuQuota")
    add(v2 and (r.cpu_quota or r.cpu_period), "", "cpu.max", cpu_max, "CpuQuota")
    add(r.cpuset_cpus, "cpuset.cpus", "cpuset.cpus", r.cpuset_cpus, "CpusetCpus")
    add(r.cpuset_mems, "cpuset.mems", "cpuset.mems", r.cpuset_mems, "CpusetMems")
    add(set_pids, "pids.max", "pids.max", pids, "PidsLimit")
    add(r.blkio_weight, "blkio.weight", "io.weight", weight, "BlkioWeight")
    return out


def write(path: str, value: str) -> None:
    """Write *value* to the cgroup file *path* in one write(2) (never creating it)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read(path: str) -> str | None:
    """The stripped contents of *path*, or None if it does not exist."""
    try:
        with open(path) as f:
            return f.read().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _pids_in(directory: str) -> list[int]:
    return [int(p) for p in (read(os.path.join(directory, "cgroup.procs")) or "").split()]


class Cgroup:
    """One container's cgroup: a directory per controller (one on v2)."""

    def __init__(
        self, version: str, dirs: Mapping[str, str], hierarchy: Hierarchy | None = None
    ) -> None:
        self.version = version
        self._dirs = dict(dirs)
        self._hierarchy = hierarchy

    @classmethod
    def for_container(
        cls, id: str, cgroup_parent: str = "", hierarchy: Hierarchy | None = None
    ) -> Cgroup:
        """The cgroup of container *id* under *cgroup_parent* (nothing is created yet)."""
        h = hierarchy or Hierarchy.detect()
        parent = cgroup_parent or DEFAULT_PARENT
        parts = [p for p in parent.split("/") if p]
        if not id or "/" in id or id in (".", ".."):
            raise InvalidArgument(f"id: {id!r} cannot name a cgroup")
        if {".", ".."} & set(parts):
            raise InvalidArgument(f"HostConfig.CgroupParent: {parent!r} has . or .. in it")
        base = h.mounts if parent.startswith("/") else h.own
        return cls(h.version, {c: os.path.join(d, *parts, id) for c, d in base.items()}, h)

    @classmethod
    def from_paths(cls, paths: Mapping[str, str], hierarchy: Hierarchy | None = None) -> Cgroup:
        """Re-open a cgroup from what ``paths()`` returned (after a daemon restart)."""
        return cls("2" if "" in paths else "1", paths, hierarchy)

    def paths(self) -> dict[str, str]:
        """Controller ("" on v2) → directory; JSON-serialisable, for ``from_paths``."""
        return dict(self._dirs)

    def _unique(self) -> list[str]:
        return sorted(set(self._dirs.values()))

    def create(
        self, resources: Resources, device_rules: Iterable[DeviceRule] = DEFAULT_DEVICE_RULES
    ) -> None:
        """Make the directories and apply limits and device rules; on failure undo and raise."""
        writes = plan(resources, self.version)
        rules = tuple(device_rules)
        bpfdevices.effective_rules(rules)  # validates the rules before anything is made
        try:
            if self.version == "2":
                self._make_v2()
            for controller, directory in self._dirs.items():
                if controller == "cpuset":
                    self._make_cpuset(directory)
                os.makedirs(directory, exist_ok=True)
            self._apply(writes)
            self._devices(rules)
        except BaseException as exc:
            try:
                self.remove()
            except Exception as cleanup:  # keep both: the cause comes first
                exc.add_note(f"cleanup failed too: {cleanup}")
            raise

    def _make_cpuset(self, leaf: str) -> None:
        """v1 cpuset: a new cgroup starts with empty cpus/mems and refuses tasks; copy them down."""
        chain, d = [], leaf
        while not (read(os.path.join(d, "cpuset.cpus")) and read(os.path.join(d, "cpuset.mems"))):
            chain.append(d)
            if os.path.dirname(d) == d:
                raise NotSupported(f"no populated cpuset cgroup above {leaf}")
            d = os.path.dirname(d)
        for d in reversed(chain):
            os.makedirs(d, exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not read(os.path.join(d, name)):
                    write(os.path.join(d, name), read(os.path.join(os.path.dirname(d), name)) or "")

    def _make_v2(self) -> None:
        """Create the v2 directory, enabling controllers in every ancestor (see module doc)."""
        leaf = self._dirs[""]
        root = next(a for a in _ancestors(leaf) if os.path.exists(f"{a}/cgroup.controllers"))
        own = (self._hierarchy or Hierarchy.detect(root)).own[""]
        d = root
        for part in os.path.relpath(leaf, root).split("/"):
            available = set((read(f"{d}/cgroup.controllers") or "").split())
            enabled = set((read(f"{d}/cgroup.subtree_control") or "").split())
            wanted = sorted(available & set(V2_CONTROLLERS) - enabled)
            if wanted and d != root and d == own and _pids_in(d):
                _move_processes(d, os.path.join(d, DAEMON_LEAF))
            for c in wanted:  # one by one: a controller that cannot be enabled fails alone
                try:
                    write(f"{d}/cgroup.subtree_control", f"+{c}")
                except OSError as exc:  # a limit that needs it raises NotSupported later
                    log.info("cannot enable cgroup controller %s in %s: %s", c, d, exc)
            d = os.path.join(d, part)
            os.makedirs(d, exist_ok=True)

    def _apply(self, writes: list[Write]) -> None:
        if self.version == "1":
            writes = self._memsw_order(writes)
        for w in writes:
            path = f"{self._dirs.get('' if self.version == '2' else w.controller)}/{w.file}"
            if not os.path.exists(path):
                if w.optional:
                    log.warning("%s discarded: %s not supported by this kernel", w.field, w.file)
                    continue
                raise NotSupported(f"{w.field}: cgroup file {path} does not exist")
            try:
                write(path, w.value)
            except OSError as exc:
                if exc.errno not in _REFUSED:
                    raise
                raise InvalidArgument(f"{w.field}: {w.value!r} refused: {exc.strerror}") from exc

    def _memsw_order(self, writes: list[Write]) -> list[Write]:
        """v1 needs memsw >= limit at every step: raise memsw first when growing (runc's order)."""
        files = [w.file for w in writes]
        if not {"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"} <= set(files):
            return writes
        i, j = files.index("memory.limit_in_bytes"), files.index("memory.memsw.limit_in_bytes")
        current = read(f"{self._dirs.get('memory')}/memory.limit_in_bytes") or "0"
        if writes[j].value == "-1" or int(current) < int(writes[j].value):
            writes = list(writes)
            writes[i], writes[j] = writes[j], writes[i]
        return writes

    def _devices(self, rules: tuple[DeviceRule, ...]) -> None:
        if self.version == "2":
            bpfdevices.attach(self._dirs[""], rules)
            return
        if "devices" not in self._dirs:
            if rules:
                raise NotSupported("cannot enforce the device allow-list: no devices controller")
            return
        for rule in rules:
            name = "devices.allow" if rule.allow else "devices.deny"
            try:
                write(os.path.join(self._dirs["devices"], name), _v1_rule(rule))
            except OSError as exc:  # e.g. allowing more than the parent cgroup allows
                raise InvalidArgument(f"DeviceRule {_v1_rule(rule)}: {exc.strerror}") from exc

    def add(self, pid: int) -> None:
        """Put process *pid* into every controller's cgroup; NotFound if it is gone."""
        for directory in self._unique():
            try:
                write(os.path.join(directory, "cgroup.procs"), str(pid))
            except ProcessLookupError as exc:
                raise NotFound(f"process {pid} does not exist") from exc

    def update(self, resources: Resources) -> None:
        """Change the limits of the live cgroup; zero fields stay as they are (docker update)."""
        self._apply(plan(resources, self.version, update=True))

    def freeze(self, timeout: float = 10.0) -> None:
        """Freeze every process in the cgroup and wait until it is frozen; Unavailable if not."""
        self._freezer(True, timeout)

    def thaw(self, timeout: float = 10.0) -> None:
        """Thaw the cgroup and wait until it runs again."""
        self._freezer(False, timeout)

    def _freezer(self, frozen: bool, timeout: float) -> None:
        if self.version == "2":
            path, value = f"{self._dirs['']}/cgroup.freeze", str(int(frozen))
            state, done = f"{self._dirs['']}/cgroup.events", f"frozen {int(frozen)}"
        elif "freezer" in self._dirs:
            path = state = f"{self._dirs['freezer']}/freezer.state"
            value = done = "FROZEN" if frozen else "THAWED"
        else:
            raise NotSupported("cannot pause: the freezer cgroup controller is not mounted")
        deadline, pause = time.monotonic() + timeout, 0.001
        while True:
            write(path, value)  # again each round: v1 can stall in FREEZING until asked again
            if done in (read(state) or "").splitlines():
                return
            if time.monotonic() > deadline:
                if frozen:
                    self.thaw(timeout)
                raise Unavailable(f"cgroup {path} did not reach {value} in {timeout}s")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def pids(self) -> list[int]:
        """Every pid in the cgroup and its sub-cgroups, sorted."""
        found: set[int] = set()
        for directory in self._unique():
            for sub, _, _ in os.walk(directory):
                found.update(_pids_in(sub))
        return sorted(found)

    def oom_killed(self) -> bool:
        """Whether the OOM killer has killed a process of this cgroup."""
        if self.version == "2":
            text = read(f"{self._dirs['']}/memory.events")
        else:
            text = read(f"{self._dirs.get('memory')}/memory.oom_control")
        return _kv(text).get("oom_kill", 0) > 0

    def stats(self) -> dict[str, object]:
        """The cgroup parts of Docker's container stats: memory, cpu, pids and blkio."""
        v2 = self.version == "2"
        memory, acct, cpu, pids, blkio = (self._dirs.get("" if v2 else c) for c in _STATS_DIRS)
        return {
            "memory_stats": _memory(memory, v2),
            "cpu_stats": _cpu(acct, cpu, v2),
            "pids_stats": _pids(pids),
            "blkio_stats": _blkio(blkio, v2),
        }

    def remove(self) -> None:
        """Remove the cgroup directories (and the v2 device program); missing ones are fine."""
        if self.version == "2" and os.path.isdir(self._dirs[""]):
            with contextlib.suppress(OSError):  # rmdir releases attachments anyway
                bpfdevices.detach_all(self._dirs[""])
        for directory in self._unique():
            for sub, _, _ in sorted(os.walk(directory), key=lambda t: -len(t[0])):
                _rmdir(sub)


def _v1_rule(rule: DeviceRule) -> str:
    if rule.type == "a":
        return "a"
    major, minor = ("*" if n < 0 else str(n) for n in (rule.major, rule.minor))
    return f"{rule.type} {major}:{minor} {rule.access}"


def _ancestors(path: str) -> list[str]:
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[:i]) for i in range(len(parts) + 1)]


def _move_processes(source: str, target: str) -> None:
    os.makedirs(target, exist_ok=True)
    for _ in range(3):  # processes forked meanwhile show up in the next read
        for pid in _pids_in(source):
            with contextlib.suppress(ProcessLookupError):
                write(os.path.join(target, "cgroup.procs"), str(pid))


def _kv(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


# Stats, in the shape of Docker's GET /containers/{id}/stats (moby api/types/container/stats.go).
# A missing directory (None) or file reads as absent, giving {} or zeros as Docker shows them.
_STATS_DIRS: Final = ("memory", "cpuacct", "cpu", "pids", "blkio")
_IO: Final = ("io_service_bytes", "io_serviced", "io_queue", "io_service_time", "io_wait_time")
_BLKIO_KEYS: Final = tuple(f"{k}_recursive" for k in (*_IO, "io_merged", "io_time", "sectors"))


def _num(path: str) -> int:
    text = read(path)
    return int(text) if text and text.lstrip("-").isdigit() else 0


def _memory(d: str | None, v2: bool) -> dict[str, object]:
    usage = read(f"{d}/memory.current" if v2 else f"{d}/memory.usage_in_bytes")
    if d is None or usage is None:
        return {}
    limit = read(f"{d}/memory.max" if v2 else f"{d}/memory.limit_in_bytes") or "max"
    with open("/proc/meminfo") as f:  # an unlimited cgroup reports the host's memory, as Docker
        host = int(f.readline().split()[1]) * 1024  # "MemTotal: <n> kB"
    out: dict[str, object] = {"usage": int(usage), "stats": _kv(read(f"{d}/memory.stat"))}
    out["limit"] = host if limit == "max" else min(int(limit), host)
    if not v2:
        out["max_usage"] = _num(f"{d}/memory.max_usage_in_bytes")
        out["failcnt"] = _num(f"{d}/memory.failcnt")
    return out


def _cpu(acct: str | None, cpu: str | None, v2: bool) -> dict[str, object]:
    stat = _kv(read(f"{cpu}/cpu.stat"))
    if v2:  # microseconds
        usage: dict[str, object] = {"total_usage": stat.get("usage_usec", 0) * 1000}
        usage["usage_in_kernelmode"] = stat.get("system_usec", 0) * 1000
        usage["usage_in_usermode"] = stat.get("user_usec", 0) * 1000
        throttled = stat.get("throttled_usec", 0) * 1000
    else:  # cpuacct: nanoseconds, and clock ticks in cpuacct.stat
        ticks, percpu = _kv(read(f"{acct}/cpuacct.stat")), read(f"{acct}/cpuacct.usage_percpu")
        usage = {"total_usage": _num(f"{acct}/cpuacct.usage")}
        usage["percpu_usage"] = [int(n) for n in (percpu or "").split()]
        usage["usage_in_kernelmode"] = ticks.get("system", 0) * _NS_PER_TICK
        usage["usage_in_usermode"] = ticks.get("user", 0) * _NS_PER_TICK
        throttled = stat.get("throttled_time", 0)
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    return {
        "cpu_usage": usage,
        "system_cpu_usage": sum(int(n) for n in lines[0].split()[1:8]) * _NS_PER_TICK,
        "online_cpus": sum(1 for line in lines if re.match(r"cpu\d", line)),
        "throttling_data": {
            "periods": stat.get("nr_periods", 0),
            "throttled_periods": stat.get("nr_throttled", 0),
            "throttled_time": throttled,
        },
    }


def _pids(d: str | None) -> dict[str, object]:
    current, limit = read(f"{d}/pids.current"), read(f"{d}/pids.max")
    if current is None:
        return {}
    return {"current": int(current), "limit": int(limit) if limit and limit != "max" else 0}


def _io_entry(device: str, op: str, value: str) -> dict[str, object]:
    major, _, minor = device.partition(":")
    return {"major": int(major), "minor": int(minor), "op": op, "value": int(value)}


def _blkio(d: str | None, v2: bool) -> dict[str, object]:
    """v1: the throttle files' "8:0 Read 4096" lines; v2: io.stat, bytes only (Docker leaves
    the other lists unset there)."""
    out: dict[str, object] = dict.fromkeys(_BLKIO_KEYS) if v2 else {k: [] for k in _BLKIO_KEYS}
    if v2:
        rows = [line.split() for line in (read(f"{d}/io.stat") or "").splitlines()]
        out[_BLKIO_KEYS[0]] = [
            _io_entry(row[0], op, dict(p.partition("=")[::2] for p in row[1:]).get(key, "0"))
            for row in rows
            for op, key in (("read", "rbytes"), ("write", "wbytes"))
        ]
        return out
    for key in _BLKIO_KEYS[:2]:
        rows = [line.split() for line in (read(f"{d}/blkio.throttle.{key}") or "").splitlines()]
        out[key] = [_io_entry(*row) for row in rows if len(row) == 3]
    return out


def _rmdir(directory: str, wait: float = 2.0) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.EBUSY and time.monotonic() < deadline:
                time.sleep(0.01)  # processes that were killed are still exiting
                continue
            raise FailedPrecondition(f"cannot remove cgroup {directory}: {exc.strerror}") from exc
