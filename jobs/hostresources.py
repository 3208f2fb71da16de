"""HostConfig's Resources: cgroup limits, devices and ulimits, checked as dockerd checks them.

``parse_resources`` reads the Resources part of a create body's HostConfig into Docker's inspect
shape (Go's field order, defaults as dockerd fills them: ``MemorySwap`` twice ``Memory``, ``null``
for an unlimited ``PidsLimit`` or an unset ``MemorySwappiness``). ``check_resources`` holds the
rules between fields (moby's verifyPlatformContainerResources) for both create and ``update``;
``build_resources`` turns a stored HostConfig into the exec driver's ``Resources``. Fields the
engine cannot apply raise NotSupported when set, never pass silently.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from drivers.exec.spec import ULIMITS, Resources
from jobs.jsonfields import INT64_MAX, Fields, invalid, unsupported

MIN_MEMORY: Final = 6 * 1024 * 1024
MAX_CPUS: Final = 8192  # moby's bound on a cpuset list (CVE-2018-20699)
CFS_PERIOD: Final = 100_000  # µs; the period NanoCpus are expressed in
_NUMBER: Final = re.compile(r"[0-9]{1,9}")  # longer is beyond MAX_CPUS anyway
_DEVICE_RULE: Final = re.compile(r"([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})")
_UNSUPPORTED_LISTS: Final = (
    "BlkioWeightDevice",
    "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps",
)
_UNSUPPORTED_NUMBERS: Final = (
    "CpuRealtimePeriod",
    "CpuRealtimeRuntime",
    "KernelMemory",
    "KernelMemoryTCP",
    "CpuCount",
    "CpuPercent",
    "IOMaximumIOps",
    "IOMaximumBandwidth",
)


def online_cpus() -> int:
    """How many CPUs this process may run on (Go's runtime.NumCPU)."""
    return len(os.sched_getaffinity(0))


def _online(path: str, fallback: str) -> str:
    try:
        return Path(path).read_text().strip() or fallback
    except OSError:
        return fallback


def available_cpus() -> str:
    """The host's online CPUs as a cpuset list ("0-3")."""
    return _online("/sys/devices/system/cpu/online", f"0-{online_cpus() - 1}")


def available_mems() -> str:
    """The host's online memory nodes as a cpuset list ("0")."""
    return _online("/sys/devices/system/node/online", "0")


def parse_list(text: str) -> set[int] | None:
    """A cpuset list ("0-2,7") as a set, or None if malformed or beyond MAX_CPUS."""
    numbers: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.partition("-")
        if not _NUMBER.fullmatch(low) or (dash and not _NUMBER.fullmatch(high)):
            return None
        first, last = int(low), int(high) if dash else int(low)
        if first > last or last >= MAX_CPUS:
            return None
        numbers.update(range(first, last + 1))
    return numbers


def valid_device_mode(mode: str) -> bool:
    """Whether *mode* is a non-empty subset of ``rwm`` without repeats."""
    return bool(mode) and len(set(mode)) == len(mode) and set(mode) <= set("rwm")


def parse_resources(hc: Fields) -> dict[str, object]:
    """The Resources fields of *hc* in Docker's inspect shape, dockerd's defaults filled in."""
    r = read_resources(hc)
    memory, pids = _int(r, "Memory"), r["PidsLimit"]
    if memory > 0 and r["MemorySwap"] == 0:
        r["MemorySwap"] = min(2 * memory, INT64_MAX)  # dockerd's default: as much swap as memory
    r["PidsLimit"] = pids if isinstance(pids, int) and pids > 0 else None  # ≤ 0 is unlimited
    check_resources(r, hc.path, creating=True)
    return r


def read_resources(hc: Fields) -> dict[str, object]:
    """The Resources fields of *hc* as given, type-checked, in Go's order; NotSupported for the
    ones this engine cannot apply."""
    for key in (*_UNSUPPORTED_LISTS, "DeviceRequests"):
        if hc.objs(key):
            raise unsupported(hc.at(key), "not supported by this engine")
    for key in _UNSUPPORTED_NUMBERS:
        if hc.integer(key, high=2**64 - 1):
            raise unsupported(hc.at(key), "not supported by this engine")
    swappiness = hc.opt_integer("MemorySwappiness")
    if swappiness is not None and swappiness != -1:
        if not 0 <= swappiness <= 100:
            raise invalid(
                hc.at("MemorySwappiness"),
                f"Invalid value: {swappiness}, valid memory swappiness range is 0-100",
            )
        raise unsupported(hc.at("MemorySwappiness"), "not supported by this engine")
    cgroup_parent = hc.text("CgroupParent")
    if "\x00" in cgroup_parent or ".." in cgroup_parent.split("/"):
        raise invalid(hc.at("CgroupParent"), f"invalid cgroup parent '{cgroup_parent}'")
    return {
        "CpuShares": hc.integer("CpuShares"),
        "Memory": hc.integer("Memory"),
        "NanoCpus": hc.integer("NanoCpus"),
        "CgroupParent": cgroup_parent,
        "BlkioWeight": hc.integer("BlkioWeight"),
        **{key: hc.raw.get(key) for key in _UNSUPPORTED_LISTS},
        "CpuPeriod": hc.integer("CpuPeriod"),
        "CpuQuota": hc.integer("CpuQuota"),
        "CpuRealtimePeriod": 0,
        "CpuRealtimeRuntime": 0,
        "CpusetCpus": hc.text("CpusetCpus"),
        "CpusetMems": hc.text("CpusetMems"),
        "Devices": _devices(hc),
        "DeviceCgroupRules": _device_rules(hc),
        "DeviceRequests": hc.raw.get("DeviceRequests"),
        "MemoryReservation": hc.integer("MemoryReservation"),
        "MemorySwap": hc.integer("MemorySwap"),
        "MemorySwappiness": None,
        # Kept as given: the cgroup's own OOM handling is what the container gets.
        "OomKillDisable": hc.opt_flag("OomKillDisable"),
        "PidsLimit": hc.opt_integer("PidsLimit"),
        "Ulimits": _ulimits(hc),
        "CpuCount": 0,
        "CpuPercent": 0,
        "IOMaximumIOps": 0,
        "IOMaximumBandwidth": 0,
    }


def _devices(hc: Fields) -> list[dict[str, object]] | None:
    entries = hc.objs("Devices")
    if entries is None:
        return None
    for d in entries:
        host, inside = d.text("PathOnHost"), d.text("PathInContainer")
        mode = d.text("CgroupPermissions", "rwm") or "rwm"
        if not host.startswith("/"):
            raise invalid(d.at("PathOnHost"), f"invalid device path on host: '{host}'")
        if inside and not inside.startswith("/"):
            raise invalid(d.at("PathInContainer"), f"{inside} is not an absolute path")
        if not valid_device_mode(mode):
            raise invalid(d.at("CgroupPermissions"), f"invalid device mode: {mode}")
    return [dict(d.raw) for d in entries]


def _device_rules(hc: Fields) -> list[str] | None:
    rules = hc.texts("DeviceCgroupRules")
    for i, rule in enumerate(rules or []):
        match = _DEVICE_RULE.fullmatch(rule)
        if not match or not valid_device_mode(match[4]):
            raise invalid(
                f"{hc.at('DeviceCgroupRules')}[{i}]", f"invalid device cgroup format '{rule}'"
            )
    return rules


def _ulimits(hc: Fields) -> list[dict[str, object]] | None:
    entries = hc.objs("Ulimits")
    seen: set[str] = set()
    for u in entries or []:
        name = u.text("Name")
        soft, hard = u.integer("Soft", low=-1), u.integer("Hard", low=-1)
        if name not in ULIMITS:
            raise invalid(u.at("Name"), f"invalid ulimit type: {name}")
        if name in seen:
            raise invalid(u.at("Name"), f"ulimit {name} is given more than once")
        if hard != -1 and (soft == -1 or soft > hard):
            raise invalid(
                u.path,
                f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}",
            )
        seen.add(name)
    return None if entries is None else [dict(u.raw) for u in entries]


