"""The kernel seam of the archive package: openat2(2) through ctypes, and an fd that always closes.

Everything that resolves a path inside a layer root goes through ``Syscalls.openat2`` so that the
kernel, not string handling, keeps ``..``, absolute paths and symlinks inside the root
(``RESOLVE_IN_ROOT``). Tests can pass a fake ``Syscalls`` to ``RootDir``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from types import TracebackType
from typing import Final, Self

from engine.errors import NotSupported

# linux/openat2.h
RESOLVE_NO_XDEV: Final = 0x01
RESOLVE_NO_MAGICLINKS: Final = 0x02
RESOLVE_NO_SYMLINKS: Final = 0x04
RESOLVE_BENEATH: Final = 0x08
RESOLVE_IN_ROOT: Final = 0x10

# The unified syscall table gives openat2 the same number on every architecture we run on.
SYSCALL_NUMBERS: Final[dict[str, int]] = {
    "x86_64": 437,
    "aarch64": 437,
}

# The kernel may answer EAGAIN under RESOLVE_IN_ROOT when a rename races the lookup.
_EAGAIN_RETRIES: Final = 16


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


class Syscalls:
    """The syscalls the extractor cannot get from ``os``; replace in tests to fake the kernel."""

    def __init__(self) -> None:
        machine = platform.machine()
        if machine not in SYSCALL_NUMBERS:
            raise NotSupported(f"openat2: unknown syscall number on {machine}")
        self._nr = SYSCALL_NUMBERS[machine]
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long

    def openat2(self, dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
        """Open *path* relative to *dirfd* with *resolve* flags; raise OSError with the errno."""
        how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
        raw = os.fsencode(path)
        for _ in range(_EAGAIN_RETRIES):
            fd = self._syscall(
                ctypes.c_long(self._nr),
                ctypes.c_int(dirfd),
                ctypes.c_char_p(raw),
                ctypes.byref(how),
                ctypes.c_size_t(ctypes.sizeof(how)),
            )
            if fd >= 0:
                return int(fd)
            err = ctypes.get_errno()
            if err == errno.ENOSYS:
                raise NotSupported("openat2 is not available (Linux >= 5.6 needed)")
            if err != errno.EAGAIN:
                raise OSError(err, os.strerror(err), path)
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)


class Fd:
    """An owned file descriptor, closed once by ``close()`` or on leaving a ``with`` block."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __int__(self) -> int:
        """Return the descriptor number; ValueError if closed."""
        return self.fileno()

    def fileno(self) -> int:
        """Return the descriptor number; ValueError if closed."""
        if self._fd < 0:
            raise ValueError("fd is closed")
        return self._fd

    def proc_path(self) -> str:
        """Return the /proc/self/fd path naming this descriptor's inode."""
        return f"/proc/self/fd/{self.fileno()}"

    def close(self) -> None:
        """Close the descriptor; closing twice is a no-op."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
