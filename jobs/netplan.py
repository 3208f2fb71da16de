"""A container's network plan for one start, and its network files.

Vocabulary: a container's *mode* is its ``HostConfig.NetworkMode`` resolved (``default`` is the
daemon's default network): ``host``, ``none``, ``container:<x>`` (joins x's namespace), or a
bridge network's name, in which case ``Container.networks`` lists every network it is
connected to, its mode's first. The *plan* says which namespace the start makes or joins, which
networks it gets an interface on (``eth0`` first), and what its legacy links add: variables,
``/etc/hosts`` lines, and the children they point at (which must be running).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from engine.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from graph.containers import Container, write_text
from graph.networks import NetworkRecord
from jobs import links as linking
from jobs.networkfiles import hostname_for, hosts_file, resolv_conf

if TYPE_CHECKING:
    from jobs.netcontroller import NetworkController

DNS_ADDRESS: Final = ("127.0.0.11", 53)


@dataclass
class Plan:
    """How a container's network namespace is made for one start."""

    sandbox: str  # "host", "new" or "join"
    join: dict[str, str] = field(default_factory=dict)  # ns kind → /proc/<pid>/ns/<kind>
    networks: list[tuple[NetworkRecord, dict[str, Any]]] = field(default_factory=list)
    env: list[str] = field(default_factory=list)  # link variables
    hosts: list[tuple[str, str]] = field(default_factory=list)  # link entries (ip, names)
    links: list[tuple[Container, str]] = field(default_factory=list)  # (child, alias)
    other: str = ""  # the container whose namespace a "join" enters


