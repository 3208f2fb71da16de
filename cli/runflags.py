"""docker's ``run``/``create`` flags, and the ``POST /containers/create`` body they make.

``run_options`` (``create_options`` without the run-only ``-d`` and ``--detach-keys``) adds the
flags to a click command (made with ``context_settings=RUN_CONTEXT``); the command hands its
keyword arguments to ``to_create_body``, which builds the body the docker CLI 28 sends for the
same flags, and to ``create_query`` (``name``, ``platform``). Values are parsed as docker's CLI
parses them (sizes as ``RAMInBytes``, ``--cpus`` as a rational number of CPUs, ports, mounts,
devices, ulimits, env files); a bad value raises InvalidArgument naming the flag, in docker's
words::

    invalid argument "x" for "-m, --memory" flag: invalid size: 'x'

Where docker's CLI takes values through a Go map and so sends them in random order (``-v`` binds,
duplicated ``-e`` keys), the order given on the command line is kept (first place, last value).
``-p``, ``-P``, ``--expose`` and ``--link`` pass through as docker sends them. Not taken:
``--init=false`` (``--init`` is a plain flag), ``--label-file``, ``bind-recursive`` mounts.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any, Final, TypeVar

import click

from engine.errors import InvalidArgument

F = TypeVar("F", bound=Callable[..., Any])
# A command with these flags takes IMAGE [COMMAND [ARG...]]: options end at IMAGE, as in docker,
# so ``run busybox ls -l`` passes ``-l`` to ls.
RUN_CONTEXT: Final[dict[str, Any]] = {"allow_interspersed_args": False}
Opts = Mapping[str, Any]

# (declarations, kind, help); kind: "many" (repeatable), "str", "flag", "none" (None if unset).
_SPEC: Final[tuple[tuple[tuple[str, ...], str, str], ...]] = (
    (("-a", "--attach"), "many", "Attach to STDIN, STDOUT or STDERR."),
    (("--add-host",), "many", "Add a host-to-IP mapping (host:ip)."),
    (("--cap-add",), "many", "Add a Linux capability."),
    (("--cap-drop",), "many", "Drop a Linux capability."),
    (("--cgroup-parent",), "str", "Parent cgroup for the container."),
    (("--cpu-period",), "none", "Limit the CPU CFS period (microseconds)."),
    (("--cpu-quota",), "none", "Limit the CPU CFS quota (microseconds)."),
    (("-c", "--cpu-shares"), "none", "CPU shares (relative weight)."),
    (("--cpus",), "none", "Number of CPUs (e.g. 1.5)."),
    (("--cpuset-cpus",), "str", "CPUs in which to allow execution (0-3, 0,1)."),
    (("--cpuset-mems",), "str", "Memory nodes in which to allow execution (0-3, 0,1)."),
    (("--device",), "many", "Add a host device (host[:container][:rwm])."),
    (("--dns",), "many", "Set custom DNS servers."),
    (("--dns-option",), "many", "Set DNS options."),
    (("--dns-search",), "many", "Set custom DNS search domains."),
    (("--domainname",), "str", "Container NIS domain name."),
    (("--entrypoint",), "none", 'Overwrite the image\'s entrypoint ("" resets it).'),
    (("-e", "--env"), "many", "Set an environment variable (KEY=VALUE, or KEY from here)."),
    (("--env-file",), "many", "Read environment variables from a file."),
    (("--expose",), "many", "Expose a port or a range of ports."),
    (("--group-add",), "many", "Add additional groups to join."),
    (("-h", "--hostname"), "str", "Container host name."),
    (("--init",), "flag", "Run an init inside the container."),
    (("-i", "--interactive"), "flag", "Keep STDIN open even if not attached."),
    (("--ip",), "str", "IPv4 address on the (first) network (e.g., 172.30.100.104)."),
    (("--ipc",), "str", "IPC mode to use."),
    (("-l", "--label"), "many", "Set a label (key=value)."),
    (("--link",), "many", "Add a link to another container."),
    (("--log-driver",), "str", "Logging driver for the container."),
    (("--log-opt",), "many", "Log driver options."),
    (("-m", "--memory"), "none", "Memory limit (e.g. 64m)."),
    (("--memory-reservation",), "none", "Memory soft limit."),
    (("--memory-swap",), "none", "Memory plus swap limit; -1: unlimited swap."),
    (("--mount",), "many", "Attach a file system mount (type=bind|volume|tmpfs,...)."),
    (("--name",), "str", "Assign a name to the container."),
    (("--network", "--net"), "many", "Connect the container to a network."),
    (("--network-alias",), "many", "Add a network-scoped alias for the container."),
    (("--pid",), "str", "PID namespace to use."),
    (("--pids-limit",), "none", "Tune the container pids limit (-1: unlimited)."),
    (("--platform",), "str", "Set the platform (only linux)."),
    (("--privileged",), "flag", "Give extended privileges to this container."),
    (("-p", "--publish"), "many", "Publish a container's port(s) to the host."),
    (("-P", "--publish-all"), "flag", "Publish all exposed ports to random ports."),
    (("--read-only",), "flag", "Mount the container's root file system read-only."),
    (("--restart",), "none", "Restart policy: no, always, on-failure[:N], unless-stopped."),
    (("--rm",), "flag", "Remove the container when it exits."),
    (("--security-opt",), "many", "Security options."),
    (("--shm-size",), "none", "Size of /dev/shm."),
    (("--stop-signal",), "none", "Signal to stop the container."),
    (("--stop-timeout",), "none", "Timeout (in seconds) to stop the container."),
    (("--sysctl",), "many", "Sysctl options (name=value)."),
    (("-t", "--tty"), "flag", "Allocate a pseudo-TTY."),
    (("--tmpfs",), "many", "Mount a tmpfs directory (path[:options])."),
    (("-u", "--user"), "str", "Username or UID (format: <name|uid>[:<group|gid>])."),
    (("--ulimit",), "many", "Ulimit options (name=soft[:hard])."),
    (("--uts",), "str", "UTS namespace to use."),
    (("-v", "--volume"), "many", "Bind mount a volume (src:dst[:opts], or dst)."),
    (("--volumes-from",), "many", "Mount volumes from the specified container(s)."),
    (("-w", "--workdir"), "str", "Working directory inside the container."),
)
_RUN_ONLY: Final[tuple[tuple[tuple[str, ...], str, str], ...]] = (
    (("-d", "--detach"), "flag", "Run the container in the background and print its id."),
    (("--detach-keys",), "str", "Override the key sequence for detaching a container."),
)
FLAGS: Final[dict[str, str]] = {
    decls[-1 if decls[-1] != "--net" else 0].lstrip("-").replace("-", "_"): ", ".join(
        d for d in decls if d != "--net"
    )
    for decls, _, _ in _SPEC + _RUN_ONLY
}
ENDPOINT: Final[dict[str, object]] = {
    "IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "", "DriverOpts": None,
    "GwPriority": 0, "NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "",
    "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
    "DNSNames": None,
}  # fmt: skip
ULIMITS: Final = frozenset(
    [
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ]
)
SYSCTLS: Final = frozenset(
    [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ]
)
BUILTIN_NETWORKS: Final = frozenset({"default", "bridge", "host", "none"})
_UNITS: Final = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_FLOAT: Final = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INT: Final = re.compile(r"[+-]?\d+")


def _decorate(spec: Sequence[tuple[tuple[str, ...], str, str]], f: F) -> F:
    for decls, kind, help_ in reversed(spec):
        name = decls[0 if decls[0] == "--network" else -1].lstrip("-").replace("-", "_")
        if kind == "many":
            f = click.option(*decls, name, multiple=True, help=help_)(f)
        elif kind == "flag":
            default = None if name == "init" else False
            f = click.option(*decls, name, is_flag=True, default=default, help=help_)(f)
        else:
            f = click.option(*decls, name, default="" if kind == "str" else None, help=help_)(f)
    return f


def run_options(f: F) -> F:
    """Add docker's ``run`` flags (``create``'s plus ``-d`` and ``--detach-keys``) to *f*."""
    return _decorate(_SPEC + _RUN_ONLY, f)


def create_options(f: F) -> F:
    """Add docker's ``create`` flags to *f*."""
    return _decorate(_SPEC, f)


