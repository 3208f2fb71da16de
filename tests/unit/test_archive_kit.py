"""Tar crafting and tree snapshots shared by the archive tests (fixture F3 of the test plan)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from graph.archive import AppliedLayer, Whiteouts, apply_layer

Member = tuple[tarfile.TarInfo, bytes | None]
Snapshot = dict[str, tuple[object, ...]]

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: chown, device nodes, trusted.*")
MTIME = 1_700_000_000


def _info(name: str, kind: bytes, mode: int, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = MTIME
    info.uid = info.gid = os.geteuid() if not IS_ROOT else 0
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def reg(name: str, data: bytes = b"", mode: int = 0o644, **fields: object) -> Member:
    """A regular file entry."""
    info = _info(name, tarfile.REGTYPE, mode, **fields)
    info.size = len(data)
    return info, data


def dir_(name: str, mode: int = 0o755, **fields: object) -> Member:
    """A directory entry."""
    return _info(name, tarfile.DIRTYPE, mode, **fields), None


def sym(name: str, target: str, **fields: object) -> Member:
    """A symlink entry."""
    return _info(name, tarfile.SYMTYPE, 0o777, linkname=target, **fields), None


def hard(name: str, target: str, **fields: object) -> Member:
    """A hard link entry."""
    return _info(name, tarfile.LNKTYPE, 0o644, linkname=target, **fields), None


def node(name: str, kind: bytes, major: int = 0, minor: int = 0, mode: int = 0o600) -> Member:
    """A char, block or fifo entry."""
    return _info(name, kind, mode, devmajor=major, devminor=minor), None


def build(*members: Member, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """Return an uncompressed tar of *members*."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def apply(root: Path, *members: Member, whiteouts: Whiteouts = Whiteouts.DELETE) -> AppliedLayer:
    """Apply a tar of *members* onto *root*."""
    return apply_layer(root, io.BytesIO(build(*members)), whiteouts=whiteouts)


def snapshot(top: Path, *, dir_mtimes: bool = True) -> Snapshot:
    """Return every path under *top* (not *top* itself) with type, metadata and content hash."""
    result: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                extra: object = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            else:
                extra = st.st_rdev
            try:
                xattrs = tuple(sorted(os.listxattr(path, follow_symlinks=False)))
                xattrs_values = tuple(os.getxattr(path, x, follow_symlinks=False) for x in xattrs)
            except OSError:
                xattrs_values = ()
            mtime = None if stat.S_ISDIR(st.st_mode) and not dir_mtimes else st.st_mtime_ns
            rel = "/" + os.path.relpath(path, top)
            result[rel] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_size,
                mtime,
                extra,
                xattrs_values,
            )
    return result


def test_kit_builds_a_readable_tar() -> None:
    data = build(reg("a", b"x"), dir_("d"), sym("s", "/t"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert [m.name for m in tf] == ["a", "d", "s"]
