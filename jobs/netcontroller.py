"""The network controller: the containers on networks, between the jobs and the drivers.

Vocabulary: an *attached* container runs in its own namespace with an interface on each
network of its plan (``jobs/netplan.py``). *Attachments* (``graph/networks.py`` endpoints) are
made when an attached container starts, after its namespaces exist and before its process runs
(the exec driver's ``on_pid``), and released when it stops; they survive a daemon restart, and
``restore`` brings back what lives only in the daemon: port proxies, rules and DNS.

Lifecycle: ``setup`` at daemon start (``jobs/netsetup.py``, then the resolver) → ``attach``
during each start (the plan from ``netplan.plan``) → ``release`` at each exit, and ``restore``
of running containers after a daemon restart → ``shutdown`` at daemon exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.network.base import Interface, Network, NetworkDriver, PortMap, Settings
from drivers.network.netns import sockets_in
from drivers.network.resolver import Resolver, upstream_servers
from engine.errors import AlreadyExists, EngineError, FailedPrecondition, InvalidArgument, NotFound
from graph.containers import Container, rewrite_in_place
from graph.networks import Endpoint, NetworkRecord, NetworkStore
from jobs import links as linking
from jobs.netplan import DNS_ADDRESS, Plan, address_for, hosts_text, resolv_text
from jobs.netplan import plan as plan_for
from jobs.netsetup import Networks
from jobs.portbindings import Binding, parse_port_bindings
from jobs.portproxy import ProxySet

log = logging.getLogger("network")


def endpoint_id(network_id: str, container_id: str) -> str:
    """The id (64 hex) of *container_id*'s endpoint on *network_id*."""
    return hashlib.sha256(f"{network_id}\0endpoint\0{container_id}".encode()).hexdigest()


def veth_name(container_id: str, network_id: str) -> str:
    """The host end of a container's veth on a network (``veth`` + 7 hex, stable)."""
    return "veth" + hashlib.sha256(f"{container_id}\0{network_id}".encode()).hexdigest()[:7]


@dataclass
class Attached:
    """What the daemon holds for one running attached container."""

    endpoints: list[Endpoint] = field(default_factory=list)
    ports: list[PortMap] = field(default_factory=list)
    proxies: ProxySet = field(default_factory=ProxySet)
    links: list[Any] = field(default_factory=list)  # (network, LinkRule) enabled
    env: list[str] = field(default_factory=list)  # the links' variables, for exec
    dns: bool = False


