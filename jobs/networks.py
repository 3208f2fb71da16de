"""Network jobs: ``networks``, ``network_inspect``, ``network_create``, ``network_delete``,
``network_connect``, ``network_disconnect`` and ``network_prune``, in the Docker Engine API's
shapes (``Network``, ``NetworkCreateResponse``, ``NetworkPruneResponse``).

Glossary: a *network* is a row of the network store (``graph/networks.py``): the predefined
``bridge`` (the daemon's default bridge), ``host`` and ``none``, and user-defined bridge networks.
A container is *connected* to a network when its ``NetworkSettings.Networks`` names it, and
*attached* (has an endpoint: an address, an interface) while it runs there. The controller
(``jobs/netcontroller.py``) does the work; these jobs check requests and shape answers.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from engine import ArgSpec, Engine, Job
from engine.errors import FailedPrecondition, InvalidArgument, NotFound, NotSupported
from graph.networks import NetworkRecord, check_subnet, choose_subnet, gateway_of
from jobs.containerconfig import check_endpoint
from jobs.jsonfields import Fields, invalid
from jobs.netcontroller import NetworkController, endpoint_id
from jobs.netsetup import ICC
from jobs.prune import PruneParams, check_filters, chosen, until_of
from jobs.runtime import now_rfc3339
from jobs.services import EVENTS, NETWORK, RUNTIME

Network = dict[str, Any]
# Names dockerd reserves for its own networks (runconfig.IsPreDefinedNetwork).
PREDEFINED: Final = frozenset({"bridge", "default", "host", "none", "ingress"})
LIST_FILTERS: Final = frozenset({"dangling", "driver", "id", "label", "name", "scope", "type"})
PRUNE_FILTERS: Final = frozenset({"label", "label!", "until"})
BRIDGE_OPTIONS: Final = frozenset({ICC, "com.docker.network.bridge.name",
                                   "com.docker.network.driver.mtu",
                                   "com.docker.network.bridge.enable_ip_masquerade"})  # fmt: skip


def network_json(record: NetworkRecord, containers: Mapping[str, Any] | None = None) -> Network:
    """A network in Docker's ``Network`` shape; *containers* fills ``Containers``."""
    config = []
    if record.subnet:
        entry = {"Subnet": record.subnet, "Gateway": record.gateway}
        if record.ip_range:
            entry["IPRange"] = record.ip_range
        config.append(entry)
    return {
        "Name": record.name, "Id": record.id, "Created": record.created, "Scope": "local",
        "Driver": record.driver, "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": config},
        "Internal": record.internal, "Attachable": record.attachable, "Ingress": False,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
        "Containers": dict(containers or {}), "Options": dict(record.options),
        "Labels": dict(record.labels),
    }  # fmt: skip


def attached_json(net: NetworkController, record: NetworkRecord) -> dict[str, dict[str, str]]:
    """The ``Containers`` of a network: each container with an endpoint on it."""
    out: dict[str, dict[str, str]] = {}
    runtime = net.runtime
    for container_id, attached in sorted(net.attached.items()):
        container = runtime.containers.get(container_id) if runtime is not None else None
        for endpoint in attached.endpoints:
            if endpoint.network_id == record.id and container is not None:
                out[container_id] = {
                    "Name": container.name,
                    "EndpointID": endpoint_id(record.id, container_id),
                    "MacAddress": endpoint.mac,
                    "IPv4Address": f"{endpoint.ip}/{endpoint.prefixlen}",
                    "IPv6Address": "",
                }
    if record.driver in ("host", "null") and runtime is not None:  # no endpoint, no address
        for c in sorted(runtime.containers.values(), key=lambda c: c.name):
            if c.state.running and not c.state.restarting and record.name in c.networks:
                out[c.id] = {"Name": c.name, "EndpointID": endpoint_id(record.id, c.id),
                             "MacAddress": "", "IPv4Address": "", "IPv6Address": ""}  # fmt: skip
    return out


def _matches(patterns: Sequence[str], value: str) -> bool:
    """Docker's ``Match``: equal, or the pattern is a regular expression found in *value*."""
    for pattern in patterns:
        try:
            if pattern == value or re.search(pattern, value):
                return True
        except re.error:
            continue
    return False


