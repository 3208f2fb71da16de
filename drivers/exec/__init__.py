"""Exec drivers: the one table of built-ins and how the daemon picks one.

``select`` takes the ``--exec-driver`` flag, else ``DOCKER_EXECDRIVER``, else the first of
``PRIORITY``. A name that is not in the table is refused with the names that are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from drivers.exec.base import ENV_VAR, ExecDriver
from engine.errors import InvalidArgument

Factory = Callable[[Path], ExecDriver]


def _native(exec_root: Path) -> ExecDriver:
    from drivers.exec.native.driver import NativeDriver

    return NativeDriver(exec_root)


BUILTINS: Final[dict[str, Factory]] = {"native": _native}
PRIORITY: Final = ("native",)


def select(exec_root: Path, env: Mapping[str, str], name: str = "") -> ExecDriver:
    """The exec driver named by *name*, else by ``DOCKER_EXECDRIVER``, else the default."""
    chosen = name or env.get(ENV_VAR, "") or PRIORITY[0]
    factory = BUILTINS.get(chosen)
    if factory is None:
        known = ", ".join(sorted(BUILTINS))
        raise InvalidArgument(f"exec-driver: unknown exec driver {chosen!r} (known: {known})")
    return factory(exec_root)


__all__ = ["BUILTINS", "ENV_VAR", "PRIORITY", "ExecDriver", "select"]