def bad(flag: str, value: object, reason: str) -> InvalidArgument:
    """The error for a bad *value* of *flag* (a param name), worded as docker words it."""
    return InvalidArgument(f'invalid argument "{value}" for "{FLAGS[flag]}" flag: {reason}')


def ram_in_bytes(text: str) -> int:
    """Parse a size as docker does (``64m``, ``1.5g``, ``512k``, ``100``; binary units)."""
    sep = max(text.rfind(c) for c in "0123456789. ")
    if sep < 0:
        raise ValueError(f"invalid size: '{text}'")
    number, suffix = (text[: sep + 1], text[sep + 1 :]) if text[sep] != " " else (
        text[:sep], text[sep + 1 :]
    )  # fmt: skip
    if not _FLOAT.fullmatch(number):
        raise ValueError(f'strconv.ParseFloat: parsing "{number}": invalid syntax')
    size = float(number)
    if size < 0:
        raise ValueError(f"invalid size: '{text}'")
    low = suffix.lower()
    if not suffix or low == "b":
        return int(size)
    if len(suffix) > 3 or low[0] not in _UNITS or low[1:] not in ("", "b", "ib"):
        raise ValueError(f"invalid suffix: '{low if len(suffix) <= 3 else suffix}'")
    return int(size * _UNITS[low[0]])


