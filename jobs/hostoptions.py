"""HostConfig options with small grammars of their own: SecurityOpt, Sysctls, RestartPolicy,
LogConfig, Dns*, ExtraHosts.

Each parser checks its field as dockerd does and returns the value to store; messages start with
the field's path (``HostConfig.SecurityOpt[0]: invalid --security-opt: "x"``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from engine.errors import InvalidArgument, NotSupported
from jobs.jsonfields import Fields, invalid, unsupported

_LABEL: Final = r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN: Final = re.compile(rf"({_LABEL}\.)*{_LABEL}")
_SYSCTL: Final = re.compile(r"[a-z0-9_]+(\.[A-Za-z0-9_/-]+)+")
_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})
POLICIES: Final = ("no", "always", "on-failure", "unless-stopped")


@dataclass(frozen=True, slots=True)
class SecurityOptions:
    """What ``HostConfig.SecurityOpt`` asks for, of the options this engine accepts."""

    no_new_privileges: bool = False
    unconfined_paths: bool = False  # systempaths=unconfined: no masked or read-only /proc paths


def security_options(opts: Sequence[str], path: str = "HostConfig.SecurityOpt") -> SecurityOptions:
    """Parse SecurityOpt; InvalidArgument for anything but the accepted options.

    Accepted: no-new-privileges[=|:bool], label=disable, apparmor=unconfined,
    seccomp=unconfined (there is no seccomp filter to lift yet, so it changes nothing), and
    systempaths=unconfined."""
    nnp = paths = False
    for i, opt in enumerate(opts):
        key, _, value = opt.partition("=") if "=" in opt else opt.partition(":")
        if opt == "no-new-privileges" or (key == "no-new-privileges" and value in _TRUE):
            nnp = True
        elif key == "no-new-privileges" and value in _FALSE:
            nnp = False
        elif key == "systempaths" and value == "unconfined":
            paths = True
        elif opt == "disable" or (key, value) in (
            ("label", "disable"),
            ("apparmor", "unconfined"),
            ("seccomp", "unconfined"),
        ):
            continue
        else:
            raise invalid(f"{path}[{i}]", f'invalid --security-opt: "{opt}"')
    return SecurityOptions(nnp, paths)


def check_sysctls(sysctls: Mapping[str, str], network: str, ipc: str) -> None:
    """InvalidArgument unless every sysctl is namespaced and its namespace is the container's."""
    for key, value in sysctls.items():
        own_ipc = key.startswith(("kernel.shm", "kernel.msg", "fs.mqueue.")) or key == "kernel.sem"
        own_net = key.startswith("net.")
        own_netns = network != "host" and not network.startswith("container:")
        allowed = (own_ipc and ipc != "host") or (own_net and own_netns)
        if not _SYSCTL.fullmatch(key) or not allowed:
            raise invalid(f"HostConfig.Sysctls[{key}]", f"sysctl '{key}' is not allowed")
        # "+" or "=" would smuggle a second sysctl through a naive writer (CVE-2022-0811).
        if any(c in value for c in "+=\n\r\x00"):
            raise invalid(f"HostConfig.Sysctls[{key}]", f"sysctl '{key}={value}' is not allowed")


def restart_policy(f: Fields, auto_remove: bool) -> dict[str, object]:
    """RestartPolicy as stored (an empty name is ``no``); AutoRemove allows only ``no``."""
    name, count = f.text("Name"), f.integer("MaximumRetryCount")
    if name in ("no", "always", "unless-stopped") and count:
        negative = " and cannot be negative" if count < 0 else ""
        raise invalid(
            f.at("MaximumRetryCount"),
            "invalid restart policy: maximum retry count "
            f"can only be used with 'on-failure'{negative}",
        )
    if name == "on-failure" and count < 0:
        raise invalid(
            f.at("MaximumRetryCount"),
            "invalid restart policy: maximum retry count cannot be negative",
        )
    if name not in ("", *POLICIES):
        raise invalid(
            f.at("Name"),
            f"invalid restart policy: unknown policy '{name}'; use one "
            "of 'no', 'always', 'on-failure', or 'unless-stopped'",
        )
    if auto_remove and name not in ("", "no"):
        raise invalid(f.path, "--restart and --rm are conflicting")
    return {"Name": name or "no", "MaximumRetryCount": count if name else 0}


def log_config(f: Fields) -> dict[str, object]:
    """LogConfig as stored: ``json-file`` (its options checked by the driver) or ``none``."""
    kind, opts = f.text("Type"), f.text_map("Config") or {}
    if kind in ("", "json-file"):
        from drivers.logging import jsonfile  # the daemon's one log driver

        try:
            jsonfile.validate_options(opts)
        except InvalidArgument as exc:
            raise invalid(f.at("Config"), str(exc)) from exc
        except NotSupported as exc:
            raise unsupported(f.at("Config"), str(exc)) from exc
    elif kind != "none":
        raise unsupported(f.at("Type"), f"logging driver {kind} is not supported")
    return {"Type": kind or "json-file", "Config": opts}


def dns_settings(hc: Fields) -> tuple[list[str] | None, list[str] | None, list[str] | None]:
    """Dns (IP addresses), DnsSearch (domains, or "." for none) and DnsOptions, checked."""
    servers, search, options = hc.texts("Dns"), hc.texts("DnsSearch"), hc.texts("DnsOptions")
    for i, server in enumerate(servers or []):
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise invalid(f"HostConfig.Dns[{i}]", f"{server} is not an ip address") from None
    for i, domain in enumerate(search or []):
        if domain != "." and (len(domain) > 255 or not _DOMAIN.fullmatch(domain.rstrip("."))):
            raise invalid(f"HostConfig.DnsSearch[{i}]", f"{domain} is not a valid domain")
    for i, option in enumerate(options or []):
        if not option or any(c.isspace() for c in option):
            raise invalid(f"HostConfig.DnsOptions[{i}]", f"invalid DNS option: {option!r}")
    return servers, search, options


def extra_hosts(hc: Fields) -> list[str] | None:
    """ExtraHosts entries (``name:ip`` or ``name=ip``), checked."""
    hosts = hc.texts("ExtraHosts")
    for i, entry in enumerate(hosts or []):
        name, sep, address = entry.partition("=") if "=" in entry else entry.partition(":")
        if address == "host-gateway":  # the default bridge's gateway, filled in at start
            address = "0.0.0.0"
        if not sep or not name or not _DOMAIN.fullmatch(name):
            raise invalid(f"HostConfig.ExtraHosts[{i}]", f'bad format for add-host: "{entry}"')
        try:
            ipaddress.ip_address(address.removeprefix("[").removesuffix("]"))
        except ValueError:
            raise invalid(
                f"HostConfig.ExtraHosts[{i}]", f'invalid IP address in add-host: "{address}"'
            ) from None
    return hosts
