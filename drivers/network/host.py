"""The host network driver (containers share the host's network namespace), and the base of
the drivers that connect nothing.

A container of the host driver is not given a namespace of its own (``sandbox = "host"``), so
it sees the host's interfaces, addresses, routes and ports directly; one of the null driver
(``null.py``) has a namespace with only ``lo``. Neither connects anything, so every operation
of ``Unconnected`` does nothing: there is no bridge, interface, rule or port of theirs to make.
"""

from __future__ import annotations

from drivers.network.base import Interface, LinkRule, Network, PortMap, Sandbox, Settings


class Unconnected:
    """A driver whose containers are connected to nothing the daemon manages."""

    name: str = ""
    sandbox: Sandbox = "new"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    def setup(self) -> None:
        """Nothing: there is no daemon-wide state."""

    def shutdown(self) -> None:
        """Nothing: no rules or devices were added."""

    def create(self, network: Network) -> None:
        """Nothing: the network has no bridge or subnet."""

    def delete(self, network: Network) -> None:
        """Nothing: ``create`` made nothing."""

    def join(self, network: Network, iface: Interface, pid: int) -> None:
        """Nothing: no interface is added (the host's own, or only ``lo``, which init raises)."""

    def leave(self, network: Network, iface: Interface) -> None:
        """Nothing: ``join`` added nothing."""

    def publish(self, network: Network, port: PortMap) -> None:
        """Nothing: a host-network container binds host ports itself; an isolated one cannot be
        reached at all."""

    def unpublish(self, network: Network, port: PortMap) -> None:
        """Nothing: ``publish`` added nothing."""

    def link(self, network: Network, rule: LinkRule, enable: bool) -> None:
        """Nothing: no rule filters these containers' traffic."""

    def host_routes(self) -> list[str]:
        """No routes: these drivers allocate no subnets, so they never need to avoid any."""
        return []


class HostDriver(Unconnected):
    """Containers use the host's own network namespace."""

    name: str = "host"
    sandbox: Sandbox = "host"