def _size(opts: Opts, flag: str) -> int:
    value = opts.get(flag)
    if value in (None, ""):
        return 0
    if isinstance(value, int):
        return value
    if flag == "memory_swap" and value == "-1":
        return -1
    try:
        return ram_in_bytes(str(value))
    except ValueError as exc:
        raise bad(flag, value, str(exc)) from None


def _int(opts: Opts, flag: str, default: int = 0) -> int:
    value = opts.get(flag)
    if value in (None, ""):
        return default
    if isinstance(value, int):
        return value
    if not _INT.fullmatch(str(value)):
        raise bad(flag, value, f'strconv.ParseInt: parsing "{value}": invalid syntax')
    return int(str(value))


def nano_cpus(opts: Opts) -> int:
    """``--cpus`` as NanoCpus: a rational number of CPUs times 10^9, which must be whole."""
    value = opts.get("cpus")
    if value in (None, ""):
        return 0
    text = str(value)
    try:
        if re.search(r"[\s_]", text):
            raise ValueError
        nanos = Fraction(text) * 10**9
    except (ValueError, ZeroDivisionError):
        raise bad("cpus", value, f"failed to parse {text} as a rational number") from None
    if nanos.denominator != 1:
        raise bad("cpus", value, "value is too precise")
    return int(nanos)


def _many(opts: Opts, flag: str) -> list[str]:
    return [str(v) for v in opts.get(flag) or ()]