def _int(r: Mapping[str, object], key: str) -> int:
    value = r.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def check_resources(r: Mapping[str, object], path: str, *, creating: bool) -> None:
    """Raise InvalidArgument where Resources *r* break dockerd's rules between fields."""
    memory, swap, reservation = (
        _int(r, "Memory"),
        _int(r, "MemorySwap"),
        _int(r, "MemoryReservation"),
    )
    nano, period, quota = _int(r, "NanoCpus"), _int(r, "CpuPeriod"), _int(r, "CpuQuota")

    def at(key: str) -> str:
        return f"{path}.{key}" if path else key

    if memory != 0 and memory < MIN_MEMORY:
        raise invalid(at("Memory"), "Minimum memory limit allowed is 6MB")
    if swap < -1:
        raise invalid(at("MemorySwap"), f"invalid value {swap}: use -1 for unlimited swap")
    if memory > 0 and 0 < swap < memory:
        raise invalid(
            at("MemorySwap"),
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        )
    if creating and memory == 0 and swap > 0:
        raise invalid(
            at("MemorySwap"),
            "You should always set the Memory limit when using Memoryswap limit, see usage",
        )
    if reservation < 0 or 0 < reservation < MIN_MEMORY:
        raise invalid(at("MemoryReservation"), "Minimum memory reservation allowed is 6MB")
    if memory > 0 and reservation > 0 and memory < reservation:
        raise invalid(
            at("Memory"),
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        )
    if nano > 0 and period > 0:
        raise invalid(
            at("NanoCpus"), "Conflicting options: Nano CPUs and CPU Period cannot both be set"
        )
    if nano > 0 and quota > 0:
        raise invalid(
            at("NanoCpus"), "Conflicting options: Nano CPUs and CPU Quota cannot both be set"
        )
    cpus = online_cpus()
    if nano < 0 or nano > cpus * 1_000_000_000:
        raise invalid(
            at("NanoCpus"),
            f"Range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available",
        )
    if _int(r, "CpuShares") < 0:
        raise invalid(
            at("CpuShares"),
            f"invalid CPU shares ({_int(r, 'CpuShares')}): value must be a positive integer",
        )
    if period != 0 and not 1000 <= period <= 1_000_000:
        raise invalid(
            at("CpuPeriod"),
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        )
    if 0 < quota < 1000:
        raise invalid(at("CpuQuota"), "CPU cfs quota can not be less than 1ms (i.e. 1000)")
    weight = _int(r, "BlkioWeight")
    if weight != 0 and not 10 <= weight <= 1000:
        raise invalid(at("BlkioWeight"), "Range of blkio weight is from 10 to 1000")
    _check_set(r, at("CpusetCpus"), "CpusetCpus", "cpuset cpus", "CPUs", available_cpus)
    _check_set(r, at("CpusetMems"), "CpusetMems", "cpuset mems", "memory nodes", available_mems)


