"""Whiteout entries (AUFS names, as in Docker layers): ``.wh.<name>`` and ``.wh..wh..opq``.

``.wh.<name>`` in dir D deletes D/<name>; ``.wh..wh..opq`` in D hides everything lower layers put
in D. Other ``.wh..wh.*`` entries are AUFS bookkeeping and are skipped. A whiteout is never
written as a file. See ``Whiteouts`` for the two ways of applying them.
"""

from __future__ import annotations

import logging
import os
import stat
import tarfile
from typing import Final

from engine.errors import InvalidArgument, NotSupported

from .metadata import meta_of
from .model import Whiteouts
from .openat2 import Fd
from .rootdir import RootDir, join, raise_entry_error
from .unpack import Unpack

log = logging.getLogger(__name__)

PREFIX: Final = ".wh."
META_PREFIX: Final = ".wh..wh."
OPAQUE: Final = ".wh..wh..opq"


def is_whiteout(name: str) -> bool:
    """Return whether base name *name* is a whiteout entry rather than a file."""
    return name.startswith(PREFIX)


def is_aufs_metadata(path: str) -> bool:
    """Return whether root-relative *path* lies in AUFS bookkeeping (``.wh..wh.*`` at the top)."""
    return path.startswith(META_PREFIX) and path != OPAQUE


def apply_whiteout(u: Unpack, info: tarfile.TarInfo, parent: str, name: str) -> None:
    """Apply whiteout *name* found in root-relative dir *parent*."""
    if name == OPAQUE:
        _opaque(u, info, parent)
    elif name.startswith(META_PREFIX):
        log.debug("layer entry %r: skipping whiteout metadata entry", info.name)
    else:
        target = name[len(PREFIX) :]
        if target in ("", ".", ".."):
            raise InvalidArgument(f"invalid whiteout entry {info.name!r}")
        if u.whiteouts is Whiteouts.OVERLAY:
            _overlay_whiteout(u, info, parent, target)
        else:
            _delete(u, info, parent, target)


def _existing_dir(u: Unpack, info: tarfile.TarInfo, parent: str) -> Fd | None:
    # Deleting needs no implied dirs: if the parent is missing there is nothing to delete.
    try:
        return u.root.dir(parent)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise_entry_error(info.name, exc)


def _delete(u: Unpack, info: tarfile.TarInfo, parent: str, target: str) -> None:
    pfd = _existing_dir(u, info, parent)
    if pfd is None:
        return
    with pfd:
        RootDir.remove(pfd, target)
        u.unpacked.discard(join(u.root.canonical(pfd), target))


def _overlay_whiteout(u: Unpack, info: tarfile.TarInfo, parent: str, target: str) -> None:
    meta = meta_of(info)
    with u.root.makedirs(parent, entry=info.name) as pfd:
        RootDir.remove(pfd, target)
        # A 0/0 char device is overlayfs' whiteout; Linux >= 5.8 lets any user create one.
        os.mknod(target, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd.fileno())
        if u.as_root:
            os.chown(target, meta.uid, meta.gid, dir_fd=pfd.fileno(), follow_symlinks=False)
        u.mark(join(u.root.canonical(pfd), target))


def _opaque(u: Unpack, info: tarfile.TarInfo, parent: str) -> None:
    if u.whiteouts is Whiteouts.OVERLAY:
        # Unprivileged overlayfs (userxattr) reads the user.* twin of the trusted.* xattr.
        xattr = "trusted.overlay.opaque" if u.as_root else "user.overlay.opaque"
        with u.root.makedirs(parent, entry=info.name) as dfd:
            try:
                os.setxattr(dfd.proc_path(), xattr, b"y")
            except OSError as exc:
                raise NotSupported(
                    f"layer entry {info.name!r}: cannot set {xattr}: {exc.strerror}"
                ) from exc
        return
    found = _existing_dir(u, info, parent)
    if found is None:
        return
    with found:
        path = u.root.canonical(found)
    _purge(u, path)


def _purge(u: Unpack, path: str) -> None:
    """Remove from dir *path* everything this layer did not write, keeping dirs it wrote into."""
    with u.root.open(path, os.O_RDONLY | os.O_DIRECTORY, no_symlinks=True) as dfd:
        names = sorted(os.listdir(dfd.fileno()))
        keep_dirs = []
        for name in names:
            child = join(path, name)
            st = RootDir.lstat(dfd, name)
            if st is None:
                continue
            if child not in u.unpacked and child not in u.ancestors:
                RootDir.remove(dfd, name)
            elif stat.S_ISDIR(st.st_mode):
                keep_dirs.append(child)
    for child in keep_dirs:
        _purge(u, child)
