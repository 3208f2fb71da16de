"""Job handlers, one module per area; ``INSTALLERS`` is the one list of what the daemon installs."""

from collections.abc import Callable
from typing import Final

from engine import Engine
from jobs import (
    attach,
    containerinfo,
    containerio,
    containers,
    diskusage,
    events,
    execs,
    fsck,
    imagegraph,
    imageio,
    images,
    introspect,
    networks,
    prune,
    pull,
    push,
    registryauth,
    search,
    system,
    volumes,
)

INSTALLERS: Final[tuple[Callable[[Engine], None], ...]] = (
    introspect.install,
    system.install,
    images.install,
    imageio.install,
    imagegraph.install,
    volumes.install,
    containers.install,
    containerinfo.install,
    containerio.install,
    attach.install,
    execs.install,
    events.install,
    prune.install,
    diskusage.install,
    fsck.install,
    networks.install,
    search.install,
    pull.install,
    push.install,
    registryauth.install,
)


def install(engine: Engine) -> None:
    """Register every built-in job with *engine*."""
    for installer in INSTALLERS:
        installer(engine)
