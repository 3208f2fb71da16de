"""Linux capabilities by name and number, and Docker's ``CapAdd``/``CapDrop`` arithmetic.

Vocabulary: a capability *name* is the kernel's (``CAP_NET_ADMIN``); users may write it without
the ``CAP_`` prefix and in any case (``net_admin``), or write ``ALL``. A *mask* is a set of
capability numbers as a bit field (bit n = capability n), the form ``/proc/<pid>/status`` shows;
the daemon's own bounding set, ``held``, bounds what ``ALL`` and ``--privileged`` can mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

from drivers.exec.spec import CAPABILITIES, DEFAULT_CAPS
from jobs.jsonfields import invalid

NUMBERS: Final = {name: number for number, name in enumerate(CAPABILITIES)}
ALL: Final = "ALL"


def normalize(name: str, path: str) -> str:
    """``net_admin`` → ``CAP_NET_ADMIN``, ``all`` → ``ALL``; InvalidArgument if unknown."""
    upper = name.upper()
    if upper == ALL:
        return ALL
    full = upper if upper.startswith("CAP_") else f"CAP_{upper}"
    if full not in NUMBERS:
        raise invalid(path, f'unknown capability: "{name}"')
    return full


def names_of(mask: int) -> tuple[str, ...]:
    """The names of the capabilities in *mask*, in number order (unnamed bits are left out)."""
    return tuple(name for number, name in enumerate(CAPABILITIES) if mask >> number & 1)


def mask_of(names: Iterable[str]) -> int:
    """The mask of capability *names* (full names, as ``normalize`` returns them)."""
    mask = 0
    for name in names:
        mask |= 1 << NUMBERS[name]
    return mask


def effective(
    cap_add: Sequence[str], cap_drop: Sequence[str], *, privileged: bool, held: int
) -> tuple[str, ...]:
    """The capabilities a container gets from Docker's defaults, ``CapAdd`` and ``CapDrop``.

    As moby's TweakCapabilities: privileged is every held capability; ``ALL`` in CapAdd is every
    held one but those dropped; ``ALL`` in CapDrop is exactly CapAdd; otherwise the defaults
    minus CapDrop plus CapAdd.
    """
    if privileged:
        return names_of(held)
    adds = [normalize(c, f"HostConfig.CapAdd[{i}]") for i, c in enumerate(cap_add)]
    drops = [normalize(c, f"HostConfig.CapDrop[{i}]") for i, c in enumerate(cap_drop)]
    if ALL in adds:
        chosen = [c for c in names_of(held) if c not in drops]
    elif ALL in drops:
        chosen = adds
    else:
        chosen = [c for c in DEFAULT_CAPS if c not in drops] + adds
    return tuple(dict.fromkeys(chosen))
