"""Network drivers: how a container's network namespace is connected to the world.

Lifecycle, as the daemon uses a driver: ``setup`` once at daemon start (daemon-wide state such
as IP forwarding and the driver's own iptables chains) → ``create`` each network the daemon
knows (idempotent: an existing bridge that already has the gateway address is adopted) → for
each container that starts on a network, ``join`` (after its namespaces exist, before its
process runs) and ``publish`` its ports → ``leave`` when it stops → ``delete`` a network that
is removed → ``shutdown`` at daemon exit: every rule the driver added is removed, and bridges
with no container attached are deleted. Running containers keep their interfaces; the next
daemon's ``create`` and ``publish`` bring the rules back.

Glossary:

- *network*: a layer-2 segment with an IPv4 subnet; for the bridge driver, one Linux bridge on
  the host whose address is the network's *gateway*.
- *interface*: one container's end of a network: a veth pair whose host end is a port of the
  bridge and whose peer is ``ifname`` (``eth0``, ``eth1``…) in the container's namespace.
- *sandbox*: which network namespace a container of this driver runs in: ``"new"`` (its own,
  with ``lo`` up) or ``"host"`` (the host's).
- *IPAM*: which address an interface gets. The daemon does it (the state lives in the GraphDB,
  ``graph/networks.py``); drivers are handed addresses, never choose them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, Protocol, runtime_checkable

ENV_VAR: Final = "DOCKER_NETWORKDRIVER"
DEFAULT_BRIDGE: Final = "dockyard0"
Sandbox = Literal["new", "host"]
Proto = Literal["tcp", "udp", "sctp"]


@dataclass(frozen=True, slots=True)
class Settings:
    """The daemon's network options (``dockyard daemon --bridge … --iptables …``)."""

    bridge: str = DEFAULT_BRIDGE  # the default network's bridge
    bip: str = ""  # the default bridge's address with prefix ("172.30.0.1/16"); "" = pick one
    fixed_cidr: str = ""  # a sub-range of the default network to allocate from
    mtu: int = 0  # 0: the MTU of the host's default-route interface, else 1500
    icc: bool = True  # containers on one bridge may talk to each other
    iptables: bool = True  # add NAT and filter rules
    ip_forward: bool = True  # set net.ipv4.ip_forward=1
    ip_masq: bool = True  # masquerade traffic leaving a bridge's subnet
    default_ip: str = "0.0.0.0"  # the host address ports are published on when none is given


@dataclass(frozen=True, slots=True)
class Network:
    """One network, as a driver sees it."""

    id: str
    name: str
    bridge: str  # the host interface ("" for drivers without one)
    subnet: str  # "172.18.0.0/16"
    gateway: str  # "172.18.0.1": the bridge's own address
    internal: bool = False  # no route out of the subnet, no masquerade
    icc: bool = True
    masquerade: bool = True
    mtu: int = 1500


@dataclass(frozen=True, slots=True)
class Interface:
    """One container's end of a network."""

    container_id: str
    ifname: str  # in the container: eth0, eth1, …
    host_ifname: str  # the veth's host end (at most 15 characters)
    ip: str
    prefixlen: int
    mac: str
    gateway: str = ""  # "" means no default route through this interface


@dataclass(frozen=True, slots=True)
class PortMap:
    """A published port: host_ip:host_port/proto forwards to container_ip:container_port."""

    proto: Proto
    host_ip: str
    host_port: int
    container_ip: str
    container_port: int


@dataclass(frozen=True, slots=True)
class LinkRule:
    """What a legacy link lets through when ``icc`` is off: parent → child on one port."""

    parent_ip: str
    child_ip: str
    port: int
    proto: Proto


@runtime_checkable
class NetworkDriver(Protocol):
    """Connects containers to networks; see the module docstring for the lifecycle."""

    name: str
    sandbox: Sandbox

    def setup(self) -> None:
        """Daemon-wide set-up, once at daemon start."""
        ...

    def shutdown(self) -> None:
        """Remove every rule the driver added and the bridges with no container attached."""
        ...

    def create(self, network: Network) -> None:
        """Make (or adopt) the network's bridge and its rules."""
        ...

    def delete(self, network: Network) -> None:
        """Remove the network's rules and bridge."""
        ...

    def join(self, network: Network, iface: Interface, pid: int) -> None:
        """Give the network namespace of process *pid* the interface *iface*."""
        ...

    def leave(self, network: Network, iface: Interface) -> None:
        """Remove *iface* (nothing to do when its namespace is already gone)."""
        ...

    def publish(self, network: Network, port: PortMap) -> None:
        """Add the rules that forward *port* to the container (none without iptables)."""
        ...

    def unpublish(self, network: Network, port: PortMap) -> None:
        """Remove what ``publish`` added."""
        ...

    def link(self, network: Network, rule: LinkRule, enable: bool) -> None:
        """Let a link's traffic through (enable) or stop letting it through."""
        ...

    def host_routes(self) -> list[str]:
        """The destinations (CIDR) of the host's IPv4 routes, to choose a subnet none uses."""
        ...