def _check_set(
    r: Mapping[str, object],
    path: str,
    key: str,
    what: str,
    plural: str,
    available: Callable[[], str],
) -> None:
    text = r.get(key)
    if not isinstance(text, str) or not text:
        return
    wanted = parse_list(text)
    if wanted is None:
        raise invalid(path, f"Invalid value {text} for {what}")
    have = available()
    if not wanted <= (parse_list(have) or set()):
        raise invalid(
            path, f"Requested {plural} are not available - requested {text}, available: {have}"
        )


def build_resources(host_config: Mapping[str, object]) -> Resources:
    """The exec driver's Resources for a stored HostConfig (NanoCpus become a CFS quota)."""
    nano, quota, period = (_int(host_config, k) for k in ("NanoCpus", "CpuQuota", "CpuPeriod"))
    if nano > 0:
        period, quota = CFS_PERIOD, nano * CFS_PERIOD // 1_000_000_000
    cpus, mems = host_config.get("CpusetCpus"), host_config.get("CpusetMems")
    return Resources(
        memory=_int(host_config, "Memory"),
        memory_reservation=_int(host_config, "MemoryReservation"),
        memory_swap=_int(host_config, "MemorySwap"),
        cpu_shares=_int(host_config, "CpuShares"),
        cpu_period=period,
        cpu_quota=max(quota, 0),  # a negative quota is Docker's "unlimited"
        cpuset_cpus=cpus if isinstance(cpus, str) else "",
        cpuset_mems=mems if isinstance(mems, str) else "",
        pids_limit=max(_int(host_config, "PidsLimit"), 0),
        blkio_weight=_int(host_config, "BlkioWeight"),
    )
