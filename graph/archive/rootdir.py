"""A layer root: every path from an archive is resolved by the kernel inside it (openat2).

Paths given to ``RootDir`` are root-relative strings that may contain symlinks and ``..``; the
kernel clamps them to the root (``RESOLVE_IN_ROOT``), so an absolute symlink such as
``var/run -> /run`` means ``<root>/run`` and nothing outside the root is ever opened. Entries are
then created with ``*at`` calls relative to the returned directory fd and a single name.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import stat
from pathlib import Path
from types import TracebackType
from typing import Final, NoReturn, Self

from engine.errors import InvalidArgument

from .openat2 import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, Fd, Syscalls

# Same bound as the kernel's MAXSYMLINKS for symlinks followed while creating implied dirs.
MAX_SYMLINK_HOPS: Final = 40

_IN_ROOT: Final = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
_DIR: Final = os.O_PATH | os.O_DIRECTORY

# errnos caused by the shape of the archive (as opposed to the host: ENOSPC, EIO, ...).
_ENTRY_ERRNOS: Final = frozenset({errno.ELOOP, errno.ENAMETOOLONG, errno.ENOTDIR, errno.EXDEV})


def clean(name: str) -> str:
    """Return *name* as a clean root-relative path ("" = the root); InvalidArgument if it escapes.

    A leading ``/`` means the root, so ``/../x`` is ``x``; a relative name that climbs above the
    root (``../x``) is refused, as Docker does.
    """
    if "\x00" in name:
        raise InvalidArgument(f"invalid layer entry {name!r}: name contains NUL")
    if name.startswith("/"):
        path = posixpath.normpath("/" + name).lstrip("/")
    else:
        path = posixpath.normpath(name)
        if path == ".." or path.startswith("../"):
            raise InvalidArgument(f"invalid layer entry {name!r}: path escapes layer root")
    return "" if path == "." else path


def join(parent: str, name: str) -> str:
    """Join root-relative *parent* and *name* ("" is the root)."""
    return f"{parent}/{name}" if parent else name


def raise_entry_error(entry: str, exc: OSError) -> NoReturn:
    """Raise InvalidArgument if *exc* was caused by the archive's *entry*, else *exc* noted."""
    if exc.errno in _ENTRY_ERRNOS:
        raise InvalidArgument(f"invalid layer entry {entry!r}: {exc.strerror}") from exc
    note = f"layer entry {entry!r}"
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)
    raise exc


class RootDir:
    """An open layer root; resolves, creates and removes paths strictly inside it."""

    def __init__(self, path: Path, syscalls: Syscalls | None = None) -> None:
        self._sys = syscalls if syscalls is not None else Syscalls()
        self.fd = Fd(os.open(path, _DIR | os.O_CLOEXEC))
        self._real = os.readlink(self.fd.proc_path())

    def open(self, rel: str, flags: int, *, no_symlinks: bool = False) -> Fd:
        """Open root-relative *rel* resolved in the root; raise OSError as the kernel does."""
        resolve = _IN_ROOT | (RESOLVE_NO_SYMLINKS if no_symlinks else 0)
        return Fd(self._sys.openat2(self.fd.fileno(), rel or ".", flags, 0, resolve))

    def dir(self, rel: str) -> Fd:
        """Return an O_PATH fd of directory *rel*; OSError (ENOENT, ENOTDIR) if it is not one."""
        return self.open(rel, _DIR)

    def makedirs(self, rel: str, *, entry: str) -> Fd:
        """Return an O_PATH fd of directory *rel*, creating missing dirs 0755 inside the root.

        A dangling symlink on the way is followed (its target is created, inside the root), as
        later layers write through links planted by lower ones (``var/run -> /run``).
        """
        path, hops = rel, 0
        while True:
            try:
                return self.dir(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise_entry_error(entry, exc)
            parts = [p for p in path.split("/") if p not in ("", ".")]
            i = self._first_missing(parts, entry)
            with self.dir("/".join(parts[:i])) as pfd:
                try:
                    os.mkdir(parts[i], 0o755, dir_fd=pfd.fileno())
                    continue
                except FileExistsError:
                    pass
                try:
                    target = os.readlink(parts[i], dir_fd=pfd.fileno())
                except OSError as exc:
                    raise InvalidArgument(
                        f"invalid layer entry {entry!r}: not a directory"
                    ) from exc
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise InvalidArgument(f"invalid layer entry {entry!r}: too many symlinks")
            # The kernel resolves the joined string physically, as it would the link itself; an
            # absolute target starts again at the root (RESOLVE_IN_ROOT).
            base = [] if target.startswith("/") else parts[:i]
            path = "/".join([*base, target, *parts[i + 1 :]])

    def _first_missing(self, parts: list[str], entry: str) -> int:
        for i in range(len(parts)):
            try:
                self.dir("/".join(parts[: i + 1])).close()
            except FileNotFoundError:
                return i
            except OSError as exc:
                raise_entry_error(entry, exc)
        raise InvalidArgument(f"invalid layer entry {entry!r}: directory vanished")

    def canonical(self, fd: Fd) -> str:
        """Return the physical root-relative path of *fd* ("" for the root)."""
        real = os.readlink(fd.proc_path())
        if real == self._real:
            return ""
        if not real.startswith(self._real.rstrip("/") + "/"):
            raise InvalidArgument(f"resolved path {real!r} is outside the layer root")
        return real[len(self._real.rstrip("/")) + 1 :]

    @staticmethod
    def lstat(pfd: Fd, name: str) -> os.stat_result | None:
        """Return the lstat of *name* in directory *pfd*, None if there is no such entry."""
        try:
            return os.lstat(name, dir_fd=pfd.fileno())
        except FileNotFoundError:
            return None

    @staticmethod
    def remove(pfd: Fd, name: str) -> None:
        """Remove *name* from directory *pfd*, recursively for a dir (never through symlinks)."""
        st = RootDir.lstat(pfd, name)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            # rmtree with dir_fd opens each level itself and checks it is the dir it lstat-ed.
            shutil.rmtree(name, dir_fd=pfd.fileno())
        else:
            os.unlink(name, dir_fd=pfd.fileno())

    def close(self) -> None:
        """Close the root fd."""
        self.fd.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
