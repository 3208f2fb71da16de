"""The network store: networks, their endpoints and IPv4 address management (IPAM), in the GraphDB.

Glossary: a *network* (row of ``networks``) is a named layer-2 segment handled by one network
driver; the predefined ones (``bridge``, ``host``, ``none``) are made by the daemon and carry
``predefined``. Its *subnet* is an IPv4 CIDR ('' for drivers without addresses: host, null), its
*gateway* the bridge's own address, its *ip_range* the part of the subnet addresses are allocated
from ('' = the whole subnet). An *endpoint* (row of ``endpoints``) is one container's attachment
to one network: its interface name in the container (``eth0``…), its *IP* allocation, the *MAC*
derived from it, DNS *aliases* and the *ports* published through it. The network, broadcast and
gateway addresses are never allocated. Addresses are validated and picked by ``graph.ipam``
(whose names are re-exported here); this module keeps them in the database.

Lifecycle: a network row lives from ``create`` until ``delete``, which is refused while it has
endpoints. An endpoint is made by ``allocate`` when a container starts on the network (or is
connected while running) and removed by ``release``/``release_all`` when it stops, is
disconnected or removed; deleting the container row removes its endpoints (CASCADE). Endpoints
survive a daemon restart: ``allocate`` for an existing (network, container) returns the endpoint
unchanged, so restoring a running container keeps its address. Automatic allocation is
round-robin: it continues after ``last_ip`` (the cursor), wrapping at the end of the pool, so a
released address is not handed out again at once.

Example::

    store = NetworkStore(db)
    net = store.create(NetworkRecord(id=..., name="web", driver="bridge", bridge="br-1",
                                     subnet="172.18.0.0/16", gateway="172.18.0.1"))
    ep = store.allocate(net.id, container_id, ifname="eth0")   # ep.ip == "172.18.0.2"
    store.release(net.id, container_id)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from typing import Final, TypedDict

import sqlite_utils

from drivers.network.base import Network, Proto
from engine.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from graph.db import GraphDB, Row
from graph.ipam import (
    DEFAULT_POOLS,
    IP_FIELD,
    check_requested,
    check_subnet,
    choose_subnet,
    gateway_of,
    mac_for,
    next_free,
)

__all__ = [
    "DEFAULT_POOLS", "IP_FIELD", "PROTOS", "Endpoint", "NetworkNotFound", "NetworkRecord",
    "NetworkStore", "PoolOverlap", "PortRecord", "check_subnet", "choose_subnet", "gateway_of",
    "mac_for",
]  # fmt: skip

PROTOS: Final = frozenset({"tcp", "udp", "sctp"})


class NetworkNotFound(NotFound):
    """No network has that id, name or id prefix."""


class PoolOverlap(AlreadyExists):
    """The subnet overlaps another network's."""


class PortRecord(TypedDict):
    """A port published through an endpoint: host_ip:host_port/proto → container_port."""

    proto: Proto
    host_ip: str
    host_port: int
    container_port: int


