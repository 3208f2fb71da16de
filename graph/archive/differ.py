"""The naive differ: compare two directory trees by metadata (Docker's ``ChangesDirs``).

Rules, as in moby ``pkg/archive/changes.go`` (``addChanges``/``statDifferent``):
- ADD for every path in the layer that is not in the parent, children of added dirs included.
- DELETE only for the top-most missing path; its children are implied.
- MODIFY when type, permission bits, uid, gid, device number or xattrs differ, and for non-dirs
  also size, mtime or symlink target. Moby compares only ``security.capability`` and no link
  target; we compare all xattrs and the target, which only adds MODIFYs.
- A dir's own size and mtime are not a change (moby#9874); a dir with any change below it is
  reported MODIFY so that an export carries its metadata. The root itself is never reported.
- A node replaced by another type is MODIFY; what was below an old dir is then not listed.
- Times compare equal if identical, or if one side has no sub-second part and the seconds match
  (moby ``sameFsTime``: filesystems and tars that only keep seconds).
Contents are never read: equal size and mtime mean unchanged, as in Docker.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path

from engine.errors import NotFound

from .model import Change, ChangeKind

_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class _Node:
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    rdev: int
    target: str | None
    xattrs: tuple[tuple[str, bytes], ...]


def read_xattrs(path: str, *, follow: bool = False) -> tuple[tuple[str, bytes], ...]:
    """Return the xattrs of *path* (itself unless *follow*), sorted; none if unsupported."""
    try:
        names = os.listxattr(path, follow_symlinks=follow)
        return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=follow)) for n in names))
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM, errno.ENODATA):
            return ()
        raise


def _node(path: str, st: os.stat_result) -> _Node:
    target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    rdev = st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0
    return _Node(
        st.st_mode,
        st.st_uid,
        st.st_gid,
        st.st_size,
        st.st_mtime_ns,
        rdev,
        target,
        read_xattrs(path),
    )


def _walk(top: Path) -> dict[str, _Node]:
    if not top.is_dir():
        raise NotFound(f"tree {str(top)!r} is not a directory")
    nodes: dict[str, _Node] = {}
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(f"{top}{rel}") as it:
            for entry in it:
                path = f"{rel}/{entry.name}"
                st = entry.stat(follow_symlinks=False)
                nodes[path] = _node(entry.path, st)
                if stat.S_ISDIR(st.st_mode):
                    pending.append(path)
    return nodes


def _same_time(a: int, b: int) -> bool:
    return a == b or (a // _NS == b // _NS and (a % _NS == 0 or b % _NS == 0))


def _differs(old: _Node, new: _Node) -> bool:
    if (old.mode, old.uid, old.gid, old.rdev, old.xattrs) != (
        new.mode,
        new.uid,
        new.gid,
        new.rdev,
        new.xattrs,
    ):
        return True
    if stat.S_ISDIR(new.mode):
        return False
    return (
        old.size != new.size
        or not _same_time(old.mtime_ns, new.mtime_ns)
        or old.target != new.target
    )


def _is_dir(nodes: dict[str, _Node], path: str) -> bool:
    node = nodes.get(path)
    return node is not None and stat.S_ISDIR(node.mode)


def changes(layer: Path, parent: Path | None) -> list[Change]:
    """Changes that turn tree parent (None = empty) into tree layer, sorted by path.

    NotFound if either tree is not a directory.
    """
    new = _walk(layer)
    old = _walk(parent) if parent is not None else {}
    kinds: dict[str, ChangeKind] = {}
    for path, node in new.items():
        prev = old.get(path)
        if prev is None:
            kinds[path] = ChangeKind.ADD
        elif _differs(prev, node):
            kinds[path] = ChangeKind.MODIFY
    for path in old.keys() - new.keys():
        up = posixpath.dirname(path)
        if up == "/" or _is_dir(new, up):
            kinds[path] = ChangeKind.DELETE
    for path in list(kinds):
        up = posixpath.dirname(path)
        while up != "/" and up not in kinds:
            kinds[up] = ChangeKind.MODIFY
            up = posixpath.dirname(up)
    return [Change(path, kinds[path]) for path in sorted(kinds)]
