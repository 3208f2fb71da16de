"""Container configuration: Docker's create body validated, and the image's defaults merged in.

Vocabulary (Docker's): a container's *Config* is Docker's ContainerConfig (command, env, user,
labels, …); its *HostConfig* says how the host runs it (mounts, limits, namespaces, security);
*NetworkingConfig* holds per-network endpoint settings. A container stores Config (after
``merge_image``) and HostConfig (after ``parse_create`` filled dockerd's defaults) exactly in
Docker's JSON shapes, so inspect returns them as they are.

Lifecycle: create calls ``parse_create`` on the body, ``merge_image`` with the image's config,
``check_name``/``random_name`` for the name and ``plan_mounts`` for the mounts; start writes the
network files (``hostname_for``, ``hosts_file``, ``resolv_conf``) and calls ``build_spec``;
``docker exec`` calls ``exec_process``; ``docker update`` calls ``parse_update``.
Every problem raises InvalidArgument (or NotSupported) whose message starts with the field's
path: ``HostConfig.Memory: Minimum memory limit allowed is 6MB``.
"""

from __future__ import annotations

import ipaddress
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from engine.errors import InvalidArgument
from jobs.containermounts import MountPlan, destination
from jobs.containernames import NAME_PATTERN, check_name, random_name
from jobs.containerspec import build_spec, exec_process
from jobs.hostconfig import parse_host_config, parse_update
from jobs.hostresources import build_resources
from jobs.jsonfields import Fields, invalid, unsupported
from jobs.links import parse_link
from jobs.mountplan import docker_mounts, plan_mounts, spec_mounts
from jobs.networkfiles import hostname_for, hosts_file, resolv_conf

__all__ = [
    "NAME_PATTERN",
    "CreateRequest",
    "MountPlan",
    "build_resources",
    "build_spec",
    "check_name",
    "docker_mounts",
    "exec_process",
    "hostname_for",
    "hosts_file",
    "merge_image",
    "parse_create",
    "parse_update",
    "plan_mounts",
    "random_name",
    "resolv_conf",
    "signal_number",
    "spec_mounts",
]

_LABEL: Final = r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOSTNAME: Final = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_PORT: Final = re.compile(r"([0-9]{1,5})(-([0-9]{1,5}))?(/(tcp|udp|sctp))?")
_HEALTH_TESTS: Final = frozenset({"NONE", "CMD", "CMD-SHELL"})
_SIGNALS: Final = {
    **{s.name.removeprefix("SIG"): int(s) for s in signal.Signals},
    **{f"RTMIN+{n}": int(signal.SIGRTMIN) + n for n in range(1, 16)},
    **{f"RTMAX-{n}": int(signal.SIGRTMAX) - n for n in range(1, 15)},
}
# ContainerConfig's fields in Go's order; the *-marked ones are omitted when empty (omitempty).
_ORDER: Final = (
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "*ExposedPorts",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "*Healthcheck",
    "*ArgsEscaped",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "*NetworkDisabled",
    "*MacAddress",
    "OnBuild",
    "Labels",
    "*StopSignal",
    "*StopTimeout",
    "*Shell",
)


MAC_DERIVED: Final = (
    "custom MAC addresses are not supported: a container's MAC is derived from its IP"
)


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """A validated create body: Config as given, HostConfig with defaults, NetworkingConfig."""

    config: dict[str, object]
    host_config: dict[str, object]
    networking: dict[str, object]


def signal_number(text: str) -> int:
    """A signal by name (``SIGTERM``, ``term``, ``RTMIN+3``) or number; InvalidArgument if none."""
    word = text.strip()
    if re.fullmatch(r"[0-9]{1,3}", word) and 0 < int(word) <= int(signal.SIGRTMAX):
        return int(word)
    number = _SIGNALS.get(word.upper().removeprefix("SIG"))
    if number is None:
        raise InvalidArgument(f"Invalid signal: {text}")
    return number


