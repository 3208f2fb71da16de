"""A container's ``NetworkSettings`` as inspect and ``ps`` show them.

Inspect's ``NetworkSettings.Networks`` has one ``EndpointSettings`` per network the container is
connected to: what was configured (aliases, requested address, links) and, while it runs, what
its endpoint got (address, MAC, gateway). The legacy top-level fields (``IPAddress``,
``Gateway``…) repeat the default bridge network's endpoint, as dockerd does. ``Ports`` lists
every exposed port, with its host bindings while the container runs.
"""

from __future__ import annotations

import hashlib
from typing import Any

from graph.containers import Container
from graph.networks import Endpoint, NetworkRecord
from jobs.netcontroller import NetworkController, endpoint_id
from jobs.portbindings import port_map_json, ps_ports


def endpoint_json(
    settings: dict[str, Any],
    record: NetworkRecord | None,
    endpoint: Endpoint | None,
    container: Container,
) -> dict[str, Any]:
    """One ``EndpointSettings``: configured *settings*, the run's *endpoint* (or none)."""
    network_id = record.id if record is not None else str(settings.get("NetworkID") or "")
    user_defined = record is not None and not record.predefined and record.driver == "bridge"
    dns_names = None
    if endpoint is not None and user_defined:
        dns_names = [container.name, container.id[:12], *endpoint.aliases]
    return {
        "IPAMConfig": settings.get("IPAMConfig"),
        "Links": settings.get("Links"),
        "Aliases": settings.get("Aliases"),
        "MacAddress": endpoint.mac if endpoint else "",
        "DriverOpts": settings.get("DriverOpts"),
        "GwPriority": 0,
        "NetworkID": network_id,
        "EndpointID": endpoint_id(network_id, container.id) if endpoint else "",
        "Gateway": record.gateway if endpoint and record is not None else "",
        "IPAddress": endpoint.ip if endpoint else "",
        "IPPrefixLen": endpoint.prefixlen if endpoint else 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": dns_names,
    }


def networks_json(net: NetworkController, container: Container) -> dict[str, dict[str, Any]]:
    """``NetworkSettings.Networks``: one entry per network the container is connected to."""
    attached = net.attached.get(container.id)
    running = {e.network_id: e for e in attached.endpoints} if attached else {}
    records = net.records()
    out = {}
    for name, settings in container.networks.items():
        record = records.get(name)
        endpoint = running.get(record.id) if record is not None else None
        out[name] = endpoint_json(settings, record, endpoint, container)
    return out


def settings_json(net: NetworkController, container: Container) -> dict[str, Any]:
    """Inspect's ``NetworkSettings``."""
    networks = networks_json(net, container)
    legacy = networks.get("bridge") or {}
    attached = net.attached.get(container.id)
    running = container.state.running and not container.state.restarting
    exposed = list((container.config.get("ExposedPorts") or {}).keys())
    ports = port_map_json(exposed, attached.ports if attached else []) if running else {}
    sandbox = hashlib.sha256(f"sandbox\0{container.id}".encode()).hexdigest()
    record = net.records().get("bridge")
    return {
        "Bridge": record.bridge if legacy.get("IPAddress") and record is not None else "",
        "SandboxID": sandbox if running else "",
        "SandboxKey": f"/proc/{container.state.pid}/ns/net" if running else "",
        "Ports": ports,
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
        "EndpointID": legacy.get("EndpointID", ""),
        "Gateway": legacy.get("Gateway", ""),
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": legacy.get("IPAddress", ""),
        "IPPrefixLen": legacy.get("IPPrefixLen", 0),
        "IPv6Gateway": "",
        "MacAddress": legacy.get("MacAddress", ""),
        "Networks": networks,
    }


def summary_ports(net: NetworkController, container: Container) -> list[dict[str, object]]:
    """``ps``'s ``Ports``: published ports while running, bare exposed ports otherwise."""
    exposed = list((container.config.get("ExposedPorts") or {}).keys())
    attached = net.attached.get(container.id)
    return ps_ports(exposed, attached.ports if attached else [])
