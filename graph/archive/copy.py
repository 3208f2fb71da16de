"""Copy files into and out of a container's root (``docker cp``, ``/containers/{id}/archive``).

Vocabulary: *root* is the container's root as a path the daemon can open: ``/proc/<pid>/root``
of a running container (so its own mounts, volumes included, are what is seen) or the mounted
rootfs of a stopped one. *path* is a path as the container sees it; ``a/b`` means ``/a/b``.
The *extraction point* is the directory a PUT unpacks into. A *stat* is Docker's
``ContainerPathStat``, sent base64-encoded in the ``X-Docker-Container-Path-Stat`` header.

Every lookup is made by the kernel inside the root (openat2 ``RESOLVE_IN_ROOT`` through
``RootDir``), so a symlink in the container, even one swapped in while we work, only leads to
another place in the same root. A GET walks by directory fds and ``O_NOFOLLOW`` opens. Owners
are numeric both ways; no user or group name is ever looked up. Paths are never globbed.

Shapes, as moby's ``ResolvePath``/``TarResourceRebase`` give them (``path`` → tar names):
``/etc`` → ``etc/``, ``etc/hosts``; ``/etc/.`` → ``./``, ``./hosts``; ``/etc/hosts`` →
``hosts``; ``/lnk`` (a symlink) → ``lnk`` itself; ``/lnk/`` → the dir it points to, as
``lnk/``, ``lnk/...``; ``/`` → ``/``, ``/etc/``, ...; ``/.`` → ``./``, ``./etc/``, ...
A PUT unpacks like the layer extractor, but names are relative to the extraction point (a name
climbing above it is refused), ``.wh.*`` names are plain files, an entry naming the extraction
point itself is skipped, and new files belong to root (0:0) unless ``copy_uid_gid``.
"""

from __future__ import annotations

import base64
import errno
import gzip
import io
import json
import lzma
import os
import posixpath
import stat
import tarfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final, NoReturn

import zstandard

from engine.errors import FailedPrecondition, InvalidArgument, NotFound, NotSupported

from .apply import _BoundedTarInfo
from .compression import Readable, decompressed
from .differ import read_xattrs
from .entries import create
from .export import _header
from .metadata import XATTR_PAX_PREFIX
from .model import Whiteouts
from .openat2 import Fd
from .rootdir import RootDir, clean, join, raise_entry_error
from .unpack import Unpack

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

# Go's os.FileMode (io/fs) as the API sends it: the type in the high bits, then permissions.
GO_MODE_DIR: Final = 1 << 31
GO_MODE_SYMLINK: Final = 1 << 27
_GO_TYPES: Final = {
    stat.S_IFDIR: GO_MODE_DIR,
    stat.S_IFLNK: GO_MODE_SYMLINK,
    stat.S_IFBLK: 1 << 26,  # ModeDevice
    stat.S_IFCHR: 1 << 26 | 1 << 21,  # ModeDevice | ModeCharDevice
    stat.S_IFIFO: 1 << 25,
    stat.S_IFSOCK: 1 << 24,
}
_GO_SPECIAL: Final = ((stat.S_ISUID, 1 << 23), (stat.S_ISGID, 1 << 22), (stat.S_ISVTX, 1 << 20))
# What a broken compressed stream raises.
_CORRUPT: Final = (gzip.BadGzipFile, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError)
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a file swapped for a fifo after the lstat must not hang the GET.
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# errnos of an entry that vanished or changed type under a GET (a running container).
_RACED: Final = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EINVAL, errno.ENXIO})


def go_file_mode(st_mode: int) -> int:
    """Return *st_mode* as Go's ``os.FileMode`` bits (type in the high bits, then permissions)."""
    mode = st_mode & 0o777 | _GO_TYPES.get(stat.S_IFMT(st_mode), 0)
    return mode | sum(go_bit for bit, go_bit in _GO_SPECIAL if st_mode & bit)


