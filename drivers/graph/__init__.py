"""Graph (storage) drivers: the one table of built-ins, registered in the default registry.

A new built-in is one module named as its registered name plus one row here. See ``base`` for
the contract, the glossary and how ``select`` picks a driver.
"""

from typing import Final

from drivers.graph import btrfs, overlay, vfs
from drivers.graph.base import (
    ENV_VAR,
    PRIORITY,
    Differ,
    Factory,
    GraphDriver,
    Registry,
    register,
    registered,
    select,
    validate_id,
)
from drivers.graph.naive import NaiveDiffer

BUILTINS: Final[tuple[tuple[str, Factory], ...]] = (
    ("overlay", overlay.new),
    ("btrfs", btrfs.new),
    ("vfs", vfs.new),
)

# The one place built-ins are registered (as moby's builtins list); driver modules never
# register themselves on import.
for _name, _factory in BUILTINS:
    register(_name, _factory)

__all__ = [
    "BUILTINS",
    "ENV_VAR",
    "PRIORITY",
    "Differ",
    "Factory",
    "GraphDriver",
    "NaiveDiffer",
    "Registry",
    "register",
    "registered",
    "select",
    "validate_id",
]
