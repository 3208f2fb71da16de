"""The null network driver (network "none"): a namespace of its own with only loopback.

No traffic can reach such a container from outside or leave it, so nothing is connected (see
``host.Unconnected``).
"""

from __future__ import annotations

from drivers.network.base import Sandbox
from drivers.network.host import Unconnected


class NullDriver(Unconnected):
    """Containers get an isolated namespace with loopback only."""

    name: str = "null"
    sandbox: Sandbox = "new"