def rfc3339(ns: int) -> str:
    """Return *ns* since the epoch as Go's RFC3339Nano in UTC (trailing zeros trimmed)."""
    secs, frac = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(secs, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


@dataclass(frozen=True, slots=True)
class PathStat:
    """Docker's ContainerPathStat: base name, lstat size, Go mode, RFC3339 mtime, link target."""

    name: str
    size: int
    mode: int
    mtime: str
    link_target: str

    def header(self) -> str:
        """Return the ``X-Docker-Container-Path-Stat`` value: base64 of JSON, as Go writes it."""
        fields = {
            "name": _valid_utf8(self.name),
            "size": self.size,
            "mode": self.mode,
            "mtime": self.mtime,
            "linkTarget": _valid_utf8(self.link_target),
        }
        text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
        # encoding/json escapes these for HTML safety; do the same so the bytes match Docker's.
        for char in "<>&\u2028\u2029":
            text = text.replace(char, f"\\u{ord(char):04x}")
        return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _valid_utf8(text: str) -> str:
    # Names come from the kernel with surrogateescape; Go writes invalid UTF-8 as U+FFFD.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _lookup_failed(path: str, exc: OSError) -> NoReturn:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        raise NotFound(f"Could not find the file {path} in container") from exc
    if exc.errno == errno.ELOOP:
        raise InvalidArgument(f"path {path!r}: too many levels of symbolic links") from exc
    raise exc


def _abs(path: str) -> str:
    """Return container *path* absolute and clean, keeping a trailing ``/`` or ``/.`` (moby)."""
    if "\x00" in path:
        raise InvalidArgument(f"path {path!r} contains NUL")
    cleaned = posixpath.normpath("/" + path.lstrip("/"))
    if posixpath.basename(path.rstrip("/")) == "." and not cleaned.endswith("/."):
        cleaned = cleaned.rstrip("/") + "/."
    if path.endswith("/") and not cleaned.endswith("/"):
        cleaned += "/"
    return cleaned


def _open_root(root: Path) -> RootDir:
    try:
        return RootDir(root)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise NotFound(f"container root {str(root)!r} is not a directory") from exc


@dataclass(slots=True)
class _Target:
    """A located path: entry *name* of the O_PATH dir *pfd* ("." = that dir itself)."""

    pfd: Fd
    name: str
    base: str  # Go's filepath.Base of the absolute path: the stat name and the tar rebase name
    st: os.stat_result


def _locate(rootdir: RootDir, path: str) -> _Target:
    """Resolve *path* but its last element in the root, then lstat that (``ResolvePath``).

    A trailing ``/`` or ``/.`` makes the last element part of the resolved directory.
    """
    abs_path = _abs(path)
    parent, last = abs_path.rsplit("/", 1)
    try:
        pfd = rootdir.dir(clean(parent + "/"))
    except OSError as exc:
        _lookup_failed(path, exc)
    name = last if last not in ("", ".") else "."
    try:
        st = os.lstat(name, dir_fd=pfd.fileno())
    except OSError as exc:
        pfd.close()
        _lookup_failed(path, exc)
    stripped = abs_path.rstrip("/")
    return _Target(pfd, name, posixpath.basename(stripped) if stripped else "/", st)


def _link_target(rootdir: RootDir, pfd: Fd, name: str) -> str:
    """Return symlink *name* of *pfd* resolved in the root, absolute; a dangling one lexically."""
    here = rootdir.canonical(pfd)
    try:
        with rootdir.open(join(here, name), os.O_PATH) as fd:
            return "/" + rootdir.canonical(fd)
    except OSError:
        return posixpath.normpath(
            posixpath.join("/" + here, os.readlink(name, dir_fd=pfd.fileno()))
        )


def _stat(rootdir: RootDir, t: _Target) -> PathStat:
    link = ""
    if stat.S_ISLNK(t.st.st_mode):
        link = _link_target(rootdir, t.pfd, t.name)
    mode, mtime = go_file_mode(t.st.st_mode), rfc3339(t.st.st_mtime_ns)
    return PathStat(t.base, t.st.st_size, mode, mtime, link)


def stat_path(root: Path, path: str) -> PathStat:
    """Return the stat of container *path* (its last element not followed); NotFound if absent."""
    with _open_root(root) as rootdir:
        target = _locate(rootdir, path)
        with target.pfd:
            return _stat(rootdir, target)


class _Exact:
    """Read exactly *size* bytes of *fd*: a file that shrank while read is padded with zeros."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd, self._left = fd, size

    def read(self, size: int = -1, /) -> bytes:
        want = self._left if size < 0 else min(size, self._left)
        data = bytearray()
        while len(data) < want and (chunk := os.read(self._fd, want - len(data))):
            data += chunk
        self._left -= want
        return bytes(data.ljust(want, b"\0"))


_Found = tuple[os.stat_result, Fd | None, str]


def _open_entry(pfd: int, name: str) -> _Found | None:
    """Return *name*'s lstat, an fd if a dir or file, a link's target; None if it raced away."""
    try:
        st = os.lstat(name, dir_fd=pfd)
        if stat.S_ISLNK(st.st_mode):
            return st, None, os.readlink(name, dir_fd=pfd)
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            return st, None, ""
        fd = Fd(os.open(name, _DIR_FLAGS if stat.S_ISDIR(st.st_mode) else _FILE_FLAGS, dir_fd=pfd))
    except OSError as exc:
        if exc.errno in _RACED:
            return None
        raise
    opened = os.fstat(fd.fileno())  # cannot fail on an fd we hold
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
        fd.close()
        return None
    return opened, fd, ""


def _add(
    tf: tarfile.TarFile, pfd: int, name: str, tarname: str, links: dict[tuple[int, int], str]
) -> Fd | None:
    """Add entry *name* of dir *pfd* as *tarname*; return an open fd if it is a dir to descend."""
    found = _open_entry(pfd, name)
    if found is None:
        return None
    fd, descend = found[1], False
    try:
        descend = _write(tf, tarname, found, links)
    finally:
        if fd is not None and not descend:
            fd.close()
    return fd if descend else None


def _write(
    tf: tarfile.TarFile, tarname: str, found: _Found, links: dict[tuple[int, int], str]
) -> bool:
    """Write one entry (header and content); return whether it is a dir to descend into."""
    st, fd, link = found
    if stat.S_ISSOCK(st.st_mode):
        return False  # a socket cannot be archived; Docker skips it too
    info = _header(tarname, st)
    if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
        first = links.setdefault((st.st_dev, st.st_ino), tarname)
        if first != tarname:
            info.type, info.linkname = tarfile.LNKTYPE, first
            tf.addfile(info)
            return False
    if fd is not None:
        records = {
            XATTR_PAX_PREFIX + key: value.decode("utf-8", "surrogateescape")
            for key, value in read_xattrs(fd.proc_path(), follow=True)
        }
        info.pax_headers = {**info.pax_headers, **records}
    if stat.S_ISREG(st.st_mode) and fd is not None:
        info.size = st.st_size
        tf.addfile(info, _Exact(fd.fileno(), st.st_size))
        return False
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, link
    elif stat.S_ISFIFO(st.st_mode):
        info.type = tarfile.FIFOTYPE
    else:
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    tf.addfile(info)
    return stat.S_ISDIR(st.st_mode)


def _child(prefix: str, name: str) -> str:
    # The root rebased to "/" gives "/etc", not "//etc" (moby's special case).
    return "/" + name if prefix == "/" else f"{prefix}/{name}"


def _listing(dfd: Fd) -> list[str]:
    """Return the names in *dfd*, reverse-sorted by bytes so ``pop()`` gives Go's walk order."""
    return sorted(os.listdir(dfd.fileno()), key=os.fsencode, reverse=True)


def archive_path(root: Path, path: str, out: BinaryIO) -> PathStat:
    """Write an uncompressed tar of container *path* to *out* (Docker's GET archive shapes).

    Return the stat of *path*; NotFound before anything is written if it does not exist.
    """
    with _open_root(root) as rootdir:
        target = _locate(rootdir, path)
        stack: list[tuple[Fd, str, list[str]]] = []
        try:
            result = _stat(rootdir, target)
            # Not a with block: on an error the tar must stay unterminated, never look complete.
            tf = tarfile.open(  # noqa: SIM115
                fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, errors="surrogateescape"
            )
            links: dict[tuple[int, int], str] = {}
            top = _add(tf, target.pfd.fileno(), target.name, target.base, links)
            if top is not None:
                stack.append((top, target.base, _listing(top)))
            while stack:
                dfd, prefix, names = stack[-1]
                if not names:
                    stack.pop()[0].close()
                    continue
                name = names.pop()
                sub = _add(tf, dfd.fileno(), name, _child(prefix, name), links)
                if sub is not None:
                    stack.append((sub, _child(prefix, name), _listing(sub)))
            tf.close()
        finally:
            target.pfd.close()
            for dfd, _, _ in stack:
                dfd.close()
    return result


def _mount_id(fd: Fd) -> int:
    with open(f"/proc/self/fdinfo/{fd.fileno()}", encoding="ascii") as info:
        for line in info:
            key, _, value = line.partition(":")
            if key == "mnt_id":
                return int(value)
    raise NotSupported("/proc/self/fdinfo has no mnt_id")


def _open_dest(rootdir: RootDir, path: str, rootfs_read_only: bool) -> str:
    """Resolve the extraction point (last element followed too); return it root-relative."""
    try:
        dfd = rootdir.open(clean(_abs(path)), os.O_PATH)
    except OSError as exc:
        _lookup_failed(path, exc)
    with dfd:
        if not stat.S_ISDIR(os.fstat(dfd.fileno()).st_mode):
            raise InvalidArgument("extraction point is not a directory")
        on_rootfs = _mount_id(dfd) == _mount_id(rootdir.fd)
        read_only = bool(os.fstatvfs(dfd.fileno()).f_flag & os.ST_RDONLY)
        if on_rootfs and (read_only or rootfs_read_only):
            raise FailedPrecondition("container rootfs is marked read-only")
        if read_only:
            raise FailedPrecondition("mounted volume is marked read-only")
        return rootdir.canonical(dfd)


class _Source(io.RawIOBase):
    """The decompressed archive: counts bytes and turns a corrupt stream into InvalidArgument."""

    def __init__(self, stream: Readable) -> None:
        self._stream = stream
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: WriteableBuffer) -> int:
        view = memoryview(buf).cast("B")
        try:
            data = self._stream.read(len(view))
        except _CORRUPT as exc:
            raise InvalidArgument(f"archive: corrupt compressed stream: {exc}") from exc
        view[: len(data)] = data
        self.count += len(data)
        return len(data)