def _labelled(wanted: Sequence[str], labels: Mapping[str, str]) -> bool:
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def select(networks: Sequence[Network], filters: Mapping[str, Sequence[str]]) -> list[Network]:
    """The networks that pass Docker's list filters (name and id: part of or a pattern)."""
    check_filters(filters, LIST_FILTERS)
    out = [
        n
        for n in networks
        if (not filters.get("driver") or n["Driver"] in filters["driver"])
        and (not filters.get("name") or _matches(filters["name"], n["Name"]))
        and (not filters.get("id") or _matches(filters["id"], n["Id"]))
        and _labelled(filters.get("label", []), n["Labels"])
        and (not filters.get("scope") or n["Scope"] in filters["scope"])
    ]
    dangling = list(filters.get("dangling", []))
    if dangling:
        if len(dangling) > 1:
            raise InvalidArgument('got more than one value for filter key "dangling"')
        if dangling[0] not in ("0", "1", "false", "true"):
            raise InvalidArgument(
                'invalid value for filter \'dangling\', must be "true" (or "1"), '
                'or "false" (or "0")'
            )
        unused = dangling[0] in ("1", "true")
        out = [n for n in out if _unused(n) == unused]
    if filters.get("type"):
        for kind in filters["type"]:
            if kind not in ("builtin", "custom"):
                raise InvalidArgument(f"invalid filter: 'type'='{kind}'")
        out = [n for n in out if ("builtin" if n["Name"] in PREDEFINED else "custom")
               in filters["type"]]  # fmt: skip
    return out


def _unused(network: Network) -> bool:
    return network["Name"] not in PREDEFINED and not network["Containers"]


async def every_network(engine: Engine, attached: bool = False) -> list[Network]:
    """Every network, by name; with *attached*, each with its ``Containers``."""
    net = engine[NETWORK]
    records = sorted(await asyncio.to_thread(net.store.all), key=lambda r: r.name)
    return [network_json(r, attached_json(net, r) if attached else None) for r in records]


@dataclass(frozen=True, slots=True)
class ListParams:
    filters: dict[str, list[str]] = field(
        default_factory=dict,
        metadata={"doc": "name, id, driver, type (builtin/custom), scope, label, dangling"},
    )


async def networks(job: Job[ListParams]) -> None:
    """Emit one record per network that passes the filters (Docker's ``GET /networks``)."""
    for network in select(await every_network(job.engine), job.params.filters):
        job.emit(network)


@dataclass(frozen=True, slots=True)
class InspectParams:
    verbose: bool = field(default=False, metadata={"doc": "swarm details (none for local)"})
    scope: str = field(default="", metadata={"doc": "only a network of this scope"})


async def network_inspect(job: Job[InspectParams]) -> None:
    """Emit the network named by id, name or id prefix, with its attached containers."""
    term = job.args[0]
    net = job.engine[NETWORK]
    record = await asyncio.to_thread(net.store.get, term)
    if job.params.scope and job.params.scope != "local":
        raise NotFound(f"network {term} not found")
    job.emit(network_json(record, attached_json(net, record)))


@dataclass(frozen=True, slots=True)
class CreateParams:
    body: dict[str, object] = field(
        default_factory=dict, metadata={"doc": "Docker's NetworkCreateRequest"}
    )


async def network_create(job: Job[CreateParams]) -> None:
    """Create a user-defined bridge network; emit ``{"Id", "Warning"}``."""
    net = job.engine[NETWORK]
    record = await asyncio.to_thread(_new_record, net, job.params.body)
    await asyncio.to_thread(net.store.create, record)
    net.refresh()
    try:
        await asyncio.to_thread(net.drivers["bridge"].create, net.driver_network(record))
    except BaseException:
        await asyncio.to_thread(net.store.delete, record.id)
        net.refresh()
        raise
    job.engine[EVENTS].emit("network", "create", record.id,
                                    {"name": record.name, "type": record.driver})  # fmt: skip
    job.emit({"Id": record.id, "Warning": ""})


