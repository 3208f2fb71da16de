"""The state of one layer being applied: what it wrote, and the dirs whose metadata is pending."""

from __future__ import annotations

import logging
import os
import posixpath
from dataclasses import dataclass, field

from .metadata import Meta, apply_meta
from .model import Whiteouts
from .rootdir import RootDir

log = logging.getLogger(__name__)


def _deepest_first(path: str) -> tuple[int, str]:
    return (-(path.count("/") + 1) if path else 0, path)


@dataclass(slots=True)
class Unpack:
    """One apply in progress on *root*; paths are physical and root-relative ("" = the root)."""

    root: RootDir
    whiteouts: Whiteouts
    as_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    size: int = 0
    unpacked: set[str] = field(default_factory=set)
    ancestors: set[str] = field(default_factory=set)
    dirs: dict[str, tuple[str, Meta]] = field(default_factory=dict)

    def mark(self, path: str) -> None:
        """Record that *path* came from this layer (an opaque whiteout keeps it)."""
        self.unpacked.add(path)
        parent = posixpath.dirname(path)
        while parent and parent not in self.ancestors:
            self.ancestors.add(parent)
            parent = posixpath.dirname(parent)

    def defer_dir(self, path: str, entry: str, meta: Meta) -> None:
        """Remember *meta* for dir *path*: set after its contents so mode and mtime stick."""
        self.dirs[path] = (entry, meta)

    def finish_dirs(self) -> None:
        """Set the pending dir metadata, deepest dirs first; dirs removed since are skipped."""
        for path in sorted(self.dirs, key=_deepest_first):
            entry, meta = self.dirs[path]
            try:
                # The physical path must still be a real dir: no symlink may have replaced it.
                efd = self.root.open(path, os.O_PATH | os.O_DIRECTORY, no_symlinks=True)
            except OSError as exc:
                log.debug("layer entry %r: dir gone before its metadata: %s", entry, exc.strerror)
                continue
            with efd:
                apply_meta(efd, entry, meta, as_root=self.as_root)
