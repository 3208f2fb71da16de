"""The networks a daemon knows: the store's rows, cached, and the bridges made for them.

Vocabulary: the *predefined* networks are ``bridge`` (the daemon's default bridge, ``--bridge``
on ``--bip`` or the first free default pool), ``host`` and ``none``; their ids are stable for an
engine. A network's *driver view* (``driver_network``) folds in the daemon's MTU and, for the
default bridge, ``--icc`` and ``--ip-masq``.

Lifecycle: ``setup`` at daemon start makes the predefined rows (moving the default bridge when
``--bridge``/``--bip`` changed and nothing runs on it) and brings up every bridge network; a
daemon whose default network is not the bridge still starts when bridges cannot be made (no
root), and says why to containers that ask for one.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
from collections.abc import Mapping
from typing import Final

from drivers.network.base import Network, NetworkDriver, Settings
from engine.errors import EngineError, FailedPrecondition, InvalidArgument
from graph.networks import NetworkRecord, NetworkStore, choose_subnet, gateway_of

log = logging.getLogger("network")

PREDEFINED_DRIVERS: Final = {"bridge": "bridge", "host": "host", "none": "null"}
ICC: Final = "com.docker.network.bridge.enable_icc"


def predefined_id(engine_id: str, name: str) -> str:
    """The stable id (64 hex) of predefined network *name* on the engine *engine_id*."""
    return hashlib.sha256(f"{engine_id}\0network\0{name}".encode()).hexdigest()


class Networks:
    """The daemon's networks and their drivers; see the module docstring."""

    def __init__(
        self,
        store: NetworkStore,
        drivers: Mapping[str, NetworkDriver],
        settings: Settings,
        default: str,
        engine_id: str,
    ) -> None:
        self.store, self.drivers, self.settings = store, drivers, settings
        self.default = default  # the network "default" means: bridge, host or none
        self.engine_id = engine_id
        self.mtu = settings.mtu  # 0: the driver uses the host's default-route MTU
        self.bridge_error = ""  # why bridge networks cannot be used, when they cannot
        self._records: dict[str, NetworkRecord] | None = None

    def records(self) -> dict[str, NetworkRecord]:
        """Every network by name, cached until ``refresh``."""
        if self._records is None:
            self._records = {r.name: r for r in self.store.all()}
        return self._records

    def refresh(self) -> None:
        """Forget the cached networks (after one was created or removed)."""
        self._records = None

    def named(self, name: str) -> NetworkRecord:
        """The network *name* (a name, else an id or id prefix); NotFound."""
        record = self.records().get(name)
        return record if record is not None else self.store.get(name)

    def resolve_mode(self, mode: str) -> str:
        """``default`` (or blank) as the daemon's default network, anything else as given."""
        return self.default if mode in ("", "default") else mode

    # -- daemon lifecycle ------------------------------------------------------------------------

    async def setup(self, created: str) -> None:
        """Make the predefined networks and bring up every bridge the store knows."""
        await asyncio.to_thread(self._predefined, created)
        self.refresh()
        try:
            await asyncio.to_thread(self._bridges)
        except (EngineError, OSError) as exc:
            if self.default == "bridge":
                raise
            # A daemon whose default network is not the bridge still runs without one (no
            # root, no netlink); containers that ask for a bridge network are told why not.
            self.bridge_error = str(exc)
            log.warning("bridge networks are unavailable: %s", exc)

    def _bridges(self) -> None:
        bridge = self.drivers["bridge"]
        bridge.setup()
        for record in self.store.all():
            if record.driver == "bridge":
                bridge.create(self.driver_network(record))

    def _predefined(self, created: str) -> None:
        known = {r.name: r for r in self.store.all()}
        for name, driver in PREDEFINED_DRIVERS.items():
            record = known.get(name)
            if name != "bridge":
                if record is None:
                    self.store.create(self._record(name, driver, "", "", "", created))
                continue
            subnet, gateway = self._bridge_subnet(record)
            if record is None:
                self.store.create(
                    self._record(name, driver, subnet, gateway, self.settings.fixed_cidr, created)
                )
            elif (record.subnet, record.gateway, record.bridge) != (
                subnet, gateway, self.settings.bridge
            ):  # fmt: skip
                if self.store.endpoints(network_id=record.id):
                    raise FailedPrecondition(
                        f"bridge {self.settings.bridge}: containers still run on "
                        f"{record.subnet} ({record.bridge}); stop them before changing "
                        "--bridge or --bip"
                    )
                self.store.update_subnet(
                    record.id, subnet, gateway, self.settings.fixed_cidr, self.settings.bridge
                )

    def _bridge_subnet(self, record: NetworkRecord | None) -> tuple[str, str]:
        if self.settings.bip:
            try:
                iface = ipaddress.IPv4Interface(self.settings.bip)
            except ValueError:
                raise InvalidArgument(f"bip: invalid address {self.settings.bip!r}") from None
            return str(iface.network), str(iface.ip)
        if record is not None and record.subnet and record.bridge == self.settings.bridge:
            return record.subnet, record.gateway
        taken = [r.subnet for r in self.store.all() if r.subnet and r.name != "bridge"]
        taken += self.drivers["bridge"].host_routes()
        subnet = choose_subnet(taken)
        return subnet, gateway_of(subnet)

    def _record(
        self, name: str, driver: str, subnet: str, gateway: str, ip_range: str, created: str
    ) -> NetworkRecord:
        return NetworkRecord(
            id=predefined_id(self.engine_id, name), name=name, driver=driver,
            bridge=self.settings.bridge if driver == "bridge" else "", subnet=subnet,
            gateway=gateway, ip_range=ip_range, internal=False, attachable=False, labels={},
            options=_bridge_options(self.settings) if driver == "bridge" else {},
            created=created, predefined=True,
        )  # fmt: skip

    def driver_network(self, record: NetworkRecord) -> Network:
        """The driver's view of a network record."""
        predefined = record.predefined
        icc = self.settings.icc if predefined else record.options.get(ICC, "true") != "false"
        masquerade = self.settings.ip_masq and not record.internal
        return record.to_driver(self.mtu, icc, masquerade)


def _bridge_options(settings: Settings) -> dict[str, str]:
    return {
        "com.docker.network.bridge.default_bridge": "true",
        ICC: "true" if settings.icc else "false",
        "com.docker.network.bridge.enable_ip_masquerade": "true" if settings.ip_masq else "false",
        "com.docker.network.bridge.host_binding_ipv4": settings.default_ip,
        "com.docker.network.bridge.name": settings.bridge,
        "com.docker.network.driver.mtu": str(settings.mtu or 1500),
    }