@dataclass(frozen=True, slots=True)
class NetworkRecord:
    """One row of ``networks``; see the module docstring for the vocabulary."""

    id: str
    name: str
    driver: str
    bridge: str = ""
    subnet: str = ""
    gateway: str = ""
    ip_range: str = ""
    internal: bool = False
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    created: str = ""  # RFC 3339; "" = now, filled in by ``create``
    predefined: bool = False
    last_ip: str = ""

    def to_driver(self, mtu: int, icc: bool, masquerade: bool) -> Network:
        """The network as its driver sees it, with the daemon's *mtu*, *icc* and *masquerade*."""
        return Network(
            id=self.id, name=self.name, bridge=self.bridge, subnet=self.subnet,
            gateway=self.gateway, internal=self.internal, icc=icc, masquerade=masquerade, mtu=mtu,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One container's attachment to one network (prefixlen and gateway are the network's)."""

    network_id: str
    container_id: str
    ifname: str
    ip: str
    prefixlen: int
    mac: str
    gateway: str
    aliases: tuple[str, ...] = ()
    ports: tuple[PortRecord, ...] = ()


def _network(row: Row) -> NetworkRecord:
    return NetworkRecord(
        id=row["id"], name=row["name"], driver=row["driver"], bridge=row["bridge"],
        subnet=row["subnet"], gateway=row["gateway"], ip_range=row["ip_range"],
        internal=bool(row["internal"]), attachable=bool(row["attachable"]),
        labels=json.loads(row["labels"]), options=json.loads(row["options"]),
        created=row["created"], predefined=bool(row["predefined"]), last_ip=row["last_ip"],
    )  # fmt: skip


def _endpoint(row: Row) -> Endpoint:
    subnet = row["subnet"]
    return Endpoint(
        network_id=row["network_id"], container_id=row["container_id"], ifname=row["ifname"],
        ip=row["ip"], prefixlen=IPv4Network(subnet).prefixlen if subnet else 0, mac=row["mac"],
        gateway=row["gateway"], aliases=tuple(json.loads(row["aliases"])),
        ports=tuple(json.loads(row["ports"])),
    )  # fmt: skip


_ENDPOINTS: Final = (
    "SELECT e.*, n.subnet, n.gateway FROM endpoints e JOIN networks n ON n.id = e.network_id"
)
_BUSY: Final = "SELECT 1 FROM endpoints WHERE network_id = ? LIMIT 1"
_ONE: Final = _ENDPOINTS + " WHERE e.network_id = ? AND e.container_id = ?"


def _fetch(tx: sqlite_utils.Database, sql: str, params: Sequence[object] = ()) -> list[Row]:
    """Rows of *sql* run on the transaction's connection, as dicts."""
    cursor = tx.execute(sql, tuple(params))
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class NetworkStore:
    """Networks and endpoints in the GraphDB; each mutating method is one write transaction."""

    def __init__(self, db: GraphDB) -> None:
        self.db = db

    def create(self, record: NetworkRecord) -> NetworkRecord:
        """Insert *record* (subnet normalised, gateway filled in); AlreadyExists if its name or id
        is taken, PoolOverlap if its subnet overlaps another network's."""
        if len(record.id) != 64 or any(c not in "0123456789abcdef" for c in record.id):
            raise InvalidArgument(f"invalid network id {record.id!r}")
        if not record.name or not record.driver:
            raise InvalidArgument("a network needs a name and a driver")
        subnet, gateway, ip_range = check_subnet(record.subnet, record.gateway, record.ip_range)
        created = record.created or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with self.db.write() as tx:
            if _fetch(tx, "SELECT 1 FROM networks WHERE name = ?", (record.name,)):
                raise AlreadyExists(f"network with name {record.name} already exists")
            if _fetch(tx, "SELECT 1 FROM networks WHERE id = ?", (record.id,)):
                raise AlreadyExists(f"network with id {record.id} already exists")
            _refuse_overlap(tx, record.name, record.id, subnet)
            tx.execute(
                "INSERT INTO networks (id, name, driver, bridge, subnet, gateway, ip_range,"
                " internal, attachable, labels, options, created, predefined, last_ip)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id, record.name, record.driver, record.bridge, subnet, gateway,
                    ip_range, int(record.internal), int(record.attachable),
                    json.dumps(record.labels, sort_keys=True),
                    json.dumps(record.options, sort_keys=True), created, int(record.predefined),
                    record.last_ip,
                ),
            )  # fmt: skip
        return self.get(record.id)

    def get(self, term: str) -> NetworkRecord:
        """The network whose full id, else exact name, else unique id prefix is *term*;
        NetworkNotFound if none, InvalidArgument if the prefix is ambiguous."""
        for sql in ("SELECT * FROM networks WHERE id = ?", "SELECT * FROM networks WHERE name = ?"):
            rows = self.db.query(sql, (term,))
            if rows:
                return _network(rows[0])
        rows = self.db.query(
            "SELECT * FROM networks WHERE substr(id, 1, ?) = ?", (len(term), term)
        ) if term else []  # fmt: skip
        if len(rows) > 1:
            raise InvalidArgument(
                f"network {term} is ambiguous ({len(rows)} matches found based on ID prefix)"
            )
        if not rows:
            raise NetworkNotFound(f"network {term} not found")
        return _network(rows[0])

    def all(self) -> list[NetworkRecord]:
        """Every network, by name."""
        return [_network(r) for r in self.db.query("SELECT * FROM networks ORDER BY name")]

    def delete(self, id: str) -> None:
        """Remove network *id*; NetworkNotFound if absent, FailedPrecondition with endpoints."""
        with self.db.write() as tx:
            net = _row(tx, id)
            if _fetch(tx, _BUSY, (id,)):
                raise FailedPrecondition(
                    f"error while removing network: network {net.name} id {id} has active endpoints"
                )
            tx.execute("DELETE FROM networks WHERE id = ?", (id,))

    def update_subnet(
        self, id: str, subnet: str, gateway: str, ip_range: str, bridge: str
    ) -> NetworkRecord:
        """Give network *id* new addresses and bridge (resetting the cursor); FailedPrecondition
        if it has endpoints, PoolOverlap if the subnet overlaps another network's."""
        subnet, gateway, ip_range = check_subnet(subnet, gateway, ip_range)
        with self.db.write() as tx:
            net = _row(tx, id)
            if _fetch(tx, _BUSY, (id,)):
                raise FailedPrecondition(
                    f"cannot change the subnet of network {net.name}: it has active endpoints"
                )
            _refuse_overlap(tx, net.name, id, subnet)
            tx.execute(
                "UPDATE networks SET subnet = ?, gateway = ?, ip_range = ?, bridge = ?,"
                " last_ip = '' WHERE id = ?",
                (subnet, gateway, ip_range, bridge, id),
            )
        return self.get(id)

    def allocate(
        self,
        network_id: str,
        container_id: str,
        *,
        ifname: str,
        ip: str = "",
        aliases: Sequence[str] = (),
    ) -> Endpoint:
        """Attach *container_id* to *network_id* with address *ip* (the next free one if "");
        return the existing endpoint unchanged if there is one. InvalidArgument for a bad or
        taken *ip*, FailedPrecondition when the pool is exhausted."""
        with self.db.write() as tx:
            net = _row(tx, network_id)
            existing = _fetch(tx, _ONE, (network_id, container_id))
            if existing:
                return _endpoint(existing[0])
            if not _fetch(tx, "SELECT 1 FROM containers WHERE id = ?", (container_id,)):
                raise NotFound(f"No such container: {container_id}")
            used = {
                int(IPv4Address(r[0]))
                for r in tx.execute(
                    "SELECT ip FROM endpoints WHERE network_id = ? AND ip != ''", (network_id,)
                )
            }
            if ip:
                address = check_requested(net, ip, used)
            elif net.subnet:
                address = next_free(net, used)
                tx.execute("UPDATE networks SET last_ip = ? WHERE id = ?", (address, network_id))
            else:
                address = ""  # host and null networks: attached, without an address
            tx.execute(
                "INSERT INTO endpoints (network_id, container_id, ifname, ip, mac, aliases, ports)"
                " VALUES (?, ?, ?, ?, ?, ?, '[]')",
                (
                    network_id, container_id, ifname, address,
                    mac_for(address) if address else "", json.dumps(list(dict.fromkeys(aliases))),
                ),
            )  # fmt: skip
            row = _fetch(tx, _ONE, (network_id, container_id))
        return _endpoint(row[0])

    def release(self, network_id: str, container_id: str) -> None:
        """Remove the endpoint of *container_id* on *network_id*, if there is one."""
        with self.db.write() as tx:
            tx.execute(
                "DELETE FROM endpoints WHERE network_id = ? AND container_id = ?",
                (network_id, container_id),
            )

    def release_all(self, container_id: str) -> list[Endpoint]:
        """Remove every endpoint of *container_id*; return the endpoints removed."""
        with self.db.write() as tx:
            rows = _fetch(
                tx, _ENDPOINTS + " WHERE e.container_id = ? ORDER BY e.network_id", (container_id,)
            )
            tx.execute("DELETE FROM endpoints WHERE container_id = ?", (container_id,))
        return [_endpoint(r) for r in rows]

    def endpoints(
        self, network_id: str | None = None, container_id: str | None = None
    ) -> list[Endpoint]:
        """The endpoints (of one network and/or container if given), by network and container."""
        sql, params = _ENDPOINTS + " WHERE 1", list[str]()
        if network_id is not None:
            sql, params = sql + " AND e.network_id = ?", [*params, network_id]
        if container_id is not None:
            sql, params = sql + " AND e.container_id = ?", [*params, container_id]
        rows = self.db.query(sql + " ORDER BY e.network_id, e.container_id", params)
        return [_endpoint(r) for r in rows]

    def set_ports(
        self, network_id: str, container_id: str, ports: Sequence[Mapping[str, object]]
    ) -> None:
        """Record the ports (PortRecord-shaped) published through an endpoint; InvalidArgument
        for a malformed one, NotFound if there is no endpoint."""
        for port in ports:
            _check_port(port)
        with self.db.write() as tx:
            cursor = tx.execute(
                "UPDATE endpoints SET ports = ? WHERE network_id = ? AND container_id = ?",
                (json.dumps([dict(p) for p in ports]), network_id, container_id),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"container {container_id} has no endpoint on network {network_id}")


