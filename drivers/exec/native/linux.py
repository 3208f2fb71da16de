"""The kernel seam of the native exec driver: the syscalls ``os`` does not offer, via ctypes.

Every wrapper raises ``OSError`` with the errno and the call's name, as ``os`` functions do.
Python 3.11 has no ``os.unshare``/``os.setns``; the mount API, pivot_root, capabilities and
prctl are not in ``os`` at all. The terminal helpers (``open_pty``, ``set_winsize``,
``adopt_stdio``) are the ioctls shared by a container's console and ``exec -t``: a pty is always
opened on a given devpts instance (the container's own), never through ``os.openpty``, so that
``tty`` inside names it ``/dev/pts/N``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import platform
import struct
import termios
from collections.abc import Sequence
from typing import Final

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

# sched.h
CLONE_NEWNS: Final = 0x00020000
CLONE_NEWCGROUP: Final = 0x02000000
CLONE_NEWUTS: Final = 0x04000000
CLONE_NEWIPC: Final = 0x08000000
CLONE_NEWUSER: Final = 0x10000000
CLONE_NEWPID: Final = 0x20000000
CLONE_NEWNET: Final = 0x40000000
NS_FLAGS: Final[dict[str, int]] = {
    "mnt": CLONE_NEWNS,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET,
    "cgroup": CLONE_NEWCGROUP,
    "user": CLONE_NEWUSER,
}

# sys/mount.h
MS_RDONLY: Final = 0x1
MS_NOSUID: Final = 0x2
MS_NODEV: Final = 0x4
MS_NOEXEC: Final = 0x8
MS_REMOUNT: Final = 0x20
MS_BIND: Final = 0x1000
MS_MOVE: Final = 0x2000
MS_REC: Final = 0x4000
MS_SILENT: Final = 0x8000
MS_UNBINDABLE: Final = 0x20000
MS_PRIVATE: Final = 0x40000
MS_SLAVE: Final = 0x80000
MS_SHARED: Final = 0x100000
MS_STRICTATIME: Final = 0x1000000
MNT_DETACH: Final = 0x2
UMOUNT_NOFOLLOW: Final = 0x8

# sys/prctl.h
PR_SET_PDEATHSIG: Final = 1
PR_SET_DUMPABLE: Final = 4
PR_SET_KEEPCAPS: Final = 8
PR_SET_NAME: Final = 15
PR_CAPBSET_READ: Final = 23
PR_CAPBSET_DROP: Final = 24
PR_SET_SECUREBITS: Final = 28
PR_SET_NO_NEW_PRIVS: Final = 38
PR_GET_NO_NEW_PRIVS: Final = 39
PR_SET_CHILD_SUBREAPER: Final = 36
PR_CAP_AMBIENT: Final = 47
PR_CAP_AMBIENT_CLEAR_ALL: Final = 4

# linux/close_range.h
CLOSE_RANGE_CLOEXEC: Final = 1 << 2

# asm-generic/ioctls.h (``termios`` lacks these two)
TIOCSPTLCK: Final = 0x40045431
TIOCGPTPEER: Final = 0x5441

_SYSCALLS: Final[dict[str, dict[str, int]]] = {
    "x86_64": {"pivot_root": 155, "setns": 308, "close_range": 436, "capget": 125, "capset": 126},
    "aarch64": {"pivot_root": 41, "setns": 268, "close_range": 436, "capget": 90, "capset": 91},
}
_NR: Final = _SYSCALLS.get(platform.machine(), _SYSCALLS["x86_64"])

_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = (
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_libc.setdomainname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_libc.prctl.argtypes = (
    ctypes.c_int,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_ulong,
)
_libc.setgroups.argtypes = (ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint))


def _check(result: int, name: str, path: str | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}", path)
    return result


def _b(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def unshare(flags: int) -> None:
    """Move this process into new namespaces (``CLONE_NEW*`` flags)."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace *fd* refers to (an open ``/proc/<pid>/ns/<kind>``)."""
    _check(_libc.syscall(_NR["setns"], ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    """mount(2); *target* may be ``/proc/self/fd/N`` to mount onto an fd resolved in a root."""
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(_b(target), flags), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2)."""
    _check(_libc.syscall(_NR["pivot_root"], _b(new_root), _b(put_old)), "pivot_root", new_root)


def sethostname(name: str) -> None:
    """Set the host name of this UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def setdomainname(name: str) -> None:
    """Set the NIS domain name of this UTS namespace."""
    raw = name.encode()
    _check(_libc.setdomainname(raw, len(raw)), "setdomainname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2); returns its result."""
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), "prctl")


def setgroups(gids: list[int]) -> None:
    """Set the supplementary groups."""
    arr = (ctypes.c_uint * len(gids))(*gids)
    _check(_libc.setgroups(len(gids), arr), "setgroups")


def close_range(first: int, last: int = 0xFFFFFFFF, flags: int = 0) -> None:
    """close_range(2): close (or with CLOSE_RANGE_CLOEXEC mark) fds first..last."""
    _check(
        _libc.syscall(_NR["close_range"], ctypes.c_uint(first), ctypes.c_uint(last),
                      ctypes.c_uint(flags)),
        "close_range",
    )  # fmt: skip


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_CAP_V3: Final = 0x20080522


def capget(pid: int = 0) -> tuple[int, int, int]:
    """Return (effective, permitted, inheritable) capability masks of *pid* (0 = self)."""
    header = _CapHeader(_CAP_V3, pid)
    data = (_CapData * 2)()
    _check(_libc.syscall(_NR["capget"], ctypes.byref(header), data), "capget")
    return (
        _join(data[0].effective, data[1].effective),
        _join(data[0].permitted, data[1].permitted),
        _join(data[0].inheritable, data[1].inheritable),
    )


def _join(low: int, high: int) -> int:
    return low | (high << 32)


def capset(effective: int, permitted: int, inheritable: int = 0) -> None:
    """Set this thread's capability masks."""
    header = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.syscall(_NR["capset"], ctypes.byref(header), data), "capset")


def last_cap() -> int:
    """The highest capability number this kernel knows."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def open_pty(ptmx: str, dir_fd: int | None = None) -> tuple[int, int]:
    """Open a new pty on the devpts instance whose ``ptmx`` node is *ptmx* (relative to *dir_fd*);
    return (master, slave), both close-on-exec and neither made a controlling terminal."""
    master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))  # unlock the slave
        # The slave through the master's own devpts mount: no path lookup that could be raced.
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, slave


def set_winsize(fd: int, rows: int, cols: int) -> None:
    """Set the window size of the terminal *fd* (either side of a pty)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def adopt_stdio(stdio: Sequence[int], *, tty: bool = False) -> None:
    """Make *stdio* fds 0-2 (inheritable); with *tty*, make fd 0 the controlling terminal of
    this process, which must lead a session that has none."""
    for target, fd in enumerate(stdio):
        os.dup2(fd, target, inheritable=True)
    if tty:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
