"""Graph drivers: the contract every storage driver meets, the registry and driver selection.

A graph driver stores *layers* as directory trees. Each layer but the first derives from a
*parent* and starts out holding the parent's contents; what a layer adds, changes or deletes on
top of its parent is its *diff*. How a driver shares data between a layer and its parent is its
own business: vfs copies, overlay stacks directories with overlayfs, btrfs snapshots subvolumes.

Glossary (one word per concept across code, API and CLI):

- ``id``: a layer id, 64 lowercase hex digits, or ``<id>-init`` for a container's init layer.
  Ids become path components, so every driver validates them first (``validate_id``).
- ``parent``: the id a layer derives from; ``""`` means none (a base layer).
- ``home``: the driver's own directory, ``<root>/<name>`` (e.g. ``/var/lib/dockyard/overlay``).
- ``path``: the directory ``get`` returns; the layer's root file system while it is held.
- ``name``: the registered name, also the module name and the ``DOCKER_DRIVER`` value.

Lifecycle: ``create`` → ``get`` (mounts if needed, refcounted) → ``put`` (unmounts at zero) →
``remove``; ``cleanup`` at daemon exit unmounts whatever the driver still holds. A layer with
children cannot be removed (``FailedPrecondition``): remove the children first.

Example::

    driver = select(Path("/var/lib/dockyard"), [], os.environ)
    driver.create(child, parent=base)
    rootfs = driver.get(child)   # ... use it ...; then driver.put(child)
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final, Protocol, runtime_checkable

from engine.errors import AlreadyExists, InvalidArgument, NotSupported

if TYPE_CHECKING:
    from graph.archive import AppliedLayer, Change

log = logging.getLogger(__name__)

# Docker's layer and cache ids are 64 hex digits; the init layer of a container is "<id>-init".
ID_PATTERN: Final = re.compile(r"[a-f0-9]{64}(-init)?")

# Tried in this order when neither the daemon flag nor DOCKER_DRIVER names a driver.
PRIORITY: Final = ("overlay", "btrfs", "vfs")

ENV_VAR: Final = "DOCKER_DRIVER"


@runtime_checkable
class GraphDriver(Protocol):
    """Stores layers as directories. id = layer id; parent = id it derives from ("" = none).

    Lifecycle: create → get (mount, refcount) → put → remove; cleanup at daemon exit.
    """

    name: str

    def create(self, id: str, parent: str = "") -> None:
        """Create layer *id* holding *parent*'s contents; AlreadyExists / NotFound(parent)."""
        ...

    def remove(self, id: str) -> None:
        """Remove layer *id* (unmounting it); NotFound if absent, FailedPrecondition if a parent."""
        ...

    def get(self, id: str) -> Path:
        """Mount layer *id* if needed (refcounted) and return its root; NotFound if absent."""
        ...

    def put(self, id: str) -> None:
        """Release one get() of *id*; unmount when the count reaches zero."""
        ...

    def forget(self, id: str) -> None:
        """Drop every get() of *id* without unmounting (a running container keeps its root
        while the daemon restarts; the next get() reuses what is mounted)."""
        ...

    def exists(self, id: str) -> bool:
        """Return whether layer *id* exists."""
        ...

    def status(self) -> list[tuple[str, str]]:
        """Return key/value pairs for `info` (e.g. ("Backing Filesystem", "extfs"))."""
        ...

    def cleanup(self) -> None:
        """Unmount everything this driver mounted; called at daemon exit."""
        ...


@runtime_checkable
class Differ(Protocol):
    """Optional capability: compute and apply layer diffs (uncompressed tar streams)."""

    def diff(self, id: str, parent: str = "") -> BinaryIO:
        """Return a rewound tar of *id*'s changes against *parent* (all of *id* if "")."""
        ...

    def changes(self, id: str, parent: str = "") -> list[Change]:
        """List paths added, modified or deleted in *id* relative to *parent*."""
        ...

    def apply_diff(self, id: str, parent: str, stream: BinaryIO) -> AppliedLayer:
        """Apply the layer tar *stream* onto layer *id* (whose parent is *parent*)."""
        ...

    def diff_size(self, id: str, parent: str = "") -> int:
        """Return the bytes of regular files added or modified in *id* against *parent*."""
        ...


@runtime_checkable
class Lister(Protocol):
    """Optional capability: list the layers the driver keeps (for ``info`` and the checker)."""

    def ids(self) -> set[str]:
        """Return the id of every layer on disk (``-init`` layers included)."""
        ...