def _kv_map(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = value
    return out


def env_list(opts: Opts, environ: Mapping[str, str]) -> list[str] | None:
    """``--env-file`` lines, then ``-e`` values (KEY alone takes the value from *environ*)."""
    out = [line for path in _many(opts, "env_file") for line in _env_file(path, environ)]
    given: dict[str, str] = {}
    for item in _many(opts, "env"):
        key, sep, _ = item.partition("=")
        if not key:
            raise bad("env", item, f"invalid environment variable: {item}")
        given[key] = item if sep or key not in environ else f"{key}={environ[key]}"
    return out + list(given.values()) or None


def _env_file(path: str, environ: Mapping[str, str]) -> list[str]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise bad("env_file", path, f"open {path}: {(exc.strerror or '').lower()}") from None
    out = []
    for number, data in enumerate(raw.removeprefix(b"\xef\xbb\xbf").splitlines(), start=1):
        try:
            line = data.decode().lstrip()
        except UnicodeDecodeError:
            raise bad("env_file", path, f"invalid utf8 bytes at line {number}") from None
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not key or re.search(r"\s", key):
            reason = f"variable '{key}' contains whitespaces" if key else "no variable name"
            raise bad("env_file", path, f"{reason} on line {number}")
        if sep:
            out.append(f"{key}={value}")
        elif key in environ:
            out.append(f"{key}={environ[key]}")
    return out


def labels(opts: Opts) -> dict[str, str]:
    """``-l`` values as a map (a bare key has the value "")."""
    for item in _many(opts, "label"):
        key = item.partition("=")[0].strip()
        if not key:
            raise bad("label", item, f"invalid label '{item}': empty name")
        if re.search(r"\s", key):
            raise bad("label", item, f"label '{item}' contains whitespaces")
    return _kv_map(_many(opts, "label"))


def volumes(opts: Opts, cwd: str) -> tuple[list[str] | None, dict[str, dict[str, object]]]:
    """``-v`` specs as (Binds, Volumes): ``src:dst[:opts]`` binds (``./x`` made absolute), bare
    targets as anonymous volumes."""
    binds: dict[str, None] = {}
    anonymous: dict[str, dict[str, object]] = {}
    for spec in _many(opts, "volume"):
        parts = spec.split(":")
        if not spec:
            raise bad("volume", spec, "invalid empty volume spec")
        if len(spec) > 2 and "" in parts:
            raise bad("volume", spec, f"invalid spec: {spec}: empty section between colons")
        if len(parts) > 3:
            raise bad("volume", spec, f"invalid spec: {spec}: too many colons")
        if len(parts) == 1 or len(spec) <= 2:
            anonymous[spec] = {}
            continue
        source = parts[0]
        if source.startswith(".") and not os.path.isabs(source):
            source = os.path.normpath(os.path.join(cwd, source))
        binds[":".join([source, *parts[1:]])] = None
    return list(binds) or None, anonymous


def mount(spec: str, cwd: str) -> dict[str, object]:
    """One ``--mount`` value (CSV of key=value) as a HostConfig.Mounts item."""
    fields = next(csv.reader([spec]), None) if spec else None
    if not fields:
        raise bad("mount", spec, "EOF")
    m: dict[str, Any] = {"Type": "volume"}
    sub: dict[str, dict[str, Any]] = {}
    for item in fields:
        key, sep, value = item.partition("=")
        try:
            _mount_field(m, sub, key, value if sep else None, cwd)
        except ValueError as exc:
            raise bad("mount", spec, str(exc)) from None
    if not m.get("Target"):
        raise bad("mount", spec, "target is required")
    for prefix, owner in (("volume", "VolumeOptions"), ("bind", "BindOptions"),
                          ("tmpfs", "TmpfsOptions")):  # fmt: skip
        if owner in sub and m["Type"] != prefix:
            raise bad(
                "mount", spec, f"cannot mix '{prefix}-*' options with mount type '{m['Type']}'"
            )
        if owner in sub:
            m[owner] = sub[owner]
    return m


def _bool(key: str, value: str) -> bool:
    low = value.lower()
    if low not in ("1", "t", "true", "0", "f", "false"):
        raise ValueError(f"invalid value for {key}: {value}")
    return low in ("1", "t", "true")


def _mount_field(
    m: dict[str, Any], sub: dict[str, dict[str, Any]], key: str, value: str | None, cwd: str
) -> None:
    def options(owner: str) -> dict[str, Any]:
        if owner == "VolumeOptions" and owner not in sub:
            sub[owner] = {"DriverConfig": {}}
        return sub.setdefault(owner, {})

    if value is None:
        if key not in ("readonly", "ro", "volume-nocopy", "bind-nonrecursive"):
            raise ValueError(f"invalid field '{key}' must be a key=value pair")
        value = "true"
    if key == "type":
        m["Type"] = value.lower()
    elif key in ("source", "src"):
        m["Source"] = os.path.join(cwd, value) if value == "." or value.startswith("./") else value
    elif key in ("target", "dst", "destination"):
        m["Target"] = value
    elif key in ("readonly", "ro"):
        if _bool(key, value):
            m["ReadOnly"] = True
        else:
            m.pop("ReadOnly", None)
    elif key == "consistency":
        m["Consistency"] = value.lower()
    elif key == "bind-propagation":
        options("BindOptions")["Propagation"] = value.lower()
    elif key == "bind-nonrecursive":
        options("BindOptions")["NonRecursive"] = _bool(key, value) or None
    elif key == "volume-nocopy":
        options("VolumeOptions")["NoCopy"] = _bool(key, value) or None
    elif key == "volume-label":
        k, _, v = value.partition("=")
        options("VolumeOptions").setdefault("Labels", {})[k] = v
    elif key == "volume-driver":
        options("VolumeOptions")["DriverConfig"]["Name"] = value
    elif key == "volume-opt":
        k, _, v = value.partition("=")
        options("VolumeOptions")["DriverConfig"].setdefault("Options", {})[k] = v
    elif key == "tmpfs-size":
        options("TmpfsOptions")["SizeBytes"] = ram_in_bytes(value)
    elif key == "tmpfs-mode":
        if not re.fullmatch(r"[0-7]+", value):
            raise ValueError(f"invalid value for {key}: {value}")
        options("TmpfsOptions")["Mode"] = int(value, 8)
    else:
        raise ValueError(f"unexpected key '{key}' in '{key}={value}'")
    for owner in sub.values():  # false flags are left out, as Go's omitempty does
        for k in [k for k, v in owner.items() if v is None]:
            del owner[k]


def _port_range(text: str) -> tuple[int, int]:
    if not text:
        raise ValueError("empty string specified for ports")
    start, sep, end = text.partition("-")
    for part in (start, end) if sep else (start,):
        if not re.fullmatch(r"\d+", part) or int(part) > 65535:
            raise ValueError(f'strconv.ParseUint: parsing "{part}": invalid syntax')
    low, high = int(start), int(end) if sep else int(start)
    if high < low:
        raise ValueError(f"invalid range specified for port: {text}")
    return low, high


def _proto_port(text: str) -> tuple[str, str]:
    port, _, proto = text.partition("/")
    return (proto or "tcp").lower(), port


def ports(opts: Opts) -> tuple[dict[str, dict[str, object]], dict[str, list[dict[str, str]]]]:
    """``-p`` and ``--expose`` as (ExposedPorts, PortBindings)."""
    exposed: dict[str, dict[str, object]] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for raw in _many(opts, "publish"):
        try:
            for port, binding in _publish(_standard(raw) if "=" in raw else raw):
                exposed[port] = {}
                bindings.setdefault(port, []).append(binding)
        except ValueError as exc:
            raise bad("publish", raw, str(exc)) from None
    for raw in _many(opts, "expose"):
        if ":" in raw:
            raise bad("expose", raw, f"invalid port format for --expose: {raw}")
        proto, port = _proto_port(raw)
        try:
            low, high = _port_range(port)
        except ValueError as exc:
            reason = f"invalid range format for --expose: {raw}, error: {exc}"
            raise bad("expose", raw, reason) from None
        exposed.update({f"{n}/{proto}": {} for n in range(low, high + 1)})
    return exposed, bindings


def _standard(raw: str) -> str:
    """The long form (``target=80,published=8080,protocol=udp``) as ``8080:80/udp``."""
    fields = _kv_map(next(csv.reader([raw])))
    published = f"{fields['published']}:" if fields.get("published") else ""
    return f"{published}{fields.get('target', '')}/{fields.get('protocol', 'tcp')}"


def _publish(raw: str) -> list[tuple[str, dict[str, str]]]:
    parts = raw.split(":")
    ip, host = ":".join(parts[:-2]), parts[-2] if len(parts) > 1 else ""
    proto, container = _proto_port(parts[-1])
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"invalid IP address: {ip}") from None
    if not container:
        raise ValueError(f"no port specified: {raw}<empty>")
    try:
        low, high = _port_range(container)
    except ValueError:
        raise ValueError(f"invalid containerPort: {container}") from None
    host_low = host_high = 0
    if host:
        try:
            host_low, host_high = _port_range(host)
        except ValueError:
            raise ValueError(f"invalid hostPort: {host}") from None
        if high - low != host_high - host_low and high != low:
            raise ValueError(
                f"invalid ranges specified for container and host Ports: {container} and {host}"
            )
    if proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f"invalid proto: {proto}")
    out = []
    for i in range(high - low + 1):
        host_port = str(host_low + i) if host else ""
        if low == high and host_low != host_high:
            host_port = f"{host_low}-{host_high}"
        out.append((f"{low + i}/{proto}", {"HostIp": ip, "HostPort": host_port}))
    return out