def _ordered(values: Mapping[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key in _ORDER:
        name = key.lstrip("*")
        value = values.get(name)
        # omitempty: a null, false or empty value is left out; a number (StopTimeout) is kept
        empty = value is None or (not value and isinstance(value, str | bool | dict | list))
        if not key.startswith("*") or not empty:
            out[name] = value
    return out


def _hostname(c: Fields) -> None:
    hostname, domainname = c.text("Hostname"), c.text("Domainname")
    if len(hostname.encode()) > 64:
        raise invalid(c.at("Hostname"), f'hostname "{hostname}" is too long (maximum 64 bytes)')
    if hostname and not _HOSTNAME.fullmatch(hostname):
        raise invalid(c.at("Hostname"), f"invalid hostname format: {hostname}")
    if domainname and (len(domainname) > 255 or not _HOSTNAME.fullmatch(domainname)):
        raise invalid(c.at("Domainname"), f"invalid domainname format: {domainname}")


def _env(c: Fields) -> list[str] | None:
    env = c.texts("Env")
    for i, entry in enumerate(env or []):
        if not entry.partition("=")[0] or "\x00" in entry:
            raise invalid(f"{c.at('Env')}[{i}]", f"invalid environment variable: {entry}")
    return env


def _healthcheck(c: Fields) -> dict[str, object] | None:
    if not c.given("Healthcheck"):
        return None
    h = c.obj("Healthcheck")
    test = h.strslice("Test") or []
    if test and test[0] not in _HEALTH_TESTS:
        raise invalid(h.at("Test"), f"unknown healthcheck type: {test[0]}")
    for key in ("Interval", "Timeout", "StartPeriod", "StartInterval"):
        value = h.integer(key)
        if value and value < 1_000_000:
            raise invalid(h.at(key), f"{key} in Healthcheck cannot be less than 1ms")
    if h.integer("Retries") < 0:
        raise invalid(h.at("Retries"), "Retries in Healthcheck cannot be negative")
    return dict(h.raw)


def _exposed_ports(c: Fields) -> dict[str, object] | None:
    if not c.given("ExposedPorts"):
        return None
    ports = c.obj("ExposedPorts")
    out: dict[str, object] = {}
    for spec in ports.raw:
        m = _PORT.fullmatch(spec)
        if not m or int(m[1]) > 65535 or (m[3] and not int(m[1]) <= int(m[3]) <= 65535):
            raise invalid(ports.at(spec), f"invalid port specification: {spec}")
        out[spec if m[4] else f"{spec}/tcp"] = {}
    return out


def _volumes(c: Fields) -> dict[str, object] | None:
    if not c.given("Volumes"):
        return None
    volumes = c.obj("Volumes")
    for target in volumes.raw:
        destination(target, volumes.at(target))
    return {target: {} for target in volumes.raw}


def parse_config(c: Fields) -> dict[str, object]:
    """The Config part of a create body (Docker's ContainerConfig), validated, in Go's order."""
    _hostname(c)
    user, workdir = c.text("User"), c.text("WorkingDir")
    if any(ch in user for ch in "\x00\n"):
        raise invalid(c.at("User"), f"invalid user: {user!r}")
    if workdir and not workdir.startswith("/"):
        raise invalid(
            c.at("WorkingDir"),
            f"the working directory '{workdir}' is invalid, it needs to be an absolute path",
        )
    stop_signal = c.text("StopSignal")
    if stop_signal:
        try:
            signal_number(stop_signal)
        except InvalidArgument as exc:
            raise invalid(c.at("StopSignal"), str(exc)) from None
    if c.text("MacAddress"):
        raise unsupported(c.at("MacAddress"), MAC_DERIVED)
    values: dict[str, object] = {
        key: c.text(key) for key in ("Hostname", "Domainname", "User", "Image", "WorkingDir")
    }
    for key in (
        "AttachStdin",
        "AttachStdout",
        "AttachStderr",
        "Tty",
        "OpenStdin",
        "StdinOnce",
        "ArgsEscaped",
        "NetworkDisabled",
    ):
        values[key] = c.flag(key)
    values.update(
        ExposedPorts=_exposed_ports(c),
        Env=_env(c),
        Cmd=c.strslice("Cmd"),
        Healthcheck=_healthcheck(c),
        Volumes=_volumes(c),
        Entrypoint=c.strslice("Entrypoint"),
        OnBuild=c.texts("OnBuild"),
        Labels=c.text_map("Labels"),
        StopSignal=stop_signal,
        StopTimeout=c.opt_integer("StopTimeout", low=-1),
        Shell=c.strslice("Shell"),
    )
    return _ordered(values)


def _networking(raw: object) -> dict[str, object]:
    n = Fields(raw, "NetworkingConfig")
    endpoints = n.obj("EndpointsConfig")
    for name, settings in endpoints.raw.items():
        check_endpoint(settings, endpoints.at(name))
    return dict(n.raw)


def check_endpoint(raw: object, at: str) -> dict[str, object]:
    """An ``EndpointSettings`` as configured (create, ``network connect``): Aliases, Links,
    IPAMConfig.IPv4Address, MacAddress, DriverOpts; InvalidArgument naming the field."""
    e = Fields(raw, at)
    aliases = e.texts("Aliases")
    for i, alias in enumerate(aliases or []):
        if not alias or any(c.isspace() or c == "/" for c in alias):
            raise invalid(f"{e.at('Aliases')}[{i}]", f"invalid alias: {alias!r}")
    links = e.texts("Links")
    for i, spec in enumerate(links or []):
        parse_link(spec, f"{e.at('Links')}[{i}]")
    ipam = e.obj("IPAMConfig")
    address = ipam.text("IPv4Address")
    if address:
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise invalid(ipam.at("IPv4Address"), f"invalid IPv4 address: {address}") from None
    if ipam.text("IPv6Address"):
        raise unsupported(ipam.at("IPv6Address"), "IPv6 is not supported")
    if e.text("MacAddress"):
        raise unsupported(e.at("MacAddress"), MAC_DERIVED)
    return {
        "IPAMConfig": {"IPv4Address": address} if address else None,
        "Links": links or None,
        "Aliases": aliases or None,
        "MacAddress": "",
        "DriverOpts": e.text_map("DriverOpts") or None,
    }


def parse_create(body: Mapping[str, object]) -> CreateRequest:
    """Validate a ``POST /containers/create`` body; unknown keys are ignored, as dockerd does."""
    top = Fields(body, "Config")
    config = parse_config(top)
    host_config = parse_host_config(body.get("HostConfig"), config)
    networking = _networking(body.get("NetworkingConfig"))
    return CreateRequest(config, host_config, networking)


def merge_image(
    config: Mapping[str, object], image_config: Mapping[str, object]
) -> dict[str, object]:
    """*config* with the image's defaults filled in, as Docker's runconfig merge; InvalidArgument
    ("No command specified") if neither has a command."""
    user, image = dict(config), Fields(image_config, "image config")
    merged: dict[str, object] = dict(user)
    for key in ("User", "WorkingDir", "StopSignal"):
        if not user.get(key):
            merged[key] = image.text(key)
    ports = dict(image.obj("ExposedPorts").raw)
    ports.update(_mapping(user.get("ExposedPorts")))
    merged["ExposedPorts"] = ports or None
    env = list(_strings(user.get("Env")))
    keys = {e.partition("=")[0] for e in env}
    env += [e for e in image.texts("Env") or [] if e.partition("=")[0] not in keys]
    merged["Env"] = env or None
    merged["Labels"] = {**(image.text_map("Labels") or {}), **_mapping(user.get("Labels"))}
    volumes = {**image.obj("Volumes").raw, **_mapping(user.get("Volumes"))}
    merged["Volumes"] = {target: {} for target in volumes} or None
    entrypoint, cmd = user.get("Entrypoint"), user.get("Cmd")
    if entrypoint is None:
        merged["Entrypoint"] = image.strslice("Entrypoint")
    if not entrypoint:
        if not cmd:  # the image's command, unless the user gave an entrypoint of their own
            merged["Cmd"], merged["ArgsEscaped"] = image.strslice("Cmd"), image.flag("ArgsEscaped")
    elif entrypoint == [""]:  # "--entrypoint ''": no entrypoint at all
        merged["Entrypoint"] = []
    merged["Healthcheck"] = _merge_health(user.get("Healthcheck"), image)
    if not merged.get("Entrypoint") and not merged.get("Cmd"):
        raise InvalidArgument("No command specified")
    return _ordered(merged)


def _merge_health(mine: object, image: Fields) -> object:
    theirs = image.obj("Healthcheck").raw if image.given("Healthcheck") else None
    if not isinstance(mine, Mapping) or theirs is None:
        return mine if mine is not None else theirs
    merged = dict(mine)
    for key in ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
        if not merged.get(key) and theirs.get(key):
            merged[key] = theirs[key]
    return merged


def _mapping(value: object) -> dict[str, object]:
    return dict(value) if isinstance(value, Mapping) else {}


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