def initial_networks(
    net: NetworkController, mode: str, endpoints: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The networks a new container is connected to, from its mode and NetworkingConfig's
    EndpointsConfig (each checked to exist; NotFound names a missing one)."""
    resolved = net.resolve_mode(mode)
    if resolved.startswith("container:"):
        if endpoints:
            raise InvalidArgument(
                "NetworkingConfig: a container sharing another container's network "
                "namespace cannot be connected to any network"
            )
        return {}
    first = net.store.get(resolved)
    out: dict[str, dict[str, Any]] = {}
    given = {net.resolve_mode(k) if k == "default" else k: dict(v)
             for k, v in endpoints.items()}  # fmt: skip
    out[first.name] = {**given.pop(mode, given.pop(resolved, {})), "NetworkID": first.id}
    for name, settings in given.items():
        record = net.store.get(name)
        if first.driver != "bridge" or record.driver != "bridge":
            raise InvalidArgument(
                f"NetworkingConfig.EndpointsConfig.{name}: a container on the {first.name} "
                "network cannot be connected to other networks"
            )
        out[record.name] = {**settings, "NetworkID": record.id}
    for name, settings in out.items():
        record = net.store.get(name)
        if settings.get("Aliases") and (record.predefined or record.driver != "bridge"):
            raise InvalidArgument(
                f"NetworkingConfig.EndpointsConfig.{name}.Aliases: network-scoped aliases "
                "are supported only for containers in user-defined networks"
            )
    return out


def plan(net: NetworkController, container: Container) -> Plan:
    """How *container*'s network namespace is made this start; NotFound, FailedPrecondition
    for a missing network or a container to join that does not run."""
    mode = net.resolve_mode(str(container.host_config.get("NetworkMode") or ""))
    if mode == "host":
        return Plan("host")
    if mode.startswith("container:"):
        other = net.runtime.get(mode.removeprefix("container:"))
        if other.id == container.id:
            raise InvalidArgument("NetworkMode: cannot join own network namespace")
        if not other.state.running or not other.state.pid:
            raise FailedPrecondition(f"cannot join network of a non running container: {other.id}")
        return Plan("join", {"net": f"/proc/{other.state.pid}/ns/net"}, other=other.id)
    plan = Plan("new")
    for name, settings in container.networks.items():
        record = net.named(name)
        if record.driver == "bridge":
            if net.bridge_error:
                raise Unavailable(f"network {name}: {net.bridge_error}")
            plan.networks.append((record, settings))
        elif record.driver == "host":
            return Plan("host")
    _plan_links(net, container, plan)
    return plan


def _plan_links(net: NetworkController, container: Container, plan: Plan) -> None:
    names = net.runtime.store.names
    with contextlib.suppress(NotFound):
        for path, child_id in names.children(f"/{container.name}"):
            alias = path.rsplit("/", 1)[-1]
            child = net.runtime.containers.get(child_id)
            if child is None or not child.state.running or child.id not in net.attached:
                raise FailedPrecondition(
                    f"Cannot link to a non running container: "
                    f"/{child.name if child else child_id} AS {path}"
                )
            ip = address_for(net, child.id, [r.id for r, _ in plan.networks])
            exposed = list((child.config.get("ExposedPorts") or {}).keys())
            plan.env += linking.link_env(
                alias, container.name, ip, exposed, child.config.get("Env") or []
            )
            plan.hosts += linking.hosts_entries([(alias, child.name, child.id, ip)])
            plan.links.append((child, alias))


def address_for(net: NetworkController, container_id: str, prefer: Sequence[str]) -> str:
    endpoints = net.attached[container_id].endpoints
    for endpoint in endpoints:
        if endpoint.network_id in prefer:
            return endpoint.ip
    return endpoints[0].ip if endpoints else ""


def write_files(net: NetworkController, container: Container, bundle: Path, plan: Plan) -> None:
    """Write the container's hostname, hosts and resolv.conf for this start."""
    hostname = hostname_for(container.id, container.config, container.host_config)
    write_text(bundle / "hostname", hostname + "\n")
    if plan.other:  # sharing another container's namespace: its hosts and resolv.conf, as Docker
        theirs = net.runtime.store.dir(plan.other)
        for name in ("hosts", "resolv.conf"):
            with contextlib.suppress(OSError):
                write_text(bundle / name, (theirs / name).read_text())
        return
    write_text(bundle / "hosts", hosts_text(net, container, plan))
    write_text(bundle / "resolv.conf", resolv_text(container, plan))


def resolv_text(container: Container, plan: Plan) -> str:
    """The container's ``/etc/resolv.conf``: the embedded DNS server on a user-defined network,
    else the host's file as Docker filters it (``networkfiles.resolv_conf``)."""
    try:
        host_resolv = Path("/etc/resolv.conf").read_text()
    except OSError:
        host_resolv = ""
    hc = container.host_config
    user_network = any(not r.predefined for r, _ in plan.networks)
    dns = [DNS_ADDRESS[0]] if user_network else hc.get("Dns") or []
    options = (hc.get("DnsOptions") or []) + (["ndots:0"] if user_network else [])
    return resolv_conf(host_resolv, dns, hc.get("DnsSearch") or [], options,
                       plan.sandbox == "host")  # fmt: skip


def hosts_text(net: NetworkController, container: Container, plan: Plan) -> str:
    hostname = hostname_for(container.id, container.config, container.host_config)
    address = ""
    attached = net.attached.get(container.id)
    if attached is not None and attached.endpoints:
        address = attached.endpoints[0].ip
    extra = [_host_gateway(net, e) for e in container.host_config.get("ExtraHosts") or []]
    text = hosts_file(hostname, str(container.config.get("Domainname") or ""), extra,
                      address)  # fmt: skip
    return text + "".join(f"{ip}\t{names}\n" for ip, names in plan.hosts)


def _host_gateway(net: NetworkController, entry: str) -> str:
    name, _, address = entry.partition("=") if "=" in entry else entry.partition(":")
    if address != "host-gateway":
        return entry
    with contextlib.suppress(NotFound):
        return f"{name}:{net.store.get('bridge').gateway}"
    return entry