def devices(opts: Opts) -> list[dict[str, str]]:
    """``--device host[:container][:permissions]`` as HostConfig.Devices items."""
    out = []
    for raw in _many(opts, "device"):
        parts = raw.split(":")
        if len(parts) > 3 or not parts[0]:
            raise bad("device", raw, f"bad format for path: {raw}")
        mode, target = "rwm", parts[0]
        if len(parts) == 3 and not _device_mode(parts[2]):
            raise bad("device", raw, f"bad mode specified: {parts[2]}")
        if len(parts) == 3:
            mode, target = parts[2], parts[1]
        elif len(parts) == 2 and _device_mode(parts[1]):
            mode = parts[1]
        elif len(parts) == 2:
            target = parts[1]
        if not target.startswith("/"):
            raise bad("device", raw, f"{target} is not an absolute path")
        cleaned = len(parts) == 1 or (len(parts) == 2 and mode == parts[1])
        host = _clean(parts[0]) if cleaned else parts[0]
        target = _clean(target) if len(parts) < 3 else target
        out.append({"PathOnHost": host, "PathInContainer": target, "CgroupPermissions": mode})
    return out


def _clean(path: str) -> str:
    """A path as Go's ``path.Clean`` leaves it (no ``//`` kept at the start)."""
    return re.sub("^//", "/", os.path.normpath(path))


def _device_mode(mode: str) -> bool:
    return bool(mode) and set(mode) <= set("rwm") and len(set(mode)) == len(mode)


def ulimits(opts: Opts) -> list[dict[str, object]]:
    """``--ulimit name=soft[:hard]`` as HostConfig.Ulimits items, by name (the last one wins)."""
    found: dict[str, dict[str, object]] = {}
    for raw in _many(opts, "ulimit"):
        name, sep, values = raw.partition("=")
        if not sep:
            raise bad("ulimit", raw, f"invalid ulimit argument: {raw}")
        if name not in ULIMITS:
            raise bad("ulimit", raw, f"invalid ulimit type: {name}")
        soft_text, colon, hard_text = values.partition(":")
        for text in (hard_text, soft_text) if colon else (soft_text,):
            if not _INT.fullmatch(text):
                raise bad("ulimit", raw, f'strconv.ParseInt: parsing "{text}": invalid syntax')
        soft = int(soft_text)
        hard = int(hard_text) if colon else soft
        if soft > hard:
            reason = f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
            raise bad("ulimit", raw, reason)
        found[name] = {"Name": name, "Hard": hard, "Soft": soft}
    return [found[k] for k in sorted(found)]