def _row(tx: sqlite_utils.Database, id: str) -> NetworkRecord:
    rows = _fetch(tx, "SELECT * FROM networks WHERE id = ?", (id,))
    if not rows:
        raise NetworkNotFound(f"network {id} not found")
    return _network(rows[0])


def _refuse_overlap(tx: sqlite_utils.Database, name: str, id: str, subnet: str) -> None:
    """Raise PoolOverlap if *subnet* overlaps the subnet of a network other than *id*."""
    if not subnet:
        return
    mine = IPv4Network(subnet)
    for other in _fetch(tx, "SELECT name, subnet FROM networks WHERE subnet != '' AND id != ?",
                        (id,)):  # fmt: skip
        if mine.overlaps(IPv4Network(other["subnet"])):
            raise PoolOverlap(
                f"Pool overlaps with other one on this address space: subnet {subnet} of network"
                f" {name} overlaps subnet {other['subnet']} of network {other['name']}"
            )


def _check_port(port: Mapping[str, object]) -> None:
    """Raise InvalidArgument unless *port* is a well-formed PortRecord."""
    if set(port) != set(PortRecord.__annotations__) or port["proto"] not in PROTOS:
        raise InvalidArgument(f"invalid published port {dict(port)}")
    for key, low in (("host_port", 0), ("container_port", 1)):
        value = port[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= 65535:
            raise InvalidArgument(f"invalid published port {dict(port)}: {key}")
