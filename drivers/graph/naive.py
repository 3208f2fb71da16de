"""The naive Differ: diffs any GraphDriver by comparing the trees of a layer and its parent.

Used for drivers without a Differ of their own (vfs, btrfs), as Docker's NaiveDiffDriver was.
It mounts the layer (and the parent) through the driver's get()/put(), so it works for every
driver, at the price of walking both trees.

Example::

    differ = driver if isinstance(driver, Differ) else NaiveDiffer(driver)
    with differ.diff(layer, parent) as tar: ...
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Final, cast

from drivers.graph.base import GraphDriver
from graph import archive
from graph.archive import AppliedLayer, Change, ChangeKind, Whiteouts

# Diffs up to this size stay in memory; bigger ones spill to a temporary file.
SPOOL_MAX: Final = 8 << 20


class NaiveDiffer:
    """Differ for *driver* built on get()/put() and the generic tree comparison.

    diff() and diff_size() build on changes(), so a driver with a faster way to list changes
    (overlay) subclasses this and overrides changes() alone.
    """

    def __init__(self, driver: GraphDriver) -> None:
        self.driver = driver

    def diff(self, id: str, parent: str = "") -> BinaryIO:
        """Return a rewound tar of *id*'s changes against *parent* (all of *id* if "")."""
        changes = self.changes(id, parent)
        # Not a with-block: the open file is the return value; it is closed here only on error.
        out = cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX))  # noqa: SIM115
        try:
            with self._mounted(id, "") as (layer, _):
                archive.export_changes(layer, changes, out)
            out.seek(0)
        except BaseException:
            out.close()
            raise
        return out

    def changes(self, id: str, parent: str = "") -> list[Change]:
        """List paths added, modified or deleted in *id* relative to *parent*."""
        with self._mounted(id, parent) as (layer, lower):
            return archive.changes(layer, lower)

    def apply_diff(self, id: str, parent: str, stream: BinaryIO) -> AppliedLayer:
        """Apply the layer tar *stream* onto layer *id*, deleting whiteout targets."""
        path = self.driver.get(id)
        try:
            return archive.apply_layer(path, stream, whiteouts=Whiteouts.DELETE)
        finally:
            self.driver.put(id)

    def diff_size(self, id: str, parent: str = "") -> int:
        """Return the bytes of regular files added or modified in *id* against *parent*."""
        changes = self.changes(id, parent)
        with self._mounted(id, "") as (layer, _):
            return changes_size(layer, changes)

    @contextmanager
    def _mounted(self, id: str, parent: str) -> Iterator[tuple[Path, Path | None]]:
        layer = self.driver.get(id)
        try:
            if not parent:
                yield layer, None
                return
            lower = self.driver.get(parent)
            try:
                yield layer, lower
            finally:
                self.driver.put(parent)
        finally:
            self.driver.put(id)


def changes_size(root: Path, changes: Iterable[Change]) -> int:
    """Sum the sizes of regular files added or modified under *root*, each inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for change in changes:
        if change.kind == ChangeKind.DELETE:
            continue
        try:
            st = os.lstat(root / change.path.lstrip("/"))
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total