def restart_policy(opts: Opts) -> dict[str, object]:
    """``--restart`` as RestartPolicy (the daemon judges the policy's name, as with docker)."""
    raw = str(opts.get("restart") or "no")
    name, colon, count = raw.partition(":")
    if colon and not name:
        raise bad("restart", raw, "invalid restart policy format: no policy provided before colon")
    if count and not _INT.fullmatch(count):
        reason = "invalid restart policy format: maximum retry count must be an integer"
        raise bad("restart", raw, reason)
    return {"Name": name, "MaximumRetryCount": int(count) if count else 0}


def _capabilities(opts: Opts, flag: str) -> list[str] | None:
    caps = {c.strip().upper() for c in _many(opts, flag)}
    named = {c if c == "ALL" or c.startswith("CAP_") else f"CAP_{c}" for c in caps}
    return sorted(named) or None


def _checked(opts: Opts, flag: str, check: Callable[[str], str]) -> list[str]:
    out = []
    for raw in _many(opts, flag):
        try:
            out.append(check(raw))
        except ValueError as exc:
            raise bad(flag, raw, str(exc)) from None
    return out


def _ip(raw: str) -> str:
    try:
        return str(ipaddress.ip_address(raw.strip()))
    except ValueError:
        raise ValueError(f"IP address is not correctly formatted: {raw}") from None


def _extra_host(raw: str) -> str:
    name, sep, address = raw.partition("=")
    if not sep:
        name, sep, address = raw.partition(":")
    if not sep or not name:
        raise ValueError(f"bad format for add-host: {json.dumps(raw)}")
    if address != "host-gateway":
        if len(address) > 2 and address[0] == "[" and address[-1] == "]":
            address = address[1:-1]
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"invalid IP address in add-host: {json.dumps(address)}") from None
    return f"{name}:{address}"


def _sysctl(raw: str) -> str:
    key, sep, _ = raw.partition("=")
    if sep and (key in SYSCTLS or key.startswith(("net.", "fs.mqueue."))):
        return raw
    raise ValueError(f"sysctl '{raw}' is not allowed")


def _link(raw: str) -> str:
    parts = raw.split(":")
    if len(parts) > 2:
        raise ValueError(f"bad format for links: {raw}")
    if "" in parts:
        raise ValueError("empty string specified for links")
    return raw


def _security_opt(raw: str) -> str:
    key, sep, value = raw.partition("=")
    if not sep and key != "no-new-privileges":
        key, sep, value = raw.partition(":")
    if (not sep or not value) and key != "no-new-privileges":
        raise ValueError(f"Invalid --security-opt: {json.dumps(raw)}")
    if key == "seccomp" and value not in ("builtin", "unconfined"):
        try:  # a profile file: docker sends its contents
            with open(value, encoding="utf-8") as f:
                profile = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(f"opening seccomp profile ({value}) failed: {exc}") from None
        return "seccomp=" + json.dumps(profile, separators=(",", ":"))
    return raw


def _namespace(opts: Opts, flag: str, allowed: Callable[[str], bool], what: str) -> str:
    value = str(opts.get(flag) or "")
    if not allowed(value):
        raise bad(flag, value, f"--{flag}: invalid {what} mode")
    return value


def _networks(opts: Opts) -> tuple[str, dict[str, object]]:
    names = _many(opts, "network")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise bad("network", dup, f'network "{dup}" is specified multiple times')
    builtin = {n in BUILTIN_NETWORKS or n.startswith("container:") for n in names}
    if len(builtin) > 1:
        reason = (
            "conflicting options: cannot attach both user-defined and non-user-defined"
            " network-modes"
        )
        raise bad("network", ",".join(names), reason)
    first = _endpoint_options(opts, names[0] if names else "default")
    if not names:
        return "default", {"default": {**ENDPOINT, **first}}
    if len(names) == 1:  # docker leaves out the endpoint of a lone network without options
        return names[0], {names[0]: {**ENDPOINT, **first}} if first else {}
    return names[0], {n: {**ENDPOINT, **(first if n == names[0] else {})} for n in names}


def _endpoint_options(opts: Opts, network: str) -> dict[str, object]:
    """What ``--ip``, ``--network-alias`` and ``--link`` set on the first network's endpoint (as
    docker's, ``--link`` only on a user-defined network; elsewhere it is a legacy link)."""
    user_defined = network not in BUILTIN_NETWORKS and not network.startswith("container:")
    aliases = _many(opts, "network_alias")
    if aliases and not user_defined:
        raise InvalidArgument("network-scoped aliases are only supported for user-defined networks")
    links = _checked(opts, "link", _link) if user_defined else []
    ip = str(opts.get("ip") or "")
    found = {"Aliases": aliases, "Links": links, "IPAMConfig": {"IPv4Address": ip} if ip else {}}
    return {k: v for k, v in found.items() if v}


