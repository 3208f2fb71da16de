"""A create body's HostConfig: validated, and filled in as dockerd shows it in inspect.

``parse_host_config`` returns Docker's HostConfig with every field inspect shows, in Go's field
order, ``omitempty`` fields (Annotations, StorageOpt, Tmpfs, Sysctls, Mounts, Init) only when
set. Values are kept as given except where dockerd fills a default at create: LogConfig.Type
``json-file``, RestartPolicy ``no``, IpcMode ``private``, CgroupnsMode ``host`` (no cgroup
namespaces here), ShmSize 64 MiB, Runtime ``runc``, the default MaskedPaths/ReadonlyPaths, and
the Resources defaults of ``jobs.hostresources``. A field the engine cannot honour raises
NotSupported when set to anything but its default; nothing is ignored silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from drivers.exec.spec import MASKED_PATHS, READONLY_PATHS
from jobs import capabilities
from jobs.containermounts import explicit_mounts, parse_volumes_from
from jobs.hostoptions import (
    check_sysctls,
    dns_settings,
    extra_hosts,
    log_config,
    restart_policy,
    security_options,
)
from jobs.hostresources import check_resources, parse_resources, read_resources
from jobs.jsonfields import Fields, check_integer, invalid, unsupported
from jobs.links import parse_link
from jobs.portbindings import parse_port_bindings

DEFAULT_SHM: Final = 64 << 20


def _network_mode(hc: Fields) -> str:
    """NetworkMode as stored: ``default`` when blank (the daemon's default network), ``bridge``,
    ``host``, ``none``, ``container:<name|id>`` or a user-defined network's name or id (which
    ``create`` looks up)."""
    mode = hc.text("NetworkMode")
    if mode.startswith("container:") and not mode.removeprefix("container:"):
        raise invalid(hc.at("NetworkMode"), "invalid container format container:<name|id>")
    return mode or "default"


def _mode(hc: Fields, key: str, accepted: Sequence[str], later: Sequence[str] = ()) -> str:
    value = hc.text(key)
    if value in accepted:
        return value
    if value in later or value.startswith("container:"):
        raise unsupported(hc.at(key), f"{key} {value} is not supported yet")
    raise invalid(hc.at(key), f"invalid {key}: {value}")


def _refuse(hc: Fields) -> None:
    """NotSupported for the fields this engine has no way to honour, when set."""
    checks = {
        "GroupAdd": bool(hc.texts("GroupAdd")),
        "Annotations": bool(hc.text_map("Annotations")),
        "StorageOpt": bool(hc.text_map("StorageOpt")),
        "Cgroup": bool(hc.text("Cgroup")),
        "VolumeDriver": hc.text("VolumeDriver") not in ("", "local"),
        "Runtime": hc.text("Runtime") not in ("", "runc", "native"),
        "OomScoreAdj": bool(hc.integer("OomScoreAdj")),
    }
    score = hc.integer("OomScoreAdj")
    if not -1000 <= score <= 1000:
        raise invalid(
            hc.at("OomScoreAdj"), f"Invalid value {score}, range for oom score adj is [-1000, 1000]"
        )
    for key, refused in checks.items():
        if refused:
            raise unsupported(hc.at(key), "not supported by this engine yet")


def _paths(hc: Fields, key: str, default: tuple[str, ...], privileged: bool) -> list[str] | None:
    paths = hc.texts(key)
    for i, p in enumerate(paths or []):
        if not p.startswith("/"):
            raise invalid(f"{hc.at(key)}[{i}]", f"{p} is not an absolute path")
    return list(default) if paths is None and not privileged else paths


def _console_size(hc: Fields) -> list[int]:
    value = hc.raw.get("ConsoleSize")
    if value is None:
        return [0, 0]
    if not isinstance(value, list) or len(value) != 2:
        raise invalid(hc.at("ConsoleSize"), "expected [height, width]")
    return [
        check_integer(v, f"{hc.at('ConsoleSize')}[{i}]", 0, 2**32 - 1) for i, v in enumerate(value)
    ]


def parse_host_config(raw: object, config: Mapping[str, object]) -> dict[str, object]:
    """The HostConfig of a create body in inspect's shape; *config* is the request's Config."""
    hc = Fields(raw, "HostConfig")
    _refuse(hc)
    network, auto_remove = _network_mode(hc), hc.flag("AutoRemove")
    ipc = _mode(hc, "IpcMode", ("", "private", "shareable", "host"), ("none",)) or "private"
    cgroupns = _mode(hc, "CgroupnsMode", ("", "host"), ("private",)) or "host"
    privileged = hc.flag("Privileged")
    cap_add, cap_drop = hc.strslice("CapAdd"), hc.strslice("CapDrop")
    capabilities.effective(cap_add or [], cap_drop or [], privileged=False, held=0)
    secopts = hc.texts("SecurityOpt")
    security_options(secopts or [])
    for i, spec in enumerate(hc.texts("VolumesFrom") or []):
        parse_volumes_from(spec, f"HostConfig.VolumesFrom[{i}]")
    explicit_mounts(hc.raw)
    dns, dns_search, dns_options = dns_settings(hc)
    hosts = extra_hosts(hc)
    sysctls = hc.text_map("Sysctls")
    check_sysctls(sysctls or {}, network, ipc)
    shm = hc.integer("ShmSize")
    if shm < 0:
        raise invalid(hc.at("ShmSize"), "SHM size can not be less than 0")
    if hc.text("Isolation") not in ("", "default"):
        raise invalid(
            hc.at("Isolation"),
            f"Invalid isolation: \"{hc.text('Isolation')}\" - linux only supports 'default'",
        )
    _check_conflicts(hc, config, network)
    publish_all = hc.flag("PublishAllPorts")
    exposed = Fields(config, "Config").obj("ExposedPorts").raw
    parse_port_bindings(hc.raw.get("PortBindings"), exposed, publish_all)
    links = hc.texts("Links")
    for i, spec in enumerate(links or []):
        parse_link(spec, f"{hc.at('Links')}[{i}]")
    masked = _paths(hc, "MaskedPaths", MASKED_PATHS, privileged)
    readonly = _paths(hc, "ReadonlyPaths", READONLY_PATHS, privileged)
    if security_options(secopts or []).unconfined_paths:
        masked = readonly = []
    out: dict[str, object] = {
        "Binds": hc.texts("Binds"),
        "ContainerIDFile": hc.text("ContainerIDFile"),
        "LogConfig": log_config(hc.obj("LogConfig")),
        "NetworkMode": network,
        "PortBindings": hc.raw.get("PortBindings"),
        "RestartPolicy": restart_policy(hc.obj("RestartPolicy"), auto_remove),
        "AutoRemove": auto_remove,
        "VolumeDriver": hc.text("VolumeDriver"),
        "VolumesFrom": hc.texts("VolumesFrom"),
        "ConsoleSize": _console_size(hc),
        "CapAdd": cap_add,
        "CapDrop": cap_drop,
        "CgroupnsMode": cgroupns,
        "Dns": dns,
        "DnsOptions": dns_options,
        "DnsSearch": dns_search,
        "ExtraHosts": hosts,
        "GroupAdd": hc.texts("GroupAdd"),
        "IpcMode": ipc,
        "Cgroup": "",
        "Links": links,
        "OomScoreAdj": 0,
        "PidMode": _mode(hc, "PidMode", ("", "host")),
        "Privileged": privileged,
        "PublishAllPorts": publish_all,
        "ReadonlyRootfs": hc.flag("ReadonlyRootfs"),
        "SecurityOpt": secopts,
        "Tmpfs": hc.text_map("Tmpfs"),
        "UTSMode": _mode(hc, "UTSMode", ("", "host")),
        "UsernsMode": _mode(hc, "UsernsMode", ("", "host"), ("private",)),
        "ShmSize": shm or DEFAULT_SHM,
        "Sysctls": sysctls,
        "Runtime": hc.text("Runtime") or "runc",
        "Isolation": hc.text("Isolation"),
        **parse_resources(hc),
        "Mounts": hc.raw.get("Mounts"),
        "MaskedPaths": masked,
        "ReadonlyPaths": readonly,
        "Init": hc.opt_flag("Init"),
    }
    for key in ("Tmpfs", "Sysctls", "Mounts", "Init"):  # Go's omitempty
        if not out[key] and out[key] is not False:
            del out[key]
    return out


def _check_conflicts(hc: Fields, config: Mapping[str, object], network: str) -> None:
    hostname = Fields(config, "Config").text("Hostname")
    if hostname and hc.text("UTSMode") == "host":
        raise invalid("Config.Hostname", "Conflicting options: hostname and the UTS mode")
    if network.startswith("container:"):
        if hostname:
            raise invalid("Config.Hostname", "Conflicting options: hostname and the network mode")
        if hc.texts("Dns") or hc.texts("DnsSearch") or hc.texts("DnsOptions"):
            raise invalid(hc.at("Dns"), "Conflicting options: dns and the network mode")
        if hc.texts("ExtraHosts"):
            raise invalid(
                hc.at("ExtraHosts"),
                "Conflicting options: custom host-to-IP mapping and the network mode",
            )


_UPDATABLE: Final = (
    "BlkioWeight",
    "CpuShares",
    "NanoCpus",
    "CpuPeriod",
    "CpuQuota",
    "CpusetCpus",
    "CpusetMems",
    "Memory",
    "MemorySwap",
    "MemoryReservation",
)


def parse_update(
    body: Mapping[str, object], host_config: Mapping[str, object]
) -> dict[str, object]:
    """The HostConfig changes a ``docker update`` body asks for, checked against the container's
    current HostConfig (fields left at zero stay as they are, as in dockerd)."""
    f = Fields(body, "")
    new = read_resources(f)
    for key in ("Devices", "DeviceCgroupRules", "Ulimits"):
        if new[key]:
            raise unsupported(key, "cannot be changed by update")
    if new["OomKillDisable"]:
        raise unsupported("OomKillDisable", "cannot be changed by update")
    current = {k: host_config.get(k) for k in ("NanoCpus", "CpuPeriod", "CpuQuota", "MemorySwap")}
    for cfs, name in (("CpuPeriod", "CPU Period"), ("CpuQuota", "CPU Quota")):
        if new["NanoCpus"] and current[cfs]:
            raise invalid("NanoCpus", f"Conflicting options: Nano CPUs cannot be updated as {name} "
                          "has already been set")  # fmt: skip
        if new[cfs] and current["NanoCpus"]:
            raise invalid(cfs, f"Conflicting options: {name} cannot be updated as NanoCPUs has "
                          "already been set")  # fmt: skip
    changes = {k: new[k] for k in _UPDATABLE if new[k]}
    swap, memory = current["MemorySwap"], new["Memory"]
    lower = isinstance(swap, int) and isinstance(memory, int) and 0 < swap < memory
    if lower and not new["MemorySwap"]:
        raise invalid(
            "Memory",
            "Memory limit should be smaller than already set memoryswap "
            "limit, update the memoryswap at the same time",
        )
    if f.given("PidsLimit"):
        pids = new["PidsLimit"]
        changes["PidsLimit"] = pids if isinstance(pids, int) and pids > 0 else None
    if f.obj("RestartPolicy").text("Name"):
        auto_remove = bool(host_config.get("AutoRemove"))
        if auto_remove:
            raise invalid(
                "RestartPolicy",
                "Restart policy cannot be updated because AutoRemove is enabled for the container",
            )
        changes["RestartPolicy"] = restart_policy(f.obj("RestartPolicy"), False)
    check_resources({**host_config, **changes}, "", creating=False)
    return changes
