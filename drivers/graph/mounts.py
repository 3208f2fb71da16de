"""The kernel edge of the mounting graph drivers: mount(2) and umount2(2) behind a small seam.

Drivers take a ``Mounter`` in their constructor so tests can pass a fake that records calls.
``LibcMounter`` calls libc through ctypes; it never shells out to mount(8).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Final, Protocol

from engine.errors import NotSupported

MNT_DETACH: Final = 2
CLONE_FS: Final = 0x200
# Backing file systems overlay refuses to sit on. Docker 1.x refused btrfs too: the btrfs driver
# is the better choice there, and it keeps the priority list meaningful.
OVERLAY_REFUSED: Final = {
    0x794C7630: "overlay",
    0x61756673: "aufs",
    0x9123683E: "btrfs",
    0xF15F: "ecryptfs",
    0x2FC12FC1: "zfs",
    0x6969: "nfs",
}
BACKING_NAMES: Final = {
    0xEF53: "extfs",
    0x58465342: "xfs",
    0x01021994: "tmpfs",
    0x9123683E: "btrfs",
}


class Mounter(Protocol):
    """Mounts and unmounts file systems; raises OSError with the kernel's errno on failure."""

    def mount(
        self,
        source: str,
        target: Path,
        fstype: str,
        flags: int = 0,
        data: str = "",
        *,
        cwd: Path | None = None,
    ) -> None:
        """Mount *source* on *target*; relative paths in *data* resolve against *cwd*."""
        ...

    def unmount(self, target: Path, flags: int = 0) -> None:
        """Unmount *target* (umount2 *flags*, e.g. MNT_DETACH)."""
        ...


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class LibcMounter:
    """Mounter calling libc mount(2)/umount2(2) through ctypes."""

    def __init__(self) -> None:
        self._libc = _libc()
        self._libc.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        self._libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self._libc.unshare.argtypes = [ctypes.c_int]

    def mount(
        self,
        source: str,
        target: Path,
        fstype: str,
        flags: int = 0,
        data: str = "",
        *,
        cwd: Path | None = None,
    ) -> None:
        """Mount *source* on *target*; relative paths in *data* resolve against *cwd*."""
        if cwd is None:
            self._mount(source, target, fstype, flags, data)
            return
        target = target.absolute()
        # The daemon is threaded and chdir() is process-wide. A throwaway thread that first
        # unshares its fs context (CLONE_FS: cwd, root, umask) can chdir without affecting any
        # other thread, and its private context dies with it.
        failure: list[BaseException] = []

        def run() -> None:
            try:
                if self._libc.unshare(CLONE_FS) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"unshare(CLONE_FS): {os.strerror(err)}")
                os.chdir(cwd)
                self._mount(source, target, fstype, flags, data)
            except BaseException as exc:  # handed to the calling thread below
                failure.append(exc)

        worker = threading.Thread(target=run, name="graphdriver-mount")
        worker.start()
        worker.join()
        if failure:
            raise failure[0]

    def unmount(self, target: Path, flags: int = 0) -> None:
        """Unmount *target* (umount2 *flags*, e.g. MNT_DETACH)."""
        if self._libc.umount2(os.fsencode(target), flags) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"umount {target}: {os.strerror(err)}", str(target))

    def _mount(self, source: str, target: Path, fstype: str, flags: int, data: str) -> None:
        rc = self._libc.mount(
            os.fsencode(source),
            os.fsencode(target),
            fstype.encode(),
            flags,
            data.encode() if data else None,
        )
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}", str(target))


class _Dirent(ctypes.Structure):
    # glibc's struct dirent on 64-bit Linux (readdir == readdir64 there).
    _fields_ = [
        ("d_ino", ctypes.c_uint64),
        ("d_off", ctypes.c_int64),
        ("d_reclen", ctypes.c_ushort),
        ("d_type", ctypes.c_ubyte),
        ("d_name", ctypes.c_char * 256),
    ]


def filesystems() -> set[str]:
    """Return the file system types the kernel knows (/proc/filesystems)."""
    with open("/proc/filesystems") as f:
        return {line.split()[-1] for line in f if line.strip()}


def fs_magic(path: Path) -> int:
    """Return statfs(2) f_type of the file system holding *path*."""
    libc = _libc()
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes; f_type comes first
    if libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statfs {path}: {os.strerror(err)}", str(path))
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def supports_d_type(directory: Path) -> bool:
    """Return whether readdir(3) in *directory* (non-empty) reports file types (not DT_UNKNOWN)."""
    libc = _libc()
    libc.opendir.restype = ctypes.c_void_p
    libc.readdir.restype = ctypes.POINTER(_Dirent)
    libc.readdir.argtypes = [ctypes.c_void_p]
    libc.closedir.argtypes = [ctypes.c_void_p]
    handle = libc.opendir(os.fsencode(directory))
    if not handle:
        err = ctypes.get_errno()
        raise OSError(err, f"opendir {directory}: {os.strerror(err)}", str(directory))
    try:
        while entry := libc.readdir(handle):
            if entry.contents.d_name not in (b".", b".."):
                return bool(entry.contents.d_type != 0)
        return False
    finally:
        libc.closedir(handle)


def check_overlay(home: Path, mounter: Mounter) -> int:
    """Create *home*; return its fs magic; NotSupported unless overlay works there.

    As Docker's overlay2 supportsOverlay: besides the kernel and backing-fs checks, a real mount
    with two lowers in *home* proves our privileges and the backing file system (d_type) at once.
    """
    if "overlay" not in filesystems():
        raise NotSupported("overlay is not in /proc/filesystems")
    magic = fs_magic(next(p for p in (home, *home.parents) if p.exists()))
    if magic in OVERLAY_REFUSED:
        raise NotSupported(f"overlay is not supported over {OVERLAY_REFUSED[magic]}")
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    probe = Path(tempfile.mkdtemp(prefix="tmp-probe-", dir=home))
    try:
        for sub in ("lower1", "lower2", "upper", "work", "merged"):
            (probe / sub).mkdir()
        (probe / "lower1" / "f").touch()
        if not supports_d_type(probe / "lower1"):
            raise NotSupported(f"backing file system of {home} lacks d_type")
        lowers = f"{probe}/lower2:{probe}/lower1"
        data = f"lowerdir={lowers},upperdir={probe}/upper,workdir={probe}/work"
        try:
            mounter.mount("overlay", probe / "merged", "overlay", 0, data)
        except OSError as exc:
            raise NotSupported(f"probe mount failed: {exc.strerror}") from exc
        mounter.unmount(probe / "merged", MNT_DETACH)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return magic
