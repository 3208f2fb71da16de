"""vfs: every layer is a plain directory holding a full copy of its parent. Works everywhere.

Layout (as Docker's vfs): ``<home>/dir/<id>`` is the layer's root. ``create`` copies the parent
tree into ``<home>/dir/<id>.tmp-XXXX`` and renames it into place, so a layer is either complete
or absent; ``<id>.tmp-*`` and ``<id>.removing-*`` leftovers of a crash are deleted at start.
``get`` returns the directory; nothing is mounted.

The copy is done in Python (``copy_tree``) rather than with ``cp -a``: it keeps modes (setuid
included), numeric owners, every xattr namespace, symlinks, hard links (one inode per source
inode), device nodes, fifos, sockets and nanosecond times, reads the source through directory
fds without following symlinks, and lets the kernel share extents (copy_file_range) where the
file system can.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from drivers.graph.base import ChildIndex, layer_ids, validate_id
from engine.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


class VfsDriver:
    """GraphDriver keeping a full copy of the parent in each layer directory."""

    name = "vfs"

    def __init__(self, home: Path, options: Sequence[str] = ()) -> None:
        if options:
            raise InvalidArgument(f"vfs: unknown options {list(options)!r}")
        self.home = home
        self.dir = home / "dir"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        self.children = ChildIndex(home / "children")
        self._lock = threading.Lock()
        for leftover in self.dir.iterdir():
            if ".tmp-" in leftover.name or ".removing-" in leftover.name:
                shutil.rmtree(leftover)

    def create(self, id: str, parent: str = "") -> None:
        """Create layer *id* as a copy of *parent*; AlreadyExists / NotFound(parent)."""
        if self.exists(validate_id(id)):
            raise AlreadyExists(f"layer {id} already exists")
        if parent and not self.exists(validate_id(parent, "parent")):
            raise NotFound(f"parent layer {parent} not found")
        tmp = Path(tempfile.mkdtemp(prefix=f"{id}.tmp-", dir=self.dir))
        try:
            if parent:
                self.children.add(parent, id)
                copy_tree(self.dir / parent, tmp)
            else:
                self.children.discard(id)
                os.chmod(tmp, 0o755)
            with self._lock:  # two creates of one id: the second must fail, not replace
                if self.exists(id):
                    raise AlreadyExists(f"layer {id} already exists")
                os.rename(tmp, self.dir / id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.dir)

    def remove(self, id: str) -> None:
        """Remove layer *id*; NotFound if absent, FailedPrecondition if it has children."""
        with self._lock:
            if not self.exists(validate_id(id)):
                raise NotFound(f"layer {id} not found")
            kids = self.children.children(id, self.exists)
            if kids:
                raise FailedPrecondition(f"layer {id} has {len(kids)} child layer(s)")
            doomed = Path(tempfile.mkdtemp(prefix=f"{id}.removing-", dir=self.dir))
            os.rename(self.dir / id, doomed / "layer")
            self.children.discard(id)
        shutil.rmtree(doomed)

    def get(self, id: str) -> Path:
        """Return the directory of layer *id*; NotFound if absent."""
        if not self.exists(validate_id(id)):
            raise NotFound(f"layer {id} not found")
        return self.dir / id

    def put(self, id: str) -> None:
        """Release a get() of *id* (nothing to unmount for vfs)."""
        validate_id(id)

    def forget(self, id: str) -> None:
        """Drop the get()s of *id*: vfs mounts nothing, so it holds nothing to drop."""
        validate_id(id)

    def exists(self, id: str) -> bool:
        """Return whether layer *id* exists."""
        validate_id(id)
        return (self.dir / id).is_dir()

    def ids(self) -> set[str]:
        """Return the id of every layer on disk."""
        return layer_ids(self.dir)

    def status(self) -> list[tuple[str, str]]:
        """Return key/value pairs for `info`."""
        return [("Root Dir", str(self.home)), ("Layers", str(len(self.ids())))]

    def cleanup(self) -> None:
        """Nothing to release: vfs never mounts."""


def new(home: Path, options: Sequence[str]) -> VfsDriver:
    """Factory for the registry."""
    return VfsDriver(home, options)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the tree at *src* into the existing empty directory *dst*, preserving everything."""
    sfd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW)
    try:
        dfd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW)
        try:
            _copy_dir(sfd, dfd, _Links(dfd))
            _copy_meta(os.stat(sfd), sfd, dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


class _Links:
    """Source inode → first destination path (relative to the destination root fd)."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.first: dict[tuple[int, int], str] = {}


def _copy_dir(sfd: int, dfd: int, links: _Links, prefix: str = "") -> None:
    with os.scandir(sfd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        name = entry.name
        st = entry.stat(follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(name, 0o700, dir_fd=dfd)
            csfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW, dir_fd=sfd)
            try:
                cdfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW, dir_fd=dfd)
                try:
                    _copy_dir(csfd, cdfd, links, f"{prefix}{name}/")
                    _copy_meta(st, csfd, cdfd)
                finally:
                    os.close(cdfd)
            finally:
                os.close(csfd)
            continue
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links.first:
            os.link(
                links.first[key],
                name,
                src_dir_fd=links.root_fd,
                dst_dir_fd=dfd,
                follow_symlinks=False,
            )
            continue
        if stat.S_ISREG(mode):
            _copy_file(sfd, dfd, name)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=sfd), name, dir_fd=dfd)
        elif stat.S_IFMT(mode) in SPECIAL:
            os.mknod(name, stat.S_IFMT(mode) | 0o600, st.st_rdev, dir_fd=dfd)
        else:
            raise InvalidArgument(f"cannot copy {prefix}{name}: unknown file type {oct(mode)}")
        _copy_meta(st, _proc(sfd, name), _proc(dfd, name))
        if st.st_nlink > 1:
            links.first[key] = prefix + name


SPECIAL = {stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK}


def _proc(dir_fd: int, name: str) -> str:
    # A path through the directory fd: no lookup from "/" (no symlink races above the entry, no
    # PATH_MAX trouble in deep trees). The entry itself is never followed: every use passes
    # follow_symlinks=False. Needed because the xattr calls take no dir_fd.
    return f"/proc/self/fd/{dir_fd}/{name}"


def _copy_file(sfd: int, dfd: int, name: str) -> None:
    fin = os.open(name, os.O_RDONLY | NOFOLLOW, dir_fd=sfd)
    try:
        fout = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600, dir_fd=dfd)
        try:
            try:  # in-kernel copy; shares extents where the file system can (btrfs, xfs)
                while os.copy_file_range(fin, fout, 1 << 30) > 0:
                    pass
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                os.lseek(fin, 0, os.SEEK_SET)
                os.ftruncate(fout, 0)
                os.lseek(fout, 0, os.SEEK_SET)
                while chunk := os.read(fin, 1 << 20):
                    os.write(fout, chunk)
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _copy_meta(st: os.stat_result, src: int | str, dst: int | str) -> None:
    # *src*/*dst* are directory fds or _proc() paths of non-directories. Order matters: chown
    # clears setuid/setgid and security.capability, so owner first, then mode, then xattrs;
    # times last, after everything that would touch them.
    follow = isinstance(dst, int)  # fds must "follow"; paths must not (lchown, lsetxattr, ...)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=follow)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    for attr in os.listxattr(src, follow_symlinks=follow):
        value = os.getxattr(src, attr, follow_symlinks=follow)
        os.setxattr(dst, attr, value, follow_symlinks=follow)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=follow)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
