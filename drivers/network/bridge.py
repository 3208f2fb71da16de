"""The bridge network driver: one Linux bridge per network, veth pairs into containers.

A network's bridge carries the network's gateway address; a container joins with a veth pair
whose host end is a port of the bridge (see ``netlink.Netlink.add_veth``). With ``--iptables``
the driver keeps the daemon's own chains (``Chains``): masquerade out of each subnet,
FORWARD rules for inter-container traffic (icc), outbound and return traffic, isolation between
the daemon's bridges, DNAT for published ports and the ACCEPT rules of legacy links.

Bridges are *adopted* when they exist already with the gateway address (a daemon restart, or a
bridge made by hand for ``--bridge``); the driver deletes the bridges it made or adopted at
``shutdown`` only when no container is attached any more. ``--icc`` and ``--ip-masq`` reach the
driver through ``Network.icc`` and ``Network.masquerade``: the daemon folds the flags into the
default network and user networks carry their own options.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import threading
from pathlib import Path
from typing import Final

from drivers.network.base import Interface, LinkRule, Network, PortMap, Sandbox, Settings
from drivers.network.iptables import Chains, Rule, Runner, link_rules, network_rules, publish_rules
from drivers.network.netlink import MAX_IFNAME, Netlink, Peer
from engine.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)
IP_FORWARD: Final = Path("/proc/sys/net/ipv4/ip_forward")


def _ifname(field: str, name: str) -> None:
    if not name or len(name) > MAX_IFNAME or "/" in name or any(c.isspace() for c in name):
        raise InvalidArgument(f"{field}: {name!r} is not a valid interface name (1-15 chars)")


def _gateway_cidr(net: Network) -> str:
    """The bridge's address with the subnet's prefix ("172.18.0.1/16"), validated."""
    try:
        subnet = ipaddress.IPv4Network(net.subnet)
        gateway = ipaddress.IPv4Address(net.gateway)
    except ValueError as exc:
        raise InvalidArgument(f"network {net.name}: subnet/gateway: {exc}") from exc
    if gateway not in subnet:
        raise InvalidArgument(f"network {net.name}: gateway {gateway} is not in {subnet}")
    return f"{gateway}/{subnet.prefixlen}"


class BridgeDriver:
    """Networks as Linux bridges; containers in their own namespaces, joined by veth pairs."""

    name: str = "bridge"
    sandbox: Sandbox = "new"

    def __init__(
        self,
        settings: Settings,
        netlink: Netlink | None = None,
        runner: Runner | None = None,
        ip_forward: Path = IP_FORWARD,
    ) -> None:
        self.settings = settings
        self.netlink = netlink or Netlink()
        self.chains = Chains(settings.bridge, runner)
        self._ip_forward = ip_forward
        self._forward_was: str | None = None  # the old value, when this driver changed it
        self._bridges: dict[str, None] = {}  # made or adopted, in order
        self._extra: dict[str, dict[Rule, None]] = {}  # network id → publish/link rules
        self._lock = threading.Lock()
        self._default_mtu = 0  # the host's default-route MTU, read once
        if settings.iptables and not self.chains.available:
            log.warning("%s", self.chains.reason)

    def _host_mtu(self) -> int:
        """The MTU of the host's default-route interface (1500 without one), read once."""
        if not self._default_mtu:
            self._default_mtu = self.netlink.default_mtu()
        return self._default_mtu

    @property
    def iptables_active(self) -> bool:
        """Whether rules are added: asked for (``--iptables``) and an ``iptables`` was found."""
        return self.settings.iptables and self.chains.available

    def status(self) -> list[tuple[str, str]]:
        """Key/values for ``info``: whether iptables rules are in use, and why not."""
        if not self.settings.iptables:
            return [("iptables", "disabled (--iptables=false)")]
        return [("iptables", "enabled" if self.chains.available else self.chains.reason)]

    def setup(self) -> None:
        """Turn on IP forwarding if asked (remembering the old value) and create the chains."""
        if self.settings.ip_forward:
            try:
                old = self._ip_forward.read_text().strip()
                if old != "1":
                    self._ip_forward.write_text("1\n")
                    self._forward_was = old
            except OSError as exc:
                log.warning("cannot enable IP forwarding: %s", exc)
        if self.iptables_active:
            self.chains.setup()

    def shutdown(self) -> None:
        """Remove the chains and rules, restore IP forwarding, delete bridges with no ports."""
        self.chains.close()
        with self._lock:
            self._extra.clear()
            bridges, self._bridges = list(self._bridges), {}
        if self._forward_was is not None:
            try:
                self._ip_forward.write_text(self._forward_was + "\n")
            except OSError as exc:
                log.warning("cannot restore IP forwarding: %s", exc)
            self._forward_was = None
        for bridge in bridges:
            if self.netlink.bridge_ports(bridge) == 0:
                self.netlink.delete_link(bridge)

    def create(self, network: Network) -> None:
        """Make (or adopt) the network's bridge with the gateway address and add its rules."""
        _ifname("bridge", network.bridge)
        address = _gateway_cidr(network)
        link = self.netlink.find_link(network.bridge)
        if link is None:
            mtu = network.mtu or self._host_mtu()
            self.netlink.create_bridge(network.bridge, address, mtu)
        elif link.kind != "bridge":
            kind = link.kind or "non-bridge"
            raise FailedPrecondition(f"bridge {network.bridge}: exists as a {kind} device")
        elif not link.addresses:
            self.netlink.add_address(network.bridge, address)
        elif not any(_same(a, address) for a in link.addresses):
            has = ", ".join(link.addresses)
            raise FailedPrecondition(
                f"bridge {network.bridge}: has address {has} "
                f"but network {network.name} needs {address}"
            )
        elif not link.up:
            self.netlink.set_up(network.bridge)
        with self._lock:
            self._bridges[network.bridge] = None
            self._extra.setdefault(network.id, {})
        if self.iptables_active:
            for rule in network_rules(self.chains.names, network):
                self.chains.add(rule)

    def delete(self, network: Network) -> None:
        """Remove the network's rules (its ports' and links' too) and its bridge."""
        with self._lock:
            extra = list(self._extra.pop(network.id, {}))
            self._bridges.pop(network.bridge, None)
        if self.iptables_active:
            for rule in extra + network_rules(self.chains.names, network):
                self.chains.remove(rule)
        self.netlink.delete_link(network.bridge)

    def join(self, network: Network, iface: Interface, pid: int) -> None:
        """Attach a veth to the bridge and put its peer, configured, in the namespace of *pid*."""
        _ifname("host_ifname", iface.host_ifname)
        _ifname("ifname", iface.ifname)
        peer = Peer(
            pid=pid,
            ifname=iface.ifname,
            address=f"{iface.ip}/{iface.prefixlen}",
            mtu=network.mtu or self._host_mtu(),
            mac=iface.mac,
            gateway=iface.gateway,
        )
        try:
            self.netlink.add_veth(network.bridge, iface.host_ifname, peer)
        except FileNotFoundError as exc:
            if exc.errno == errno.ENODEV:
                raise FailedPrecondition(f"bridge {network.bridge}: does not exist") from exc
            raise NotFound(f"pid {pid}: no such process (container {iface.container_id})") from exc
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise AlreadyExists(
                    f"interface {iface.host_ifname} or {iface.ifname} of container "
                    f"{iface.container_id}: exists already"
                ) from exc
            raise

    def leave(self, network: Network, iface: Interface) -> None:
        """Delete the veth's host end; the kernel removes the peer (nothing if already gone)."""
        self.netlink.delete_link(iface.host_ifname)

    def publish(self, network: Network, port: PortMap) -> None:
        """Add the DNAT rule for *port* and the FORWARD rule that lets it reach the container."""
        if not self.iptables_active:
            return
        for rule in publish_rules(self.chains.names, network.bridge, port):
            self.chains.add(rule)
            with self._lock:
                self._extra.setdefault(network.id, {})[rule] = None

    def unpublish(self, network: Network, port: PortMap) -> None:
        """Remove the rules ``publish`` added for *port*."""
        if not self.iptables_active:
            return
        self._drop(network, publish_rules(self.chains.names, network.bridge, port))

    def link(self, network: Network, rule: LinkRule, enable: bool) -> None:
        """Add (or remove) the two ACCEPT rules of a legacy link, ahead of the icc DROP."""
        if not self.iptables_active:
            return
        rules = link_rules(self.chains.names, network.bridge, rule)
        if not enable:
            self._drop(network, rules)
            return
        for r in rules:
            self.chains.add(r)
            with self._lock:
                self._extra.setdefault(network.id, {})[r] = None

    def host_routes(self) -> list[str]:
        """The destinations (CIDR) of the host's IPv4 routes, the default route left out."""
        return self.netlink.host_routes()

    def _drop(self, network: Network, rules: list[Rule]) -> None:
        for rule in rules:
            self.chains.remove(rule)
            with self._lock:
                self._extra.get(network.id, {}).pop(rule, None)


def _same(a: str, b: str) -> bool:
    return ipaddress.IPv4Interface(a) == ipaddress.IPv4Interface(b)