class NetworkController(Networks):
    """Networks, attachments, published ports and DNS; see the module docstring."""

    def __init__(
        self,
        store: NetworkStore,
        drivers: Mapping[str, NetworkDriver],
        settings: Settings,
        default: str,
        engine_id: str,
    ) -> None:
        super().__init__(store, drivers, settings, default, engine_id)
        self.attached: dict[str, Attached] = {}  # container id → what it holds while running
        self.runtime: Any = None  # the container runtime, for names and lookups
        self.resolver = Resolver(self.lookup, [])
        self._leaving: set[asyncio.Task[None]] = set()  # interfaces being removed

    async def setup(self, created: str) -> None:
        """Set up the networks (``Networks.setup``) and the resolver's upstream servers."""
        try:
            resolv = await asyncio.to_thread(Path("/etc/resolv.conf").read_text)
        except OSError:
            resolv = ""
        self.resolver = Resolver(self.lookup, upstream_servers(resolv))
        await super().setup(created)

    async def shutdown(self) -> None:
        """Close proxies and DNS (containers keep running), then undo the drivers' rules."""
        for attached in self.attached.values():
            await attached.proxies.close_all()
        self.attached.clear()
        if self._leaving:
            await asyncio.wait(set(self._leaving))
        await self.resolver.close()
        for driver in self.drivers.values():
            await asyncio.to_thread(driver.shutdown)

    # -- container lifecycle -----------------------------------------------------------------------

    async def attach(self, container: Container, plan: Plan, pid: int) -> None:
        """Connect the started (not yet running) container *pid* to its networks, publish its
        ports, link it and serve its DNS; on any failure undo all of it and raise."""
        self.attached.setdefault(container.id, Attached()).env = list(plan.env)
        try:
            for i, (record, settings) in enumerate(plan.networks):
                await self._join(container, record, settings, f"eth{i}", pid, gateway=i == 0)
            if plan.networks:
                await self._publish(container, plan.networks[0][0])
                await self._enable_links(container, plan)
            if any(not r.predefined for r, _ in plan.networks):
                await self._serve_dns(container.id, pid)
        except BaseException:
            await self.release(container)
            raise

    async def _join(
        self, container: Container, record: NetworkRecord, settings: Mapping[str, Any],
        ifname: str, pid: int, *, gateway: bool,
    ) -> Endpoint:  # fmt: skip
        ipam = settings.get("IPAMConfig") or {}
        aliases = tuple(settings.get("Aliases") or ())
        endpoint = await asyncio.to_thread(
            self.store.allocate, record.id, container.id, ifname=ifname,
            ip=str(ipam.get("IPv4Address") or ""), aliases=aliases,
        )  # fmt: skip
        attached = self.attached.setdefault(container.id, Attached())
        attached.endpoints.append(endpoint)
        iface = self.interface(container.id, record, endpoint, gateway=gateway)
        await asyncio.to_thread(self.drivers["bridge"].join, self.driver_network(record), iface,
                                pid)  # fmt: skip
        return endpoint

    def interface(
        self, container_id: str, record: NetworkRecord, endpoint: Endpoint, *, gateway: bool
    ) -> Interface:
        """The driver's view of an endpoint."""
        return Interface(
            container_id=container_id, ifname=endpoint.ifname,
            host_ifname=veth_name(container_id, record.id), ip=endpoint.ip,
            prefixlen=endpoint.prefixlen, mac=endpoint.mac,
            gateway=record.gateway if gateway and not record.internal else "",
        )  # fmt: skip

    def bindings(self, container: Container) -> list[Binding]:
        """The container's port bindings, with ``-P`` expanded."""
        hc = container.host_config
        exposed = container.config.get("ExposedPorts") or {}
        publish_all = bool(hc.get("PublishAllPorts"))
        return parse_port_bindings(
            hc.get("PortBindings"), exposed, publish_all, self.settings.default_ip
        )

    async def _publish(self, container: Container, record: NetworkRecord) -> None:
        bindings = self.bindings(container)
        if not bindings:
            return
        if record.internal:  # as dockerd: nothing outside can reach it, so nothing is bound
            return
        attached = self.attached[container.id]
        endpoint = attached.endpoints[0]
        for b in bindings:
            proxy = await attached.proxies.add(b, endpoint.ip)
            port = PortMap(b.proto, b.host_ip, proxy.host_port, endpoint.ip, b.container_port)
            await asyncio.to_thread(self.drivers["bridge"].publish, self.driver_network(record),
                                    port)  # fmt: skip
            attached.ports.append(port)
        await asyncio.to_thread(
            self.store.set_ports, record.id, container.id, _ports_json(attached.ports)
        )

    async def _enable_links(self, container: Container, plan: Plan) -> None:
        record = plan.networks[0][0]
        network = self.driver_network(record)
        if network.icc:
            return
        attached = self.attached[container.id]
        parent_ip = attached.endpoints[0].ip
        for child, _alias in plan.links:
            child_ip = address_for(self, child.id, [record.id])
            exposed = list((child.config.get("ExposedPorts") or {}).keys())
            for rule in linking.link_rules(parent_ip, child_ip, exposed):
                await asyncio.to_thread(self.drivers["bridge"].link, network, rule, True)
                attached.links.append((network, rule))

    async def _serve_dns(self, container_id: str, pid: int) -> None:
        udp, tcp = await asyncio.to_thread(
            sockets_in, pid,
            [(socket.AF_INET, socket.SOCK_DGRAM, DNS_ADDRESS),
             (socket.AF_INET, socket.SOCK_STREAM, DNS_ADDRESS)],
        )  # fmt: skip
        await self.resolver.serve(container_id, udp, tcp)
        self.attached[container_id].dns = True

    async def release(self, container: Container) -> None:
        """Undo ``attach``: proxies, rules, DNS, interfaces, then the addresses."""
        attached = self.attached.pop(container.id, None)
        bridge = self.drivers["bridge"]
        if attached is not None:
            await attached.proxies.close_all()
            records = {r.id: r for r in self.records().values()}
            first = records.get(attached.endpoints[0].network_id) if attached.endpoints else None
            for port in attached.ports:
                if first is not None:
                    with contextlib.suppress(EngineError, OSError):
                        await asyncio.to_thread(bridge.unpublish, self.driver_network(first), port)
            for network, rule in attached.links:
                with contextlib.suppress(EngineError, OSError):
                    await asyncio.to_thread(bridge.link, network, rule, False)
            if attached.dns:
                self.resolver.stop(container.id)
            for endpoint in attached.endpoints:
                record = records.get(endpoint.network_id)
                if record is not None:
                    iface = self.interface(container.id, record, endpoint, gateway=False)
                    self._leave_later(self.driver_network(record), iface)
        await asyncio.to_thread(self.store.release_all, container.id)

    def _leave_later(self, network: Network, iface: Interface) -> None:
        """Remove an interface off the exit's path: the kernel takes tens of milliseconds to
        tear a veth down, and nothing waits on it (its name and address are the run's own)."""

        async def leave() -> None:
            with contextlib.suppress(EngineError, OSError):
                await asyncio.to_thread(self.drivers["bridge"].leave, network, iface)

        task = asyncio.ensure_future(leave())
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    async def restore(self, container: Container) -> None:
        """Bring back a running container's proxies, rules and DNS after a daemon restart."""
        endpoints = await asyncio.to_thread(self.store.endpoints, None, container.id)
        if not endpoints:
            return
        attached = self.attached.setdefault(container.id, Attached(endpoints=list(endpoints)))
        records = {r.id: r for r in self.records().values()}
        first = records[endpoints[0].network_id]
        for raw in endpoints[0].ports:
            port = PortMap(raw["proto"], raw["host_ip"], int(raw["host_port"]), endpoints[0].ip,
                           int(raw["container_port"]))  # fmt: skip
            try:
                binding = Binding(port.proto, port.container_port, port.host_ip, port.host_port)
                await attached.proxies.add(binding, port.container_ip)
            except EngineError as exc:
                log.warning("container %s: port %s: %s", container.short_id, port.host_port, exc)
                continue
            await asyncio.to_thread(self.drivers["bridge"].publish, self.driver_network(first),
                                    port)  # fmt: skip
            attached.ports.append(port)
        if any(not records[e.network_id].predefined for e in endpoints) and container.state.pid:
            with contextlib.suppress(EngineError, OSError):
                await self._serve_dns(container.id, container.state.pid)

    async def refresh_parents(self, child: Container) -> None:
        """Rewrite the hosts files of running containers linking to *child* (its IP changed)."""
        for path in await asyncio.to_thread(self.runtime.store.names.ref_paths, child.id):
            parts = path.strip("/").split("/")
            if len(parts) != 2:
                continue
            with contextlib.suppress(NotFound):
                parent = self.runtime.get(parts[0])
                if parent.state.running and parent.id in self.attached:
                    with contextlib.suppress(EngineError):
                        plan = await asyncio.to_thread(plan_for, self, parent)
                        bundle = self.runtime.store.dir(parent.id)
                        await asyncio.to_thread(
                            rewrite_in_place, bundle / "hosts", hosts_text(self, parent, plan)
                        )

    # -- connect and disconnect ---------------------------------------------------------------

    async def connect(
        self, container: Container, record: NetworkRecord, settings: dict[str, Any]
    ) -> None:
        """Connect *container* to *record*'s network: in its config, and at once if it runs."""
        mode = self.resolve_mode(str(container.host_config.get("NetworkMode") or ""))
        if record.driver != "bridge" or mode == "host" or "host" in container.networks:
            raise FailedPrecondition(
                "container cannot be disconnected from host network or connected to host network"
            )
        if mode.startswith("container:"):
            raise FailedPrecondition(
                "container sharing network namespace with another container or host cannot be "
                "connected to any other network"
            )
        if mode == "none" or "none" in container.networks:
            raise FailedPrecondition(
                "container cannot be connected to multiple networks with one of the networks in "
                "private (none) mode"
            )
        if record.name in container.networks:
            raise AlreadyExists(
                f"endpoint with name {container.name} already exists in network {record.name}"
            )
        if settings.get("Aliases") and record.predefined:
            raise InvalidArgument(
                "EndpointConfig.Aliases: network-scoped aliases are supported only for "
                "containers in user-defined networks"
            )
        container.networks[record.name] = {**settings, "NetworkID": record.id}
        attached = self.attached.get(container.id)
        if not container.state.running or container.state.restarting or attached is None:
            return
        taken = {e.ifname for e in attached.endpoints}
        ifname = next(f"eth{i}" for i in range(len(taken) + 1) if f"eth{i}" not in taken)
        try:
            await self._join(container, record, settings, ifname, container.state.pid,
                             gateway=not attached.endpoints)  # fmt: skip
            if not record.predefined and not attached.dns:
                await self._serve_dns(container.id, container.state.pid)
                if not container.host_config.get("Dns"):  # now answered at 127.0.0.11
                    text = resolv_text(container, Plan("new", networks=[(record, settings)]))
                    bundle = self.runtime.store.dir(container.id)
                    await asyncio.to_thread(rewrite_in_place, bundle / "resolv.conf", text)
        except BaseException:
            del container.networks[record.name]
            await self._leave(container, record)
            raise

    async def disconnect(self, container: Container, record: NetworkRecord) -> None:
        """Disconnect *container* from *record*'s network (its interface goes at once)."""
        if record.driver == "host" or "host" in container.networks:
            raise FailedPrecondition(
                "container cannot be disconnected from host network or connected to host network"
            )
        if record.name not in container.networks:
            raise FailedPrecondition(
                f"container {container.id} is not connected to network {record.name}"
            )
        del container.networks[record.name]
        await self._leave(container, record)

    async def _leave(self, container: Container, record: NetworkRecord) -> None:
        attached = self.attached.get(container.id)
        if attached is None:
            return
        for endpoint in [e for e in attached.endpoints if e.network_id == record.id]:
            iface = self.interface(container.id, record, endpoint, gateway=False)
            with contextlib.suppress(EngineError, OSError):
                await asyncio.to_thread(self.drivers["bridge"].leave,
                                        self.driver_network(record), iface)  # fmt: skip
            attached.endpoints.remove(endpoint)
            await asyncio.to_thread(self.store.release, record.id, container.id)

    # -- DNS -------------------------------------------------------------------------------------

    def lookup(self, container_id: str, name: str) -> list[str]:
        """The addresses *name* has for *container_id*: containers sharing a user-defined
        network with it, by name, short id or alias on that network."""
        asking = self.attached.get(container_id)
        if asking is None or self.runtime is None:
            return []
        networks = {e.network_id for e in asking.endpoints}
        found = []
        for other_id, other in self.attached.items():
            container = self.runtime.containers.get(other_id)
            if container is None:
                continue
            for endpoint in other.endpoints:
                if endpoint.network_id not in networks:
                    continue
                names = {container.name.lower(), container.id[:12], *map(str.lower,
                         endpoint.aliases)}  # fmt: skip
                if name in names:
                    found.append(endpoint.ip)
        return found


def _ports_json(ports: Sequence[PortMap]) -> list[dict[str, Any]]:
    return [
        {"proto": p.proto, "host_ip": p.host_ip, "host_port": p.host_port,
         "container_port": p.container_port}
        for p in ports
    ]  # fmt: skip