def _open_tar(source: _Source) -> tarfile.TarFile | None:
    try:
        # "r|*" also reads bzip2, which the API accepts and the layer path never needs.
        return tarfile.open(
            fileobj=io.BufferedReader(source, 1 << 20),
            mode="r|*",
            tarinfo=_BoundedTarInfo,
            encoding="utf-8",
            errors="surrogateescape",
        )
    except tarfile.ReadError as exc:
        if source.count == 0:
            return None  # an empty body is an empty archive, as for Go's tar reader
        raise InvalidArgument(f"archive: not a tar archive: {exc}") from exc


def _next(tf: tarfile.TarFile) -> tarfile.TarInfo | None:
    try:
        return tf.next()
    except tarfile.TarError as exc:
        raise InvalidArgument(f"archive: {exc}") from exc


def _entry_rel(name: str) -> str:
    """Return tar *name* relative to the extraction point ("" = itself); refuse ``../x``."""
    if "\x00" in name:
        raise InvalidArgument(f"archive entry {name!r}: name contains NUL")
    if name.startswith("/"):  # Go's Clean makes "/../x" "/x", then it is joined under the point
        return posixpath.normpath("/" + name).lstrip("/")
    rel = posixpath.normpath(name)
    if rel == ".." or rel.startswith("../"):
        raise InvalidArgument(f"archive entry {name!r}: path escapes the extraction point")
    return "" if rel == "." else rel


