"""Ownership, mode, times and xattrs of tar entries: read from headers, set without following links.

Only numeric uid/gid are used (never uname/gname through the host's NSS). Order matters: chown
clears setuid/setgid and file capabilities, so it comes first, then xattrs, then chmod, then
times. Non-symlinks are changed through ``/proc/self/fd/N`` of an O_PATH fd of the entry itself,
symlinks through ``*at(..., AT_SYMLINK_NOFOLLOW)``; no path is ever re-resolved.
"""

from __future__ import annotations

import logging
import os
import tarfile
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final

from engine.errors import InvalidArgument

from .openat2 import Fd

log = logging.getLogger(__name__)

XATTR_PAX_PREFIX: Final = "SCHILY.xattr."
MAX_ID: Final = 2**32 - 2  # (uid_t)-1 means "unchanged" to chown
# Overlay metadata in a layer would let it forge opaque dirs or redirects in the upper dir.
_FORBIDDEN_XATTRS: Final = ("trusted.overlay.", "user.overlay.")
_PRIVILEGED_XATTRS: Final = ("security.", "trusted.")


@dataclass(frozen=True, slots=True)
class Meta:
    """Metadata to give an entry: numeric owner, permission bits, mtime in ns, xattrs."""

    uid: int
    gid: int
    mode: int
    mtime_ns: int
    xattrs: tuple[tuple[str, bytes], ...]


def _mtime_ns(info: tarfile.TarInfo) -> int:
    # tarfile turns a PAX mtime into a float; parse the text to keep nanoseconds exact.
    text = info.pax_headers.get("mtime")
    if text is not None:
        try:
            return int(Decimal(text) * 1_000_000_000)
        except (InvalidOperation, ValueError):
            log.warning("layer entry %r: bad PAX mtime %r, using %s", info.name, text, info.mtime)
    return int(info.mtime) * 1_000_000_000


def meta_of(info: tarfile.TarInfo) -> Meta:
    """Return the metadata of *info*; InvalidArgument if its uid or gid is out of range."""
    for field, value in (("uid", info.uid), ("gid", info.gid)):
        if not 0 <= value <= MAX_ID:
            raise InvalidArgument(
                f"invalid layer entry {info.name!r}: {field} {value} out of range"
            )
    xattrs = tuple(
        (key[len(XATTR_PAX_PREFIX) :], value.encode("utf-8", "surrogateescape"))
        for key, value in sorted(info.pax_headers.items())
        if key.startswith(XATTR_PAX_PREFIX)
    )
    return Meta(info.uid, info.gid, info.mode & 0o7777, _mtime_ns(info), xattrs)


def _wanted(entry: str, name: str, as_root: bool) -> bool:
    if name.startswith(_FORBIDDEN_XATTRS):
        log.warning("layer entry %r: dropping overlay xattr %s", entry, name)
        return False
    if name.startswith(_PRIVILEGED_XATTRS) and not as_root:
        log.warning("layer entry %r: skipping xattr %s (needs root)", entry, name)
        return False
    return True


def set_xattrs(
    target: str, entry: str, xattrs: tuple[tuple[str, bytes], ...], as_root: bool
) -> None:
    """Set *xattrs* on *target*; an xattr the filesystem refuses is logged, never fatal."""
    for name, value in xattrs:
        if not _wanted(entry, name, as_root):
            continue
        try:
            os.setxattr(target, name, value)
        except OSError as exc:
            log.warning("layer entry %r: cannot set xattr %s: %s", entry, name, exc.strerror)


def apply_meta(efd: Fd, entry: str, meta: Meta, *, as_root: bool) -> None:
    """Give the (non-symlink) inode behind *efd* owner, xattrs, mode and times from *meta*."""
    target = efd.proc_path()
    if as_root:
        os.chown(target, meta.uid, meta.gid)
    set_xattrs(target, entry, meta.xattrs, as_root)
    os.chmod(target, meta.mode)
    os.utime(target, ns=(meta.mtime_ns, meta.mtime_ns))


def apply_link_meta(pfd: Fd, name: str, meta: Meta, *, as_root: bool) -> None:
    """Give symlink *name* in *pfd* owner and times; symlinks have no mode and keep no xattrs."""
    if as_root:
        os.chown(name, meta.uid, meta.gid, dir_fd=pfd.fileno(), follow_symlinks=False)
    os.utime(name, ns=(meta.mtime_ns, meta.mtime_ns), dir_fd=pfd.fileno(), follow_symlinks=False)