def _attach(opts: Opts) -> tuple[bool, bool, bool]:
    streams = set()
    for raw in _many(opts, "attach"):
        if raw.lower() not in ("stdin", "stdout", "stderr"):
            raise bad("attach", raw, "valid streams are STDIN, STDOUT and STDERR")
        streams.add(raw.lower())
    if opts.get("detach"):
        if streams:
            raise InvalidArgument("conflicting options: cannot specify both --attach and --detach")
        return False, False, False
    stdin = "stdin" in streams or bool(opts.get("interactive"))
    if not streams:
        return stdin, True, True
    return stdin, "stdout" in streams, "stderr" in streams


def create_query(opts: Opts) -> dict[str, str]:
    """The query of ``POST /containers/create``: ``name`` and ``platform`` when given."""
    platform = str(opts.get("platform") or "")
    if platform and platform.split("/")[0].lower() != "linux":
        raise bad("platform", platform, "only linux containers are supported")
    return {k: v for k, v in (("name", str(opts.get("name") or "")), ("platform", platform)) if v}


def to_create_body(
    opts: Opts,
    image: str,
    command: tuple[str, ...],
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> dict[str, object]:
    """Docker's ``POST /containers/create`` body for run/create flags *opts* (keyword args of a
    command decorated with ``run_options``; absent keys take the flag's default), as docker
    CLI 28 builds it. *environ* (for ``-e KEY``) and *cwd* (for ``./`` paths) default to this
    process's. ``console_size`` ([rows, columns]) may be set by a caller on a terminal."""
    environ = os.environ if environ is None else environ
    cwd = os.getcwd() if cwd is None else cwd
    create_query(opts)
    if opts.get("rm") and restart_policy(opts)["Name"] not in ("no", ""):
        raise InvalidArgument("conflicting options: cannot specify both --restart and --rm")
    stdin, stdout, stderr = _attach(opts)
    binds, anonymous = volumes(opts, cwd)
    exposed, bindings = ports(opts)
    mode, endpoints = _networks(opts)
    log_opts = _kv_map(_many(opts, "log_opt"))
    if opts.get("log_driver") == "none" and log_opts:
        raise bad(
            "log_opt", ",".join(_many(opts, "log_opt")), "invalid logging opts for driver none"
        )
    entrypoint = opts.get("entrypoint")
    security = _checked(opts, "security_opt", _security_opt)
    unconfined = "systempaths=unconfined" in security
    config: dict[str, object] = {
        "Hostname": opts.get("hostname") or "",
        "Domainname": opts.get("domainname") or "",
        "User": opts.get("user") or "",
        "AttachStdin": stdin, "AttachStdout": stdout, "AttachStderr": stderr,
        "Tty": bool(opts.get("tty")),
        "OpenStdin": bool(opts.get("interactive")),
        "StdinOnce": bool(opts.get("interactive")) and stdin,
        "Env": env_list(opts, environ),
        "Cmd": list(command) or None,
        "Image": image,
        "Volumes": anonymous,
        "WorkingDir": opts.get("workdir") or "",
        "Entrypoint": None if entrypoint is None else [str(entrypoint)],
        "OnBuild": None,
        "Labels": labels(opts),
    }  # fmt: skip
    if exposed:
        config["ExposedPorts"] = exposed
    if opts.get("stop_signal") is not None:
        config["StopSignal"] = str(opts["stop_signal"])
    if opts.get("stop_timeout") not in (None, ""):
        config["StopTimeout"] = _int(opts, "stop_timeout")
    host: dict[str, object] = {
        "Binds": binds, "ContainerIDFile": "",
        "LogConfig": {"Type": opts.get("log_driver") or "", "Config": log_opts},
        "NetworkMode": mode, "PortBindings": bindings, "RestartPolicy": restart_policy(opts),
        "AutoRemove": bool(opts.get("rm")), "VolumeDriver": "",
        "VolumesFrom": _many(opts, "volumes_from") or None,
        "ConsoleSize": list(opts.get("console_size") or (0, 0)) if opts.get("tty") else [0, 0],
        "CapAdd": _capabilities(opts, "cap_add"), "CapDrop": _capabilities(opts, "cap_drop"),
        "CgroupnsMode": "",
        "Dns": _checked(opts, "dns", _ip), "DnsOptions": _many(opts, "dns_option"),
        "DnsSearch": _many(opts, "dns_search"),
        "ExtraHosts": _checked(opts, "add_host", _extra_host) or None,
        "GroupAdd": _many(opts, "group_add") or None,
        "IpcMode": opts.get("ipc") or "", "Cgroup": "",
        "Links": _checked(opts, "link", _link) or None, "OomScoreAdj": 0,
        "PidMode": _namespace(opts, "pid", lambda v: v in ("", "host") or (
            v.startswith("container:") and len(v) > 10), "PID"),
        "Privileged": bool(opts.get("privileged")),
        "PublishAllPorts": bool(opts.get("publish_all")),
        "ReadonlyRootfs": bool(opts.get("read_only")),
        "SecurityOpt": [s for s in security if s != "systempaths=unconfined"] or None,
        "UTSMode": _namespace(opts, "uts", lambda v: v in ("", "host"), "UTS"),
        "UsernsMode": "", "ShmSize": _size(opts, "shm_size"), "Isolation": "",
        "CpuShares": _int(opts, "cpu_shares"), "Memory": _size(opts, "memory"),
        "NanoCpus": nano_cpus(opts), "CgroupParent": opts.get("cgroup_parent") or "",
        "BlkioWeight": 0, "BlkioWeightDevice": [], "BlkioDeviceReadBps": [],
        "BlkioDeviceWriteBps": [], "BlkioDeviceReadIOps": [], "BlkioDeviceWriteIOps": [],
        "CpuPeriod": _int(opts, "cpu_period"), "CpuQuota": _int(opts, "cpu_quota"),
        "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0,
        "CpusetCpus": opts.get("cpuset_cpus") or "", "CpusetMems": opts.get("cpuset_mems") or "",
        "Devices": devices(opts), "DeviceCgroupRules": None, "DeviceRequests": None,
        "MemoryReservation": _size(opts, "memory_reservation"),
        "MemorySwap": _size(opts, "memory_swap"), "MemorySwappiness": -1,
        "OomKillDisable": False, "PidsLimit": _int(opts, "pids_limit"),
        "Ulimits": ulimits(opts), "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0,
        "IOMaximumBandwidth": 0,
        "MaskedPaths": [] if unconfined else None, "ReadonlyPaths": [] if unconfined else None,
    }  # fmt: skip
    tmpfs = {path: options for path, _, options in (t.partition(":") for t in _many(opts, "tmpfs"))}
    sysctls = _kv_map(_checked(opts, "sysctl", _sysctl))
    mounts = [mount(spec, cwd) for spec in _many(opts, "mount")]
    extra = {"Tmpfs": tmpfs, "Sysctls": sysctls, "Mounts": mounts}
    host.update({k: v for k, v in extra.items() if v})
    if opts.get("init") is not None:
        host["Init"] = bool(opts["init"])
    return {**config, "HostConfig": host, "NetworkingConfig": {"EndpointsConfig": endpoints}}


def to_update_body(opts: Opts) -> dict[str, object]:
    """Docker's ``POST /containers/{id}/update`` body for ``update`` flags *opts* (``memory``,
    ``memory_swap``, ``memory_reservation``, ``cpus``, ``cpu_shares``, ``cpu_period``,
    ``cpu_quota``, ``cpuset_cpus``, ``cpuset_mems``, ``pids_limit``, ``restart``), as docker CLI
    28 builds it: unset limits are 0 (unchanged), an unset ``--restart`` has the name ""."""
    given = opts.get("restart") not in (None, "")
    pids = None if opts.get("pids_limit") in (None, "") else _int(opts, "pids_limit")
    return {
        "CpuShares": _int(opts, "cpu_shares"), "Memory": _size(opts, "memory"),
        "NanoCpus": nano_cpus(opts), "CgroupParent": "", "BlkioWeight": 0,
        "BlkioWeightDevice": None, "BlkioDeviceReadBps": None, "BlkioDeviceWriteBps": None,
        "BlkioDeviceReadIOps": None, "BlkioDeviceWriteIOps": None,
        "CpuPeriod": _int(opts, "cpu_period"), "CpuQuota": _int(opts, "cpu_quota"),
        "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0,
        "CpusetCpus": opts.get("cpuset_cpus") or "", "CpusetMems": opts.get("cpuset_mems") or "",
        "Devices": None, "DeviceCgroupRules": None, "DeviceRequests": None,
        "MemoryReservation": _size(opts, "memory_reservation"),
        "MemorySwap": _size(opts, "memory_swap"), "MemorySwappiness": None,
        "OomKillDisable": None, "PidsLimit": pids, "Ulimits": None, "CpuCount": 0,
        "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
        "RestartPolicy": restart_policy(opts) if given else {"Name": "", "MaximumRetryCount": 0},
    }  # fmt: skip