def extract_to(
    root: Path,
    path: str,
    tar_in: BinaryIO,
    *,
    no_overwrite_dir_non_dir: bool = False,
    copy_uid_gid: bool = False,
    rootfs_read_only: bool = False,
) -> None:
    """Unpack the tar (plain, gzip, bzip2, xz, zstd) in *tar_in* under directory *path*.

    NotFound if *path* is missing, InvalidArgument if it is not a directory or an entry is
    unsafe, FailedPrecondition before anything is read if the target is read-only (a read-only
    mount, or *rootfs_read_only* for a container created with ``--read-only``).
    """
    with _open_root(root) as rootdir:
        dest = _open_dest(rootdir, path, rootfs_read_only)
        u = Unpack(rootdir, Whiteouts.DELETE)  # whiteouts are never applied: .wh.* are files
        tf = _open_tar(_Source(decompressed(tar_in)))
        if tf is None:
            return
        with tf:
            while (info := _next(tf)) is not None:
                if not copy_uid_gid:
                    info.uid = info.gid = 0
                _extract_entry(u, tf, info, dest, no_overwrite_dir_non_dir)
                # Stream mode still keeps every TarInfo; drop them so memory stays flat.
                tf.members.clear()  # type: ignore[attr-defined]
        u.finish_dirs()


def _extract_entry(
    u: Unpack, tf: tarfile.TarFile, info: tarfile.TarInfo, dest: str, no_overwrite: bool
) -> None:
    """Create *info* under root-relative dir *dest*, resolving its parent inside the root."""
    rel = _entry_rel(info.name)
    if not rel:
        # The extraction point exists as a dir; moby skips a "." entry rather than touch it.
        if not info.isdir():
            raise InvalidArgument(
                f"archive entry {info.name!r}: would replace the extraction point"
            )
        return
    if info.islnk():
        info.linkname = join(dest, _entry_rel(info.linkname)).rstrip("/")
    parent, base = posixpath.split(join(dest, rel))
    try:
        with u.root.makedirs(parent, entry=info.name) as pfd:
            path = join(u.root.canonical(pfd), base)
            if no_overwrite:
                _check_overwrite(pfd, base, info, path)
            create(u, tf, info, pfd, base, path)
    except tarfile.TarError as exc:
        raise InvalidArgument(f"archive entry {info.name!r}: {exc}") from exc
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise FailedPrecondition(
                f"mounted volume is marked read-only (archive entry {info.name!r})"
            ) from exc
        raise_entry_error(info.name, exc)


def _check_overwrite(pfd: Fd, base: str, info: tarfile.TarInfo, path: str) -> None:
    st = RootDir.lstat(pfd, base)
    if st is not None and stat.S_ISDIR(st.st_mode) != info.isdir():
        old, new = ("non-", "") if info.isdir() else ("", "non-")
        raise InvalidArgument(
            f"cannot overwrite {old}directory {'/' + path!r} with {new}directory {info.name!r}"
        )
