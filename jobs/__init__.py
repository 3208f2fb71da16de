"""Job handlers, one module per area; ``INSTALLERS`` is the one list of what the daemon installs."""

from collections.abc import Callable
from typing import Final

from engine import Engine
from jobs import (
    containerinfo,
    containerio,
    containers,
    execs,
    imagegraph,
    imageio,
    images,
    introspect,
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
    execs.install,
)


def install(engine: Engine) -> None:
    """Register every built-in job with *engine*."""
    for installer in INSTALLERS:
        installer(engine)
