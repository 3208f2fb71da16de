"""Write a layer tar of changed paths (Docker's ``ExportChanges``).

Only the changed paths are written (the differ already lists the dirs above a change), sorted
by path so that the same tree gives the same bytes. Format is PAX with numeric uid/gid and empty
uname/gname; mtimes keep their nanoseconds (PAX ``mtime``); xattrs go in ``SCHILY.xattr.*``.
A second name of an inode already written is a hard link to the first; a DELETE becomes an empty
``.wh.<name>`` file. Every path is opened inside the root (openat2), so a symlink swapped in
while a container runs cannot make the export read a host file. Sockets cannot be archived and
are skipped.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import stat
import tarfile
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from engine.errors import NotFound

from .differ import read_xattrs
from .metadata import XATTR_PAX_PREFIX
from .model import Change, ChangeKind
from .openat2 import Fd
from .rootdir import RootDir, clean, join
from .whiteout import PREFIX

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logging.getLogger(__name__)


class _Counting(io.RawIOBase):
    """Pass writes through to *out* and count the bytes."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data)
        self._out.write(view)
        self.count += view.nbytes
        return view.nbytes


def export_changes(root: Path, changes: Sequence[Change], out: BinaryIO) -> int:
    """Write an uncompressed layer tar of *changes* read from *root* to *out*; return its size.

    DELETE becomes an empty ``.wh.<name>``; NotFound if a changed path is missing from *root*.
    """
    sink = _Counting(out)
    try:
        rootdir = RootDir(root)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise NotFound(f"layer root {str(root)!r} is not a directory") from exc
    with (
        rootdir,
        tarfile.open(
            fileobj=sink,
            mode="w|",
            format=tarfile.PAX_FORMAT,
            encoding="utf-8",
            errors="surrogateescape",
        ) as tf,
    ):
        links: dict[tuple[int, int], str] = {}
        for change in sorted(changes, key=lambda c: c.path):
            rel = clean(change.path)
            if not rel:
                continue  # the root's own metadata belongs to no layer
            if change.kind is ChangeKind.DELETE:
                parent, name = posixpath.split(rel)
                tf.addfile(tarfile.TarInfo(join(parent, PREFIX + name)))
            else:
                _add(rootdir, tf, rel, links)
    return sink.count


def _header(rel: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""
    info.mtime = st.st_mtime_ns // 1_000_000_000
    if st.st_mtime_ns % 1_000_000_000:
        info.pax_headers = {"mtime": format(Decimal(st.st_mtime_ns).scaleb(-9), "f")}
    return info


def _add(
    rootdir: RootDir, tf: tarfile.TarFile, rel: str, links: dict[tuple[int, int], str]
) -> None:
    parent, name = posixpath.split(rel)
    try:
        pfd = rootdir.dir(parent)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise NotFound(f"changed path {'/' + rel!r} not found in layer") from exc
    with pfd:
        st = RootDir.lstat(pfd, name)
        if st is None:
            raise NotFound(f"changed path {'/' + rel!r} not found in layer")
        if stat.S_ISSOCK(st.st_mode):
            log.info("export: skipping socket %r", "/" + rel)
            return
        info = _header(rel, st)
        key = (st.st_dev, st.st_ino)
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            if key in links:
                info.type, info.linkname = tarfile.LNKTYPE, links[key]
                tf.addfile(info)
                return
            links[key] = rel
        if stat.S_ISLNK(st.st_mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=pfd.fileno())
            tf.addfile(info)
            return
        with Fd(
            os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd.fileno())
        ) as efd:
            xattrs = {
                XATTR_PAX_PREFIX + k: v.decode("utf-8", "surrogateescape")
                for k, v in read_xattrs(efd.proc_path(), follow=True)
            }
        info.pax_headers = {**info.pax_headers, **xattrs}
        if stat.S_ISREG(st.st_mode):
            _add_file(tf, info, pfd, name)
            return
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISFIFO(st.st_mode):
            info.type = tarfile.FIFOTYPE
        else:
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        tf.addfile(info)


def _add_file(tf: tarfile.TarFile, info: tarfile.TarInfo, pfd: Fd, name: str) -> None:
    with Fd(os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd.fileno())) as rfd:
        info.size = os.fstat(rfd.fileno()).st_size
        with open(rfd.fileno(), "rb", closefd=False) as src:
            tf.addfile(info, src)