def layer_ids(folder: Path) -> set[str]:
    """The names in *folder* that are layer ids (a driver's layers, one entry each)."""
    try:
        return {entry.name for entry in os.scandir(folder) if ID_PATTERN.fullmatch(entry.name)}
    except FileNotFoundError:
        return set()


Factory = Callable[[Path, Sequence[str]], GraphDriver]
"""Build a driver from (home dir, driver options); raises NotSupported if it cannot run here."""


def validate_id(id: str, field: str = "id") -> str:
    """Return *id* unchanged; raise InvalidArgument unless it is a well-formed layer id."""
    if not ID_PATTERN.fullmatch(id):
        raise InvalidArgument(f"{field}: invalid layer id {id!r}")
    return id


class Registry:
    """Graph driver factories by name; refuses duplicates; selects one driver for a root."""

    def __init__(self, priority: Sequence[str] = PRIORITY) -> None:
        self._factories: dict[str, Factory] = {}
        self._priority = tuple(priority)

    def register(self, name: str, factory: Factory) -> None:
        """Register *factory* under *name*; raise AlreadyExists if the name is taken."""
        if name in self._factories:
            raise AlreadyExists(f"graphdriver {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._factories)

    def new(self, name: str, root: Path, options: Sequence[str]) -> GraphDriver:
        """Build driver *name* with home ``root/name``; InvalidArgument if unknown."""
        factory = self._factories.get(name)
        if factory is None:
            known = ", ".join(self.names()) or "none"
            raise InvalidArgument(f"unknown graphdriver {name!r} (known: {known})")
        return factory(root / name, options)

    def select(
        self, root: Path, options: Sequence[str], env: Mapping[str, str], *, name: str = ""
    ) -> GraphDriver:
        """Return the driver *name*, else $DOCKER_DRIVER, else the first supported by priority.

        A named driver is used exactly and its errors propagate. In the priority walk a driver
        raising NotSupported is logged and skipped; drivers registered outside the priority list
        are tried last. NotSupported if nothing can run here.
        """
        chosen = name or env.get(ENV_VAR, "")
        if chosen:
            driver = self.new(chosen, root, options)
            log.info("graphdriver %s selected (explicit)", chosen)
            return driver
        order = [n for n in self._priority if n in self._factories]
        order += [n for n in self.names() if n not in order]
        reasons = []
        for candidate in order:
            try:
                driver = self.new(candidate, root, options)
            except NotSupported as exc:
                log.info("skip graphdriver %s: %s", candidate, exc)
                reasons.append(f"{candidate}: {exc}")
                continue
            log.info("graphdriver %s selected", candidate)
            return driver
        raise NotSupported("no supported graphdriver found: " + ("; ".join(reasons) or "none"))


_registry: Final = Registry()


def register(name: str, factory: Factory) -> None:
    """Register *factory* under *name* in the default registry; AlreadyExists if taken."""
    _registry.register(name, factory)


def registered() -> list[str]:
    """Return the names in the default registry, sorted."""
    return _registry.names()


def select(
    root: Path, options: Sequence[str], env: Mapping[str, str], *, name: str = ""
) -> GraphDriver:
    """Select a driver from the default registry (see ``Registry.select``)."""
    return _registry.select(root, options, env, name=name)


class ChildIndex:
    """Which layer derives from which, as ``<root>/<child>`` files holding the parent id.

    Lets remove() refuse a layer that still has children. A marker is written before its child
    exists and deleted after the child is gone, so a crash can only leave a stale marker; stale
    markers are ignored (and dropped) when found. ``children`` reads every marker: O(layers),
    paid on remove only.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def add(self, parent: str, child: str) -> None:
        """Record that *child* derives from *parent*."""
        (self.root / child).write_text(parent)

    def discard(self, child: str) -> None:
        """Forget the parent of *child* (no error if unknown)."""
        (self.root / child).unlink(missing_ok=True)

    def children(self, parent: str, exists: Callable[[str], bool]) -> list[str]:
        """Return the live children of *parent*; drop markers of layers that are gone."""
        live = []
        for marker in sorted(self.root.iterdir()):
            try:
                if marker.read_text() != parent:
                    continue
            except FileNotFoundError:
                continue  # discarded meanwhile
            if ID_PATTERN.fullmatch(marker.name) and exists(marker.name):
                live.append(marker.name)
            else:
                self.discard(marker.name)
        return live
