"""Apply a layer tar onto a directory, never touching anything outside it.

The tar is read as a stream (``tarfile`` mode ``r|``) and every entry is created by this package,
never by ``extract``/``extractall``: the entry's parent is resolved by the kernel inside the root
(openat2 ``RESOLVE_IN_ROOT``), then the entry is made with ``*at`` calls on that dir fd.

Choices (Docker's where it has one):
- Names are cleaned like Go's ``filepath.Clean``: a leading ``/`` means the root, a relative
  name climbing above the root (``../x``), a NUL byte or a hard link whose target climbs out is
  refused with InvalidArgument naming the entry. Symlink targets are stored verbatim.
- Unknown entry types are refused (Docker: "unhandled tar header type"); GNU sparse files are
  read by ``tarfile`` and written out as plain files; global PAX headers only carry defaults.
- AUFS metadata at the top (``.wh..wh.plnk/...``, ``.wh..wh.aufs``) is skipped, as in Docker;
  hard links into ``.wh..wh.plnk`` (old AUFS exports) are therefore not resolved.
- Device nodes are skipped with a warning unless running as root; fifos are always made.
- Hard links take their metadata from the inode they share; symlinks keep no xattrs.
- PAX and GNU long-name headers over 1 MiB are refused (Go's archive/tar limit), so a header
  cannot make the reader hold an unbounded buffer; content itself is streamed and not capped.
- On failure the root is left half-applied; the caller removes the layer dir.
"""

from __future__ import annotations

import io
import logging
import posixpath
import tarfile
from pathlib import Path
from typing import BinaryIO, Final, cast

from engine.errors import InvalidArgument, NotFound

from .compression import TRAILING_MAX, HashingReader, open_layer
from .entries import create
from .metadata import meta_of
from .model import AppliedLayer, Whiteouts
from .rootdir import RootDir, clean, join, raise_entry_error
from .unpack import Unpack
from .whiteout import apply_whiteout, is_aufs_metadata, is_whiteout

log = logging.getLogger(__name__)

MAX_HEADER_SIZE: Final = 1 << 20
_HEADER_TYPES: Final = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses oversized extended headers before tarfile buffers them."""

    def _proc_member(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _HEADER_TYPES and self.size > MAX_HEADER_SIZE:
            raise InvalidArgument(f"invalid layer: extended header of {self.size} bytes")
        # _proc_member is tarfile's documented hook for subclasses but missing from the stubs.
        return cast(tarfile.TarInfo, super()._proc_member(tf))  # type: ignore[misc]


def apply_layer(
    root: Path, stream: BinaryIO, *, whiteouts: Whiteouts = Whiteouts.DELETE
) -> AppliedLayer:
    """Apply a layer tar (plain, gzip or zstd, detected by magic bytes) onto directory root."""
    try:
        rootdir = RootDir(root)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise NotFound(f"layer root {str(root)!r} is not a directory") from exc
    with rootdir:
        return apply_stream(rootdir, stream, whiteouts)


def apply_stream(rootdir: RootDir, stream: BinaryIO, whiteouts: Whiteouts) -> AppliedLayer:
    """Apply the layer in *stream* onto the open *rootdir*; the seam tests drive with fakes."""
    reader = open_layer(stream)
    u = Unpack(rootdir, whiteouts)
    # tarfile reads in 10 KiB records: a 1 MiB buffer hands the hasher fewer, larger chunks.
    tf = _open_tar(io.BufferedReader(reader, 1 << 20), reader)
    if tf is None:  # an empty stream is an empty layer, as for Go's tar reader
        return AppliedLayer(reader.digest(), 0)
    with tf:
        while (info := _next(tf)) is not None:
            _entry(u, tf, info)
            # Stream mode still keeps every TarInfo; drop them so memory stays flat.
            tf.members.clear()  # type: ignore[attr-defined]
    u.finish_dirs()
    reader.drain(TRAILING_MAX)
    return AppliedLayer(reader.digest(), u.size)


def _open_tar(buffered: io.BufferedReader, reader: HashingReader) -> tarfile.TarFile | None:
    try:
        return tarfile.open(
            fileobj=buffered,
            mode="r|",
            tarinfo=_BoundedTarInfo,
            encoding="utf-8",
            errors="surrogateescape",
        )
    except tarfile.ReadError as exc:
        if reader.count == 0:
            return None
        raise InvalidArgument(f"invalid layer: not a tar archive: {exc}") from exc


def _next(tf: tarfile.TarFile) -> tarfile.TarInfo | None:
    try:
        return tf.next()
    except tarfile.TarError as exc:
        raise InvalidArgument(f"invalid layer: {exc}") from exc


def _entry(u: Unpack, tf: tarfile.TarFile, info: tarfile.TarInfo) -> None:
    name = clean(info.name)
    parent, base = posixpath.split(name)
    if is_aufs_metadata(name):
        log.debug("layer entry %r: skipping AUFS metadata", info.name)
        return
    if is_whiteout(base):
        apply_whiteout(u, info, parent, base)
        return
    if not name:
        if not info.isdir():
            raise InvalidArgument(
                f"invalid layer entry {info.name!r}: the root must be a directory"
            )
        u.defer_dir("", info.name, meta_of(info))
        return
    with u.root.makedirs(parent, entry=info.name) as pfd:
        path = join(u.root.canonical(pfd), base)
        try:
            if create(u, tf, info, pfd, base, path):
                u.mark(path)
        except tarfile.TarError as exc:
            raise InvalidArgument(f"invalid layer entry {info.name!r}: {exc}") from exc
        except OSError as exc:
            raise_entry_error(info.name, exc)