def _new_record(net: NetworkController, body: Mapping[str, object]) -> NetworkRecord:
    b = Fields(body, "")
    name, driver = b.text("Name"), b.text("Driver") or "bridge"
    if not name:
        raise InvalidArgument("Name: a network name is required")
    if name in PREDEFINED:
        raise FailedPrecondition(f"operation is not permitted on predefined {name} network")
    if driver in ("host", "null"):
        raise FailedPrecondition(f'only one instance of "{driver}" network is allowed')
    if driver != "bridge":
        if driver in ("macvlan", "ipvlan", "overlay"):
            raise NotSupported(f"Driver: the {driver} driver is not supported; use bridge")
        raise NotFound(f"could not find plugin {driver} in v1 plugin registry: plugin not found")
    if b.flag("EnableIPv6"):
        raise NotSupported("EnableIPv6: IPv6 networks are not supported")
    for key in ("Ingress", "ConfigOnly"):
        if b.flag(key):
            raise NotSupported(f"{key}: swarm networks are not supported")
    options = dict(b.text_map("Options") or {})
    for key in options:
        if key not in BRIDGE_OPTIONS:
            raise NotSupported(f"Options.{key}: this bridge option is not supported")
    ipam = b.obj("IPAM")
    if ipam.text("Driver") not in ("", "default"):
        raise NotSupported(f"{ipam.at('Driver')}: only the default IPAM driver is supported")
    configs = ipam.raw.get("Config")
    configs = [] if configs is None else configs
    if not isinstance(configs, list):
        raise invalid(ipam.at("Config"), "expected a list")
    if len(configs) > 1:
        raise NotSupported(f"{ipam.at('Config')}: one IPv4 pool per network")
    id = secrets.token_hex(32)
    if configs:
        c = Fields(configs[0], f"{ipam.at('Config')}[0]")
        subnet, gateway, ip_range = check_subnet(c.text("Subnet"), c.text("Gateway"),
                                                 c.text("IPRange"))  # fmt: skip
    else:
        taken = [r.subnet for r in net.store.all() if r.subnet]
        subnet = choose_subnet(taken + net.drivers["bridge"].host_routes())
        gateway, ip_range = gateway_of(subnet), ""
    bridge = options.get("com.docker.network.bridge.name") or f"br-{id[:12]}"
    if len(bridge) > 15:
        raise invalid("Options.com.docker.network.bridge.name", f"{bridge}: at most 15 characters")
    return NetworkRecord(
        id=id, name=name, driver="bridge", bridge=bridge, subnet=subnet, gateway=gateway,
        ip_range=ip_range, internal=b.flag("Internal"), attachable=b.flag("Attachable"),
        labels=dict(b.text_map("Labels") or {}), options=options, created=now_rfc3339(),
        predefined=False,
    )  # fmt: skip


async def network_delete(job: Job[Any]) -> None:
    """Remove a network by id, name or id prefix; predefined networks are refused."""
    net = job.engine[NETWORK]
    record = await asyncio.to_thread(net.store.get, job.args[0])
    if record.predefined:
        raise FailedPrecondition(f"{record.name} is a pre-defined network and cannot be removed")
    await asyncio.to_thread(net.store.delete, record.id)  # refused while endpoints exist
    net.refresh()
    await asyncio.to_thread(net.drivers["bridge"].delete, net.driver_network(record))
    job.engine[EVENTS].emit("network", "destroy", record.id,
                                    {"name": record.name, "type": record.driver})  # fmt: skip


@dataclass(frozen=True, slots=True)
class ConnectParams:
    body: dict[str, object] = field(
        default_factory=dict, metadata={"doc": "{Container, EndpointConfig} or {Container, Force}"}
    )


async def network_connect(job: Job[ConnectParams]) -> None:
    """Connect a container to a network (at once if it runs, else from its next start)."""
    await _change(job, "connect")


async def network_disconnect(job: Job[ConnectParams]) -> None:
    """Disconnect a container from a network."""
    await _change(job, "disconnect")


async def _change(job: Job[ConnectParams], verb: str) -> None:
    net, rt = job.engine[NETWORK], job.engine[RUNTIME]
    b = Fields(job.params.body, "")
    if not b.text("Container"):
        raise InvalidArgument(f"Container: the container to {verb} is required")
    record = await asyncio.to_thread(net.store.get, job.args[0])
    container = rt.get(b.text("Container"))
    settings = check_endpoint(b.raw.get("EndpointConfig"), "EndpointConfig")
    b.flag("Force")
    async with rt.live[container.id].lock:
        if verb == "connect":
            await net.connect(container, record, settings)
        else:
            await net.disconnect(container, record)
        await rt.save(container)
    attributes = {"container": container.id, "name": record.name, "type": record.driver}
    job.engine[EVENTS].emit("network", verb, record.id, attributes)


async def network_prune(job: Job[PruneParams]) -> None:
    """Remove the user-defined networks no container uses; emit ``{"NetworksDeleted"}``."""
    filters = job.params.filters
    check_filters(filters, PRUNE_FILTERS)
    until = until_of(filters)
    deleted = []
    for network in await every_network(job.engine, attached=True):
        if not _unused(network):  # as dockerd: stopped containers do not keep a network
            continue
        if not chosen(filters, until, network["Created"], network["Labels"]):
            continue
        await job.engine.call("network_delete", network["Id"])
        deleted.append(network["Name"])
    job.emit({"NetworksDeleted": deleted or None})


def install(engine: Engine) -> None:
    """Register the network jobs."""
    engine.register("networks", networks, params=ListParams)
    engine.register("network_inspect", network_inspect, params=InspectParams,
                    args=ArgSpec(("network",)))  # fmt: skip
    engine.register("network_create", network_create, params=CreateParams)
    engine.register("network_delete", network_delete, args=ArgSpec(("network",)))
    engine.register("network_connect", network_connect, params=ConnectParams,
                    args=ArgSpec(("network",)))  # fmt: skip
    engine.register("network_disconnect", network_disconnect, params=ConnectParams,
                    args=ArgSpec(("network",)))  # fmt: skip
    engine.register("network_prune", network_prune, params=PruneParams)
