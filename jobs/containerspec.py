"""The exec driver's view of a container: ``build_spec`` for its start, ``exec_process`` for
``docker exec``.

Both read a container's stored Config and HostConfig (Docker's shapes, already validated by
``parse_create``) and produce the plain data of ``drivers.exec.spec``. The daemon supplies what
only it knows: the mounted rootfs, the resolved mounts of volumes, binds and tmpfs, the
capabilities it holds (``held_caps``, a mask: the most ``--privileged`` can grant) and, for
``NetworkMode: container:<x>`` and the like, the namespaces to join (``join``: kind →
``/proc/<pid>/ns/<kind>``). Defaults follow dockerd: PATH, HOSTNAME and TERM in the
environment, Docker's capabilities and device rules, masked ``/proc`` paths, 64 MiB of
``/dev/shm``, and the network files of the bundle bind-mounted over ``/etc``.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final, Literal, cast

from drivers.exec.spec import (
    DEFAULT_DEVICE_RULES,
    MASKED_PATHS,
    NAMESPACES,
    PRIVILEGED_DEVICE_RULES,
    READONLY_PATHS,
    ContainerSpec,
    Device,
    DeviceRule,
    LogConfig,
    Mount,
    Process,
    Rlimit,
)
from engine.errors import InvalidArgument
from jobs import capabilities
from jobs.hostconfig import DEFAULT_SHM
from jobs.hostoptions import security_options
from jobs.hostresources import build_resources
from jobs.jsonfields import Fields, check_integer, invalid
from jobs.networkfiles import hostname_for

DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NETWORK_FILES: Final = (
    ("hostname", "/etc/hostname"),
    ("hosts", "/etc/hosts"),
    ("resolv.conf", "/etc/resolv.conf"),
)
_NO_JOIN: Final[Mapping[str, str]] = MappingProxyType({})
_HOST_MODES: Final = (
    ("NetworkMode", "net"),
    ("PidMode", "pid"),
    ("IpcMode", "ipc"),
    ("UTSMode", "uts"),
)


def merge_env(defaults: Sequence[str], overrides: Sequence[str]) -> list[str]:
    """*defaults* with each ``KEY=value`` of *overrides* replacing KEY's entry (or appended);
    a bare ``KEY`` removes it (moby's ReplaceOrAppendEnvValues)."""
    env = {e.partition("=")[0]: e for e in defaults}
    for entry in overrides:
        key, sep, _ = entry.partition("=")
        if sep:
            env[key] = entry
        else:
            env.pop(key, None)
    return list(env.values())


def container_env(config: Mapping[str, object], hostname: str, tty: bool) -> list[str]:
    """A container process's environment: PATH, HOSTNAME and TERM (with a tty) under Config.Env."""
    defaults = [f"PATH={DEFAULT_PATH}"] + ([f"HOSTNAME={hostname}"] if hostname else [])
    return merge_env(
        defaults + (["TERM=xterm"] if tty else []), Fields(config, "Config").texts("Env") or []
    )


def container_caps(host_config: Mapping[str, object], held_caps: int) -> tuple[str, ...]:
    """The capabilities of a container's processes (Docker's defaults, CapAdd, CapDrop)."""
    hc = Fields(host_config, "HostConfig")
    return capabilities.effective(
        hc.strslice("CapAdd") or [],
        hc.strslice("CapDrop") or [],
        privileged=hc.flag("Privileged"),
        held=held_caps,
    )


def _rlimits(hc: Fields) -> tuple[Rlimit, ...]:
    return tuple(
        Rlimit(u.text("Name"), u.integer("Soft"), u.integer("Hard"))
        for u in hc.objs("Ulimits") or []
    )


def _console(f: Fields) -> tuple[int, int]:
    value = f.raw.get("ConsoleSize")
    if value is None:
        return (0, 0)
    if not isinstance(value, list) or len(value) != 2:
        raise invalid(f.at("ConsoleSize"), "expected [height, width]")
    rows, cols = (check_integer(v, f"{f.at('ConsoleSize')}[{i}]", 0) for i, v in enumerate(value))
    return (rows, cols)


def _host_devices(host: str, inside: str, path: str) -> list[Device]:
    """The device nodes at *host* (a node, or a directory of them) as seen at *inside*."""
    found = [(host, inside)]
    if os.path.isdir(host):
        found = [
            (os.path.join(top, name), posixpath.join(inside, os.path.relpath(top, host), name))
            for top, _, names in sorted(os.walk(host))
            for name in sorted(names)
        ]
    devices = []
    for node, target in found:
        try:
            st = os.stat(node)
        except OSError as exc:
            raise invalid(path, "error gathering device information while adding custom "
                          f'device "{node}": {exc.strerror}') from None  # fmt: skip
        kind: Literal["c", "b"] | None = (
            "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else None
        )
        if kind is not None:
            major, minor, mode = (
                os.major(st.st_rdev),
                os.minor(st.st_rdev),
                stat.S_IMODE(st.st_mode),
            )
            devices.append(Device(posixpath.normpath(target), kind, major, minor, mode, st.st_uid,
                                  st.st_gid))  # fmt: skip
    if not devices:
        raise invalid(path, f'"{host}" is not a device node and holds none')
    return devices


def _devices(hc: Fields) -> tuple[list[Device], list[DeviceRule]]:
    devices: list[Device] = []
    rules: list[DeviceRule] = []
    for d in hc.objs("Devices") or []:
        host = d.text("PathOnHost")
        found = _host_devices(host, d.text("PathInContainer") or host, d.path)
        access = d.text("CgroupPermissions") or "rwm"
        devices += found
        rules += [DeviceRule(True, dev.type, dev.major, dev.minor, access) for dev in found]
    for rule in hc.texts("DeviceCgroupRules") or []:
        kind, numbers, access = rule.split()
        major, minor = (-1 if n == "*" else int(n) for n in numbers.split(":"))
        rules.append(DeviceRule(True, cast(Literal["a", "c", "b"], kind), major, minor, access))
    return devices, rules


def _namespaces(hc: Fields, join: Mapping[str, str]) -> tuple[str, ...]:
    shared = set(join)
    for key, kind in _HOST_MODES:
        if hc.text(key) == "host":
            shared.add(kind)
    if hc.text("NetworkMode").startswith("container:") and "net" not in join:
        raise ValueError(f"{hc.text('NetworkMode')}: join needs the network namespace to enter")
    return tuple(n for n in NAMESPACES if n not in shared)


def _log(id: str, bundle: str, hc: Fields) -> LogConfig | None:
    lc = hc.obj("LogConfig")
    if lc.text("Type") == "none":
        return None
    from drivers.logging import jsonfile  # the daemon's one log driver

    max_size, max_file = jsonfile.validate_options(lc.text_map("Config") or {})
    return LogConfig(posixpath.join(bundle, f"{id}-json.log"), max_size, max_file)


def _mounts(mounts: Sequence[Mount], bundle: str, readonly: bool, files: bool) -> tuple[Mount, ...]:
    result = list(mounts)
    taken = {m.destination for m in mounts}
    if files:  # a user's mount at the same place wins (e.g. -v ./hosts:/etc/hosts)
        result += [
            Mount(dest, "bind", posixpath.join(bundle, name), readonly)
            for name, dest in NETWORK_FILES
            if dest not in taken
        ]
    return tuple(sorted(result, key=lambda m: m.destination.rstrip("/").count("/")))


def build_spec(
    *,
    id: str,
    config: Mapping[str, object],
    host_config: Mapping[str, object],
    rootfs: str,
    bundle: str,
    run_dir: str,
    mounts: Sequence[Mount],
    held_caps: int,
    hostname_files: bool = True,
    join: Mapping[str, str] = _NO_JOIN,
) -> ContainerSpec:
    """The spec that starts container *id* (merged Config, stored HostConfig)."""
    c, hc = Fields(config, "Config"), Fields(host_config, "HostConfig")
    args = (c.strslice("Entrypoint") or []) + (c.strslice("Cmd") or [])
    if not args:
        raise InvalidArgument("No command specified")
    hostname = hostname_for(id, config, host_config)
    privileged, readonly = hc.flag("Privileged"), hc.flag("ReadonlyRootfs")
    process = Process(
        args=tuple(args),
        env=tuple(container_env(config, hostname, c.flag("Tty"))),
        cwd=c.text("WorkingDir") or "/",
        user=c.text("User"),
        tty=c.flag("Tty"),
        stdin=c.flag("OpenStdin"),
        caps=container_caps(host_config, held_caps),
        no_new_privileges=security_options(hc.texts("SecurityOpt") or []).no_new_privileges,
        rlimits=_rlimits(hc),
        console_size=_console(hc),
    )
    namespaces = _namespaces(hc, join)
    devices, rules = _devices(hc)
    masked, ro_paths = hc.texts("MaskedPaths"), hc.texts("ReadonlyPaths")  # None: the defaults
    masked = [] if privileged else list(MASKED_PATHS) if masked is None else masked
    ro_paths = [] if privileged else list(READONLY_PATHS) if ro_paths is None else ro_paths
    own_uts = "uts" in namespaces
    return ContainerSpec(
        id=id,
        rootfs=rootfs,
        bundle=bundle,
        run_dir=run_dir,
        process=process,
        hostname=hostname if own_uts else "",
        domainname=c.text("Domainname") if own_uts else "",
        namespaces=namespaces,
        join=dict(join),
        mounts=_mounts(mounts, bundle, readonly, hostname_files),
        devices=tuple(devices),
        device_rules=PRIVILEGED_DEVICE_RULES if privileged else DEFAULT_DEVICE_RULES + tuple(rules),
        masked_paths=tuple(masked),
        readonly_paths=tuple(ro_paths),
        privileged=privileged,
        readonly_rootfs=readonly,
        shm_size=hc.integer("ShmSize") or DEFAULT_SHM,
        sysctls=dict(hc.text_map("Sysctls") or {}),
        cgroup_parent=hc.text("CgroupParent"),
        resources=build_resources(host_config),
        init=hc.opt_flag("Init") is True,
        log=_log(id, bundle, hc),
    )


def exec_process(
    exec_config: Mapping[str, object],
    container_config: Mapping[str, object],
    host_config: Mapping[str, object],
    held_caps: int,
    hostname: str = "",
    extra_env: Sequence[str] = (),
) -> Process:
    """The process of a ``docker exec`` body in a container; InvalidArgument if it is invalid."""
    e, c = Fields(exec_config, ""), Fields(container_config, "Config")
    cmd = e.strslice("Cmd")
    if not cmd:
        raise InvalidArgument("No exec command specified")
    env = e.texts("Env") or []
    for i, entry in enumerate(env):
        if not entry.partition("=")[0] or "\x00" in entry:
            raise invalid(f"Env[{i}]", f"invalid environment variable: {entry}")
    workdir, user, tty = e.text("WorkingDir"), e.text("User"), e.flag("Tty")
    if workdir and not workdir.startswith("/"):
        raise invalid(
            "WorkingDir",
            f"the working directory '{workdir}' is invalid, it needs to be an absolute path",
        )
    for key in ("AttachStdout", "AttachStderr", "Detach"):  # type-checked; the attach uses them
        e.flag(key)
    hc = Fields(host_config, "HostConfig")
    own = container_env(container_config, hostname or c.text("Hostname"), tty)
    privileged = e.flag("Privileged")
    caps = capabilities.names_of(held_caps) if privileged else container_caps(hc.raw, held_caps)
    return Process(
        args=tuple(cmd),
        env=tuple(merge_env(merge_env(list(extra_env), own), env)),
        cwd=workdir or c.text("WorkingDir") or "/",
        user=user or c.text("User"),
        tty=tty,
        stdin=e.flag("AttachStdin"),
        caps=caps,
        no_new_privileges=security_options(hc.texts("SecurityOpt") or []).no_new_privileges,
        rlimits=_rlimits(hc),
        console_size=_console(e),
    )
