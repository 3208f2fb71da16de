"""IPv4 address management (IPAM) of the network store: pure functions, no database.

Vocabulary: a *subnet* is a network's IPv4 CIDR (host bits cleared); its *gateway* is the
bridge's own address (by default the first host address); its *ip_range* is the part of the
subnet addresses are allocated from ('' = the whole subnet), the *pool*. The network,
broadcast and gateway addresses are never allocated. *Default pools* are Docker's: a network
created without a subnet gets the first that overlaps no other network. The *cursor*
(``last_ip``) makes automatic allocation round-robin: ``next_free`` continues after it,
wrapping at the end of the pool, so a released address is not handed out again at once. The
*MAC* of an interface is derived from its address.

``check_subnet`` validates what a user asks for (``--subnet/--gateway/--ip-range``) and
``check_requested`` an address asked for by a container; both raise InvalidArgument (or
NotSupported for IPv6) naming the field of the API body.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from typing import TYPE_CHECKING, Final

from engine.errors import FailedPrecondition, InvalidArgument, NotSupported

if TYPE_CHECKING:
    from graph.networks import NetworkRecord

# Docker's default address pools: 172.17-31.0.0/16, then 192.168.0.0/16 cut into /20s.
DEFAULT_POOLS: Final = tuple(IPv4Network(f"172.{n}.0.0/16") for n in range(17, 32)) + tuple(
    IPv4Network(f"192.168.{n}.0/20") for n in range(0, 256, 16)
)
IP_FIELD: Final = "IPAMConfig.IPv4Address"


def check_requested(net: NetworkRecord, ip: str, used: set[int]) -> str:
    """Return *ip* if the caller may have it on *net*; else raise InvalidArgument."""
    if not net.subnet:
        raise InvalidArgument(f"{IP_FIELD}: network {net.name} has no subnet to take {ip} from")
    try:
        address = IPv4Address(ip)
    except ValueError:
        raise InvalidArgument(f"{IP_FIELD}: invalid IPv4 address {ip!r}") from None
    subnet = IPv4Network(net.subnet)
    pool = IPv4Network(net.ip_range) if net.ip_range else subnet
    if address not in pool or address in (subnet.network_address, subnet.broadcast_address):
        raise InvalidArgument(
            f"{IP_FIELD}: {ip}: requested address is out of range (network {net.name}"
            f" allocates from {pool}, without its network and broadcast addresses)"
        )
    if address == IPv4Address(net.gateway) or int(address) in used:
        raise InvalidArgument(f"{IP_FIELD}: {ip} on network {net.name}: Address already in use")
    return str(address)


def next_free(net: NetworkRecord, used: set[int]) -> str:
    """The first free address of *net*'s pool after its cursor, wrapping around; O(len(used))."""
    subnet = IPv4Network(net.subnet)
    pool = IPv4Network(net.ip_range) if net.ip_range else subnet
    blocked = used | {int(subnet.network_address), int(subnet.broadcast_address)}
    blocked.add(int(IPv4Address(net.gateway)))
    start, size = int(pool.network_address), pool.num_addresses
    offset = 0
    if net.last_ip and IPv4Address(net.last_ip) in pool:
        offset = int(IPv4Address(net.last_ip)) - start + 1
    # Among more consecutive candidates than there are blocked addresses, one is free: no need
    # to walk the whole pool (a /16 has 65536 addresses).
    for step in range(min(size, len(blocked) + 1)):
        candidate = start + (offset + step) % size
        if candidate not in blocked:
            return str(IPv4Address(candidate))
    raise FailedPrecondition(
        f"no available IPv4 addresses on this network's address pools: {net.name} ({net.id})"
    )


def mac_for(ip: str) -> str:
    """The MAC of an interface with IPv4 address *ip*: 02:42 and the address's four bytes."""
    try:
        packed = IPv4Address(ip).packed
    except ValueError:
        raise InvalidArgument(f"invalid IPv4 address {ip!r}") from None
    return "02:42:" + ":".join(f"{b:02x}" for b in packed)


def gateway_of(subnet: str) -> str:
    """The first host address of *subnet* (the conventional gateway)."""
    return str(_cidr("subnet", subnet).network_address + 1)


def choose_subnet(taken: Sequence[str]) -> str:
    """The first of Docker's default pools that overlaps none of *taken* (CIDRs; 0.0.0.0/0 and
    IPv6 ignored); FailedPrecondition if every pool is taken."""
    nets = []
    for text in taken:
        try:
            net = ip_network(text, strict=False)
        except ValueError:
            raise InvalidArgument(f"invalid CIDR {text!r}") from None
        if isinstance(net, IPv4Network) and net.prefixlen > 0:
            nets.append(net)
    for pool in DEFAULT_POOLS:
        if not any(pool.overlaps(net) for net in nets):
            return str(pool)
    raise FailedPrecondition(
        "could not find an available, non-overlapping IPv4 address pool among the defaults to"
        " assign to the network"
    )


def check_subnet(subnet: str, gateway: str = "", ip_range: str = "") -> tuple[str, str, str]:
    """Validate ``--subnet/--gateway/--ip-range``; return them normalised (host bits cleared,
    gateway defaulting to the first host). All "" when no subnet is given."""
    if not subnet:
        if gateway or ip_range:
            raise InvalidArgument("IPAM.Config[0].Subnet: a gateway or an IP range needs a subnet")
        return "", "", ""
    net = _cidr("IPAM.Config[0].Subnet", subnet)
    if net.prefixlen > 30:
        raise InvalidArgument(
            f"IPAM.Config[0].Subnet: {subnet}: a /{net.prefixlen} has no room for a gateway and"
            " a container (at most /30)"
        )
    gw = net.network_address + 1
    if gateway:
        try:
            parsed = ip_address(gateway)
        except ValueError:
            raise InvalidArgument(f"IPAM.Config[0].Gateway: invalid address {gateway!r}") from None
        if not isinstance(parsed, IPv4Address):
            raise NotSupported(f"IPAM.Config[0].Gateway: {gateway}: IPv6 is not supported yet")
        if parsed not in net or parsed in (net.network_address, net.broadcast_address):
            raise InvalidArgument(
                f"IPAM.Config[0].Gateway: {gateway} is not a host address of subnet {net}"
            )
        gw = parsed
    rng = ""
    if ip_range:
        parsed_range = _cidr("IPAM.Config[0].IPRange", ip_range)
        if not parsed_range.subnet_of(net):
            raise InvalidArgument(f"IPAM.Config[0].IPRange: {ip_range} is not inside subnet {net}")
        rng = str(parsed_range)
    return str(net), str(gw), rng


def _cidr(name: str, text: str) -> IPv4Network:
    """Parse CIDR *text* of field *name* (host bits cleared); IPv6 is NotSupported."""
    try:
        net = ip_network(text, strict=False) if "/" in text else None
    except ValueError:
        net = None
    if net is None:
        raise InvalidArgument(f"{name}: invalid CIDR {text!r}")
    if not isinstance(net, IPv4Network):
        raise NotSupported(f"{name}: {text}: IPv6 is not supported yet (IPv4 only)")
    return net
