"""Network jobs: ``networks``, ``network_inspect``, ``network_create``, ``network_delete`` and
``network_prune``, in the Docker Engine API's shapes (``Network``, ``NetworkPruneResponse``).

Glossary: a *network* is what a container's ``HostConfig.NetworkMode`` names. The networks that
exist so far are Docker's predefined ones whose drivers keep no state: ``none`` (driver
``null``: a network namespace with only loopback) and ``host`` (driver ``host``: the host's own
namespace). Their *id* is stable (derived from the engine id and the name) and their *Created*
time is when the daemon's data root got its engine id. A container is *attached* (has an
*endpoint*) while it runs with that network mode. Predefined networks cannot be created again or
removed; user-defined networks come with the bridge driver, so until then ``network_create``
refuses them and ``network_prune`` finds none to remove.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from engine import ArgSpec, Engine, Job
from engine.errors import FailedPrecondition, InvalidArgument, NotFound, NotSupported, Unavailable
from graph.containers import Container
from jobs.prune import PruneParams, check_filters, chosen, until_of
from jobs.runtime import now_rfc3339
from jobs.services import DAEMON, RUNTIME

Network = dict[str, Any]
DRIVERS: Final = {"host": "host", "none": "null"}  # the networks that exist: name → driver
# Names dockerd reserves for its own networks (runconfig.IsPreDefinedNetwork).
PREDEFINED: Final = frozenset({"bridge", "default", "host", "none", "ingress"})
LIST_FILTERS: Final = frozenset({"dangling", "driver", "id", "label", "name", "scope", "type"})
PRUNE_FILTERS: Final = frozenset({"label", "label!", "until"})
ZERO_TIME: Final = "0001-01-01T00:00:00Z"


def network_id(engine_id: str, name: str) -> str:
    """The stable id (64 hex) of network *name* on the engine *engine_id*."""
    return hashlib.sha256(f"{engine_id}\0network\0{name}".encode()).hexdigest()


def endpoint_id(network: str, container: str) -> str:
    """The id (64 hex) of *container*'s endpoint on *network* (both ids)."""
    return hashlib.sha256(f"{network}\0endpoint\0{container}".encode()).hexdigest()


def network_record(name: str, driver: str, id: str, created: str) -> Network:
    """A network in Docker's ``Network`` shape, with no containers listed."""
    return {
        "Name": name, "Id": id, "Created": created, "Scope": "local", "Driver": driver,
        "EnableIPv6": False, "IPAM": {"Driver": "default", "Options": None, "Config": []},
        "Internal": False, "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""},
        "ConfigOnly": False, "Containers": {}, "Options": {}, "Labels": {},
    }  # fmt: skip


def predefined(engine_id: str, created: str) -> list[Network]:
    """The networks that exist (``host``, ``none``), by name."""
    return [
        network_record(n, DRIVERS[n], network_id(engine_id, n), created) for n in sorted(DRIVERS)
    ]


def endpoints(network: Network, containers: Iterable[Container]) -> dict[str, dict[str, str]]:
    """The ``Containers`` of *network*: each running container whose network mode names it."""
    return {
        c.id: {
            "Name": c.name,
            "EndpointID": endpoint_id(network["Id"], c.id),
            "MacAddress": "",
            "IPv4Address": "",
            "IPv6Address": "",
        }
        for c in sorted(containers, key=lambda c: c.name)
        if c.state.running
        and not c.state.restarting
        and c.host_config.get("NetworkMode") == network["Name"]
    }


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


def find(networks: Sequence[Network], term: str) -> Network:
    """The network *term* names: full id, then name, then unique id prefix (as dockerd)."""
    for n in networks:
        if n["Id"] == term:
            return n
    by_name = [n for n in networks if n["Name"] == term]
    by_prefix = [n for n in networks if n["Id"].startswith(term)]
    for found, how in ((by_name, "name"), (by_prefix, "ID prefix")):
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise InvalidArgument(
                f"network {term} is ambiguous ({len(found)} matches found based on {how})"
            )
    raise NotFound(f"network {term} not found")


def _created(data_root: Path) -> str:
    try:
        return now_rfc3339((data_root / "engine-id").stat().st_mtime)
    except OSError:
        return ZERO_TIME


async def every_network(engine: Engine, attached: bool = False) -> list[Network]:
    """Every network, by name; with *attached*, each with its ``Containers``."""
    daemon = engine[DAEMON]
    networks = predefined(daemon.engine_id, await asyncio.to_thread(_created, daemon.data_root))
    if attached:
        try:
            containers = list(engine[RUNTIME].containers.values())
        except Unavailable:  # an engine without containers (a tool, a test)
            containers = []
        for network in networks:
            network["Containers"] = endpoints(network, containers)
    return networks


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
    network = find(await every_network(job.engine, attached=True), term)
    if job.params.scope and job.params.scope != network["Scope"]:
        raise NotFound(f"network {term} not found")
    job.emit(network)


@dataclass(frozen=True, slots=True)
class CreateParams:
    name: str = field(default="", metadata={"doc": "the network's name"})
    driver: str = field(default="bridge", metadata={"doc": "network driver"})


async def network_create(job: Job[CreateParams]) -> None:
    """Create a user-defined network: refused until the bridge driver exists."""
    name, driver = job.params.name, job.params.driver or "bridge"
    if not name:
        raise InvalidArgument("Name: a network name is required")
    if name in PREDEFINED:
        raise FailedPrecondition(f"operation is not permitted on predefined {name} network")
    if driver in ("host", "null"):
        raise FailedPrecondition(f'only one instance of "{driver}" network is allowed')
    if driver not in ("bridge", "macvlan", "ipvlan", "overlay"):
        raise NotFound(f"could not find plugin {driver} in v1 plugin registry: plugin not found")
    raise NotSupported(
        f"network {name}: user-defined networks (driver {driver}) come with the bridge driver, "
        "which is not available yet; containers can use --network none or --network host"
    )


async def network_delete(job: Job[Any]) -> None:
    """Remove a network by id, name or id prefix; predefined networks are refused."""
    network = find(await every_network(job.engine, attached=True), job.args[0])
    if network["Name"] in PREDEFINED:
        raise FailedPrecondition(
            f"{network['Name']} is a pre-defined network and cannot be removed"
        )
    raise NotSupported(f"network {network['Name']}: no driver here removes user networks")


async def network_prune(job: Job[PruneParams]) -> None:
    """Remove the user-defined networks no container uses; emit ``{"NetworksDeleted"}``."""
    filters = job.params.filters
    check_filters(filters, PRUNE_FILTERS)
    until = until_of(filters)
    deleted = []
    for network in await every_network(job.engine, attached=True):
        if not _unused(network) or not chosen(filters, until, network["Created"],
                                              network["Labels"]):  # fmt: skip
            continue
        await job.engine.call("network_delete", network["Id"])
        deleted.append(network["Name"])
    job.emit({"NetworksDeleted": deleted or None})


def install(engine: Engine) -> None:
    """Register networks, network_inspect, network_create, network_delete and network_prune."""
    engine.register("networks", networks, params=ListParams)
    engine.register("network_inspect", network_inspect, params=InspectParams,
                    args=ArgSpec(("network",)))  # fmt: skip
    engine.register("network_create", network_create, params=CreateParams)
    engine.register("network_delete", network_delete, args=ArgSpec(("network",)))
    engine.register("network_prune", network_prune, params=PruneParams)
