"""Job plugins: third-party packages that register their own jobs at daemon start.

A plugin is a function ``install(engine)`` that calls ``engine.register(...)``. It is found through
the entry-point group ``dockyard.jobs.v1`` (``name = module:install`` in the package's metadata) or
named on the command line (``dockyard daemon --plugin module:install``). A plugin that fails to
import or to install is logged as a warning naming it; what it registered before failing is
unregistered again, and the daemon starts without it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Final

from engine.engine import Engine
from engine.errors import InvalidArgument

log = logging.getLogger(__name__)

GROUP: Final = "dockyard.jobs.v1"
Install = Callable[[Engine], None]


@dataclass(slots=True)
class PluginReport:
    """Which plugins loaded (with the jobs each added) and which failed (with why)."""

    loaded: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def load_plugins(engine: Engine, specs: Sequence[str] = (), group: str = GROUP) -> PluginReport:
    """Install every entry-point plugin of *group*, then each ``module[:attr]`` in *specs*."""
    report = PluginReport()
    candidates: list[tuple[str, Callable[[], object]]] = [
        (f"{ep.name} ({ep.value})", ep.load) for ep in entry_points(group=group)
    ]
    candidates += [(spec, _loader(spec)) for spec in specs]
    for name, load in candidates:
        before = set(engine.names())
        try:
            install = load()
            if not callable(install):
                raise InvalidArgument(f"{install!r} is not callable")
            install(engine)
        except Exception as exc:
            for added in set(engine.names()) - before:
                engine.unregister(added)
            report.failed[name] = f"{type(exc).__name__}: {exc}"
            log.warning("plugin %s failed to load: %s", name, report.failed[name])
        else:
            report.loaded[name] = sorted(set(engine.names()) - before)
    log.info(
        "loaded %d plugin(s)%s",
        len(report.loaded),
        "".join(f"; {n}: {', '.join(jobs) or 'no jobs'}" for n, jobs in report.loaded.items()),
    )
    return report


def _loader(spec: str) -> Callable[[], object]:
    module, _, attr = spec.partition(":")

    def load() -> object:
        return getattr(importlib.import_module(module), attr or "install")

    return load
