"""Create one tar entry by name inside an already resolved parent dir.

Every function gets ``pfd``, an O_PATH fd of the parent (resolved in the root), and a single
name, and only uses ``*at`` calls on that pair, so no path is walked again. Whatever was at the
name before is replaced: a non-dir is unlinked (a regular file is renamed over it), a dir that a
non-dir replaces is removed recursively; a dir entry over an existing dir keeps its contents.
"""

from __future__ import annotations

import logging
import os
import posixpath
import secrets
import shutil
import stat
import tarfile
from contextlib import suppress
from typing import Final

from engine.errors import InvalidArgument

from .metadata import Meta, apply_link_meta, apply_meta, meta_of
from .openat2 import Fd
from .rootdir import RootDir, clean, raise_entry_error
from .unpack import Unpack

log = logging.getLogger(__name__)

# Linux dev_t holds a 12-bit major and a 20-bit minor.
MAX_MAJOR: Final = (1 << 12) - 1
MAX_MINOR: Final = (1 << 20) - 1
_NEW_FILE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def create(
    u: Unpack, tf: tarfile.TarFile, info: tarfile.TarInfo, pfd: Fd, name: str, path: str
) -> bool:
    """Create entry *info* as *name* in *pfd* (root-relative *path*); False if it was skipped."""
    meta = meta_of(info)
    if info.isdir():
        _directory(u, info, pfd, name, path, meta)
    elif info.isreg():
        _regular(u, tf, info, pfd, name, meta)
    elif info.issym():
        _symlink(u, info, pfd, name, meta)
    elif info.islnk():
        _hardlink(u, info, pfd, name)
    elif info.ischr() or info.isblk() or info.isfifo():
        return _node(u, info, pfd, name, meta)
    else:
        raise InvalidArgument(f"invalid layer entry {info.name!r}: unsupported type {info.type!r}")
    return True


def _directory(u: Unpack, info: tarfile.TarInfo, pfd: Fd, name: str, path: str, meta: Meta) -> None:
    st = RootDir.lstat(pfd, name)
    if st is None or not stat.S_ISDIR(st.st_mode):
        RootDir.remove(pfd, name)
        # Owner-writable until finish_dirs gives it its real mode, after its contents.
        os.mkdir(name, 0o700, dir_fd=pfd.fileno())
    u.defer_dir(path, info.name, meta)


def _regular(
    u: Unpack, tf: tarfile.TarFile, info: tarfile.TarInfo, pfd: Fd, name: str, meta: Meta
) -> None:
    st = RootDir.lstat(pfd, name)
    if st is not None and stat.S_ISDIR(st.st_mode):
        RootDir.remove(pfd, name)
    src = tf.extractfile(info)
    if src is None:  # tarfile returns None only for non-regular members
        raise InvalidArgument(f"invalid layer entry {info.name!r}: no file data")
    # Over an existing file: write a temp name and rename it over, so the old one is whole until
    # the new one is. At a free name (most of every new layer): create the file in place.
    tmp = f".tmp-layer-{secrets.token_hex(8)}" if st is not None else name
    with Fd(os.open(tmp, _NEW_FILE, 0o600, dir_fd=pfd.fileno())) as wfd:
        try:
            with open(wfd.fileno(), "wb", closefd=False) as out:
                shutil.copyfileobj(src, out, 1 << 20)
            apply_meta(wfd, info.name, meta, as_root=u.as_root)
            if tmp != name:
                os.rename(tmp, name, src_dir_fd=pfd.fileno(), dst_dir_fd=pfd.fileno())
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=pfd.fileno())
            raise
    u.size += info.size


def _symlink(u: Unpack, info: tarfile.TarInfo, pfd: Fd, name: str, meta: Meta) -> None:
    # The target is data: stored as given (absolute ones too) and never followed here.
    if not info.linkname or "\x00" in info.linkname:
        raise InvalidArgument(f"invalid layer entry {info.name!r}: bad symlink target")
    RootDir.remove(pfd, name)
    os.symlink(info.linkname, name, dir_fd=pfd.fileno())
    apply_link_meta(pfd, name, meta, as_root=u.as_root)


def _hardlink(u: Unpack, info: tarfile.TarInfo, pfd: Fd, name: str) -> None:
    # A hard link shares its inode's metadata, set by the entry that created the inode.
    src = clean(info.linkname)
    src_dir, src_name = posixpath.split(src)
    missing = InvalidArgument(
        f"invalid layer entry {info.name!r}: link target {info.linkname!r} not found"
    )
    try:
        spfd = u.root.dir(src_dir)
    except FileNotFoundError as exc:
        raise missing from exc
    except OSError as exc:
        raise_entry_error(info.name, exc)
    with spfd:
        sst = RootDir.lstat(spfd, src_name) if src_name else None
        if sst is None:
            raise missing
        if stat.S_ISDIR(sst.st_mode):
            raise InvalidArgument(f"invalid layer entry {info.name!r}: hard link to a directory")
        dst = RootDir.lstat(pfd, name)
        if dst is not None and (dst.st_dev, dst.st_ino) == (sst.st_dev, sst.st_ino):
            return
        RootDir.remove(pfd, name)
        try:
            # follow_symlinks=False: linkat without AT_SYMLINK_FOLLOW links a symlink itself.
            os.link(
                src_name,
                name,
                src_dir_fd=spfd.fileno(),
                dst_dir_fd=pfd.fileno(),
                follow_symlinks=False,
            )
        except FileNotFoundError as exc:
            raise missing from exc
        except OSError as exc:
            raise_entry_error(info.name, exc)


def _node(u: Unpack, info: tarfile.TarInfo, pfd: Fd, name: str, meta: Meta) -> bool:
    if info.isfifo():
        kind, dev = stat.S_IFIFO, 0
    else:
        if not (0 <= info.devmajor <= MAX_MAJOR and 0 <= info.devminor <= MAX_MINOR):
            raise InvalidArgument(
                f"invalid layer entry {info.name!r}: "
                f"device {info.devmajor}:{info.devminor} out of range"
            )
        if not u.as_root:
            log.warning("layer entry %r: skipping device node (needs root)", info.name)
            return False
        kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK
        dev = os.makedev(info.devmajor, info.devminor)
    RootDir.remove(pfd, name)
    os.mknod(name, kind | 0o600, dev, dir_fd=pfd.fileno())
    with Fd(os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd.fileno())) as efd:
        apply_meta(efd, info.name, meta, as_root=u.as_root)
    return True
