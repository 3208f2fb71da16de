"""Published ports: Docker's ``HostConfig.PortBindings`` checked; the shapes inspect and ps show.

Vocabulary (Docker's): a *port key* names a container port and its protocol, ``"80/tcp"`` (a key
without ``/proto`` is tcp). ``Config.ExposedPorts`` lists the keys a container *exposes*;
``HostConfig.PortBindings`` maps a key to the host addresses it is *published* on, each
``{"HostIp": "", "HostPort": "8080"}`` ("" host IP = the daemon's default address, "" or "0" host
port = any free port, ``"8000-8010"`` = any free port of that range). With
``HostConfig.PublishAllPorts`` every exposed port (and every key of PortBindings) that has no
binding is published on a free port of the default address.

Lifecycle: create calls ``parse_port_bindings`` to refuse a bad body early; start calls it again
to get the ``Binding`` list it hands to the port proxy (``jobs/portproxy.py``), which reports the
``PortMap`` actually bound; inspect renders those with ``port_map_json`` and ``GET
/containers/json`` with ``ps_ports``. Errors name the field as Docker prints the key:
``HostConfig.PortBindings["80/tcp"][0].HostPort: invalid port specification: "x"``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from drivers.network.base import PortMap, Proto
from jobs.jsonfields import Fields, invalid, type_name, unsupported

BINDINGS_PATH: Final = "HostConfig.PortBindings"
EXPOSED_PATH: Final = "Config.ExposedPorts"
PUBLISH_ALL_PATH: Final = "HostConfig.PublishAllPorts"
ANY_IPV4: Final = "0.0.0.0"
PROXIED: Final = ("tcp", "udp")  # what the userland proxy forwards
_PROTOS: Final[dict[str, Proto]] = {"tcp": "tcp", "udp": "udp", "sctp": "sctp"}
_NUMBER: Final = re.compile(r"[0-9]{1,5}")
_RANGE: Final = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


@dataclass(frozen=True, slots=True)
class Binding:
    """One host address a container port is published on (host_port 0 = any free port).

    ``host_port_end`` is 0 for one host port, else the last port of the range
    ``host_port..host_port_end`` the proxy may choose a free port from.
    """

    proto: Proto
    container_port: int
    host_ip: str
    host_port: int
    host_port_end: int = 0

    @property
    def key(self) -> str:
        """The port key, ``"80/tcp"``."""
        return f"{self.container_port}/{self.proto}"

    def mapped(self, container_ip: str, host_port: int) -> PortMap:
        """The PortMap of this binding once the proxy bound *host_port*."""
        return PortMap(self.proto, self.host_ip, host_port, container_ip, self.container_port)


def split_key(key: str, path: str, ranges: bool = False) -> tuple[Proto, int, int]:
    """A port key as (proto, first port, last port); InvalidArgument naming *path* if malformed."""
    text, slash, proto_text = key.partition("/")
    proto = _PROTOS.get(proto_text if slash else "tcp")
    if proto is None:
        raise invalid(path, f"invalid proto: {proto_text}")
    m = _RANGE.fullmatch(text)
    if m is None or (m[2] is not None and not ranges):
        raise invalid(path, f'invalid port specification: "{text}"')
    low = int(m[1])
    high = low if m[2] is None else int(m[2])
    if not 1 <= low <= high <= 65535:
        raise invalid(path, f'invalid port specification: "{text}"')
    return proto, low, high


def _host_port(text: str, path: str) -> tuple[int, int]:
    """HostPort as (port, range end or 0); "" is 0, any free port."""
    if not text:
        return 0, 0
    m = _RANGE.fullmatch(text)
    low = int(m[1]) if m else -1
    high = int(m[2]) if m and m[2] is not None else low
    if m is None or not 0 <= low <= high <= 65535 or (low == 0 and high != 0):
        raise invalid(path, f'invalid port specification: "{text}"')
    return low, 0 if high == low else high


def _host_ip(text: str, path: str) -> str:
    if text:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            raise invalid(path, f"invalid IP address: {text}") from None
    return text


def _bindings_of(key: str, value: object, default_ip: str) -> list[Binding]:
    path = f'{BINDINGS_PATH}["{key}"]'
    proto, port, _ = split_key(key, path)
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise invalid(path, f"expected array, got {type_name(value)}")
    out: list[Binding] = []
    for i, raw in enumerate(value):
        b = Fields(raw, f"{path}[{i}]")
        ip = _host_ip(b.text("HostIp"), b.at("HostIp"))
        low, high = _host_port(b.text("HostPort"), b.at("HostPort"))
        out.append(Binding(proto, port, ip or default_ip, low, high))
    if out and proto not in PROXIED:
        raise unsupported(path, f"{proto} ports cannot be published: only tcp and udp are")
    return out


def exposed_keys(exposed: Iterable[str], path: str = EXPOSED_PATH) -> list[tuple[Proto, int]]:
    """The (proto, port) pairs of ExposedPorts keys, ranges expanded."""
    out: list[tuple[Proto, int]] = []
    for key in exposed:
        proto, low, high = split_key(key, f'{path}["{key}"]', ranges=True)
        out.extend((proto, port) for port in range(low, high + 1))
    return out


def parse_port_bindings(
    raw: object, exposed: Mapping[str, object], publish_all: bool, default_ip: str = ""
) -> list[Binding]:
    """The bindings of a create body, sorted by (container port, proto); errors name the field."""
    found: dict[tuple[Proto, int], list[Binding]] = {}
    for proto, port in exposed_keys(exposed):
        found.setdefault((proto, port), [])
    for key, value in Fields(raw, BINDINGS_PATH).raw.items():
        proto, port, _ = split_key(key, f'{BINDINGS_PATH}["{key}"]')
        found.setdefault((proto, port), []).extend(_bindings_of(key, value, default_ip))
    out: list[Binding] = []
    for (proto, port), bindings in sorted(found.items(), key=lambda item: (item[0][1], item[0][0])):
        if not bindings and publish_all:
            if proto not in PROXIED:
                raise unsupported(
                    PUBLISH_ALL_PATH,
                    f"cannot publish {port}/{proto}: only tcp and udp ports can be",
                )
            bindings = [Binding(proto, port, default_ip, 0)]
        out.extend(bindings)
    return out


def _published(
    exposed: Iterable[str], published: Iterable[PortMap]
) -> dict[tuple[int, Proto], list[PortMap]]:
    ports: dict[tuple[int, Proto], list[PortMap]] = {}
    for proto, port in exposed_keys(exposed):
        ports.setdefault((port, proto), [])
    for pm in published:
        ports.setdefault((pm.container_port, pm.proto), []).append(pm)
    return dict(sorted(ports.items()))


def port_map_json(
    exposed: Iterable[str], published: Iterable[PortMap]
) -> dict[str, list[dict[str, str]] | None]:
    """Inspect's ``NetworkSettings.Ports``: every exposed port, null when it is not published."""
    return {
        f"{port}/{proto}": [
            {"HostIp": pm.host_ip or ANY_IPV4, "HostPort": str(pm.host_port)} for pm in pms
        ]
        or None
        for (port, proto), pms in _published(exposed, published).items()
    }


def ps_ports(exposed: Iterable[str], published: Iterable[PortMap]) -> list[dict[str, object]]:
    """``GET /containers/json``'s ``Ports``: one entry per binding, bare entries for the rest."""
    out: list[dict[str, object]] = []
    for (port, proto), pms in _published(exposed, published).items():
        if not pms:
            out.append({"PrivatePort": port, "Type": proto})
        for pm in sorted(pms, key=lambda pm: (pm.host_port, pm.host_ip)):
            out.append(
                {
                    "IP": pm.host_ip or ANY_IPV4,
                    "PrivatePort": port,
                    "PublicPort": pm.host_port,
                    "Type": proto,
                }
            )
    return out
