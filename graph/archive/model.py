"""Values exchanged by the archive package: changes between trees and the result of an apply."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ChangeKind(enum.IntEnum):
    """What happened to a path; the numbers are Docker's (``docker diff`` shows C, A, D)."""

    MODIFY = 0
    ADD = 1
    DELETE = 2


@dataclass(frozen=True, slots=True)
class Change:
    """One changed path, absolute inside the layer (``/etc/passwd``)."""

    path: str
    kind: ChangeKind


@dataclass(frozen=True, slots=True)
class AppliedLayer:
    """Result of applying a layer: diff_id of the uncompressed tar and bytes of content written."""

    diff_id: str
    size: int


class Whiteouts(enum.Enum):
    """How whiteout entries are applied.

    DELETE removes the named paths from the root (vfs, btrfs: the root holds the whole image).
    OVERLAY records them as overlayfs expects in an upper dir: a 0/0 char device per deleted
    name and the xattr ``trusted.overlay.opaque=y`` on opaque dirs.
    """

    DELETE = "delete"
    OVERLAY = "overlay"
