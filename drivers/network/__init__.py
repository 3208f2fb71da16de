"""Network drivers: the one table of built-ins and how the daemon picks one.

``select`` takes a name (the daemon's option), else ``DOCKER_NETWORKDRIVER``, else
``"bridge"``. A name that is not in the table is refused with the names that are. The bridge
driver is imported only when it is chosen (it loads pyroute2). See ``base`` for the contract.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from drivers.network.base import (
    DEFAULT_BRIDGE,
    ENV_VAR,
    Interface,
    LinkRule,
    Network,
    NetworkDriver,
    PortMap,
    Proto,
    Sandbox,
    Settings,
)
from drivers.network.host import HostDriver
from drivers.network.null import NullDriver
from engine.errors import InvalidArgument

Factory = Callable[[Settings], NetworkDriver]
DEFAULT: Final = "bridge"


def _bridge(settings: Settings) -> NetworkDriver:
    from drivers.network.bridge import BridgeDriver

    return BridgeDriver(settings)


BUILTINS: Final[dict[str, Factory]] = {
    "bridge": _bridge,
    "host": HostDriver,
    "none": NullDriver,
}


def chosen(name: str, env: Mapping[str, str]) -> str:
    """The table name of the driver named *name*, else by ``DOCKER_NETWORKDRIVER``, else the
    bridge driver's; it is also the name of the network ``default`` means."""
    found = name or env.get(ENV_VAR, "") or DEFAULT
    if found not in BUILTINS:
        known = ", ".join(sorted(BUILTINS))
        raise InvalidArgument(f"network driver: unknown driver {found!r} (known: {known})")
    return found


def select(name: str, env: Mapping[str, str], settings: Settings) -> NetworkDriver:
    """The driver named *name*, else by ``DOCKER_NETWORKDRIVER``, else the bridge driver."""
    return BUILTINS[chosen(name, env)](settings)


__all__ = [
    "BUILTINS",
    "DEFAULT",
    "DEFAULT_BRIDGE",
    "ENV_VAR",
    "Factory",
    "Interface",
    "LinkRule",
    "Network",
    "NetworkDriver",
    "PortMap",
    "Proto",
    "Sandbox",
    "Settings",
    "chosen",
    "select",
]
