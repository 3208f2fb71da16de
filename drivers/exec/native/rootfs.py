"""A new container's file systems: standard mounts, the spec's mounts, pivot_root, masking.

Lifecycle: the helper has unshared mnt/uts/ipc/net and is PID 1 of a new pid namespace; it calls
``setup(spec)`` and then ``security.exec_process``. ``setup`` makes every host mount a slave,
binds the rootfs onto itself, mounts /proc, /dev (nodes, pts, shm, mqueue, console), /sys and the
spec's mounts, pivots into the rootfs and drops the old root, then sets the hostname and sysctls,
masks and read-only paths and finally the read-only root. With a tty, the *console* is a pty
opened on the container's new devpts instance, its slave bound on /dev/console; ``setup``
returns it, and the caller makes the slave its stdio and sends the master to the monitor.

Every target is resolved by the kernel inside the rootfs (openat2 ``RESOLVE_IN_ROOT`` through
``RootDir``) and mounted via its O_PATH fd (``/proc/self/fd/N``), so no symlink of the image can
send a mount to the host. *Engine-owned* paths (/dev, /etc/hosts, ...) are where Docker's init
layer puts real files: an image symlink there is replaced by a real file or directory in the
container's own layer. /proc and /sys must be ordinary directories (as runc insists).
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from drivers.exec.spec import ContainerSpec, Device, Mount
from engine.errors import InvalidArgument
from graph.archive.openat2 import Fd
from graph.archive.rootdir import RootDir

from . import linux
from .linux import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
)
from .security import StartError, step

_SAFE: Final = MS_NOSUID | MS_NODEV | MS_NOEXEC  # same bits as statvfs's ST_NOSUID/NODEV/NOEXEC
_NODES: Final = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)
_LINKS: Final = (
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)
_STRICT: Final = frozenset({"proc", "sys"})
_OWNED: Final = frozenset(
    {"dev", "dev/pts", "dev/shm", "dev/mqueue", "dev/console", "sys/fs/cgroup", ".dockerenv"}
    | {"etc/hostname", "etc/hosts", "etc/resolv.conf"}
)
# Files under /proc a user may bind over (lxcfs-style), as runc allows; anything else is refused.
_PROC_FILES: Final = "cpuinfo diskstats meminfo stat swaps uptime loadavg slabinfo net/dev"
_PROC_ALLOWED: Final = frozenset("proc/" + p for p in _PROC_FILES.split())
PROPAGATION: Final = {
    "rprivate": MS_PRIVATE | MS_REC,
    "private": MS_PRIVATE,
    "rslave": MS_SLAVE | MS_REC,
    "slave": MS_SLAVE,
    "rshared": MS_SHARED | MS_REC,
    "shared": MS_SHARED,
}
_FLAG_WORDS: Final = {
    "ro": MS_RDONLY,
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "sync": 0x10,
    "dirsync": 0x80,
    "noatime": 0x400,
    "nodiratime": 0x800,
    "relatime": 1 << 21,
    "strictatime": MS_STRICTATIME,
}
_CLEAR_WORDS: Final = frozenset({"rw", "suid", "dev", "exec", "async", "atime", "diratime"})
_SYSCTL_KEY: Final = re.compile(r"[a-z0-9_]+(?:\.[A-Za-z0-9_-]+)+")
_SYSCTL_VALUE: Final = re.compile(r"[\x20-\x7e\t]*")


def check_sysctls(sysctls: Mapping[str, str], namespaces: Iterable[str]) -> None:
    """Raise InvalidArgument unless every sysctl belongs to a namespace the container owns."""
    new = set(namespaces)
    for key, value in sysctls.items():
        if not _SYSCTL_KEY.fullmatch(key):
            raise InvalidArgument(f"sysctl {key!r}: not a valid sysctl name")
        if not _SYSCTL_VALUE.fullmatch(value) or "+" in value or "=" in value:
            raise InvalidArgument(f"sysctl {key}: invalid value {value!r}")
        ipc = key.startswith(("kernel.shm", "kernel.msg", "fs.mqueue.")) or key == "kernel.sem"
        if ipc and "ipc" not in new:
            raise InvalidArgument(f"sysctl {key} is not allowed: the IPC namespace is shared")
        if key.startswith("net.") and "net" not in new:
            raise InvalidArgument(f"sysctl {key} is not allowed: the network namespace is shared")
        if not ipc and not key.startswith("net."):
            raise InvalidArgument(f"sysctl {key} is not allowed: it is not namespaced")


def tmpfs_options(options: Iterable[str]) -> tuple[int, str]:
    """Split tmpfs options into mount flags and the data string ("size=64m,mode=1777")."""
    flags, data = 0, []
    for opt in options:
        if opt in _FLAG_WORDS:
            flags |= _FLAG_WORDS[opt]
        elif opt in _CLEAR_WORDS or opt in PROPAGATION:
            continue
        elif not opt or "," in opt or "\x00" in opt:
            raise InvalidArgument(f"tmpfs option {opt!r} is not valid")
        else:
            data.append(opt)
    return flags, ",".join(data)


def _rel(path: str) -> str:
    if not path.startswith("/") or "\x00" in path:
        raise InvalidArgument(f"mount destination {path!r} is not an absolute path")
    rel = posixpath.normpath(path).lstrip("/")
    if not rel or rel == ".":
        raise InvalidArgument(f"mount destination {path!r}: cannot mount over the root")
    return rel


def _dir(root: RootDir, rel: str, what: str) -> Fd:
    """Return an O_PATH fd of directory *rel*, made (0755) inside the root where missing."""
    try:
        return root.makedirs(rel, entry="/" + rel)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{what}: cannot create it inside the container: {exc}") from exc


def _target(root: RootDir, dest: str, *, is_dir: bool) -> Fd:
    """Return an O_PATH fd of container path *dest*, created inside the root if missing."""
    rel = _rel(dest)
    parent, name = posixpath.split(rel)
    with _dir(root, parent, f"mount destination {dest}") as pfd:
        st = RootDir.lstat(pfd, name)
        if st is not None and rel in _STRICT and not stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"mount destination {dest} must be an ordinary directory")
        if st is not None and rel in _OWNED and stat.S_ISLNK(st.st_mode):
            os.unlink(name, dir_fd=pfd.fileno())  # shadow the image's link, as the init layer does
            st = None
        if st is None and is_dir:
            os.mkdir(name, 0o755, dir_fd=pfd.fileno())
        elif st is None:
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            os.close(os.open(name, flags, 0o644, dir_fd=pfd.fileno()))
    if is_dir:
        return _dir(root, rel, f"mount destination {dest}")
    return root.open(rel, os.O_PATH)


def _mount(
    root: RootDir,
    source: str,
    dest: str,
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
    *,
    is_dir: bool = True,
) -> None:
    with step(f"mount {fstype or 'bind'} on {dest}"), _target(root, dest, is_dir=is_dir) as fd:
        linux.mount(source, fd.proc_path(), fstype, flags, data)


def _remount_ro(root: RootDir, rel: str, extra: int = 0) -> None:
    """Make the mount at *rel* read-only, keeping its nosuid/nodev/noexec."""
    with root.open(rel, os.O_PATH) as fd:
        kept = os.statvfs(fd.fileno()).f_flag & _SAFE
        linux.mount(None, fd.proc_path(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept | extra)


def _device(root: RootDir, dev: Device) -> None:
    rel = _rel(dev.path)
    parent, name = posixpath.split(rel)
    kind = stat.S_IFCHR if dev.type == "c" else stat.S_IFBLK
    with _dir(root, parent, f"device {dev.path}") as pfd, step(f"create device {dev.path}"):
        d = pfd.fileno()
        old = RootDir.lstat(pfd, name)
        if old is not None and stat.S_ISDIR(old.st_mode):
            raise InvalidArgument(f"device {dev.path}: a directory is in the way")
        if old is not None:
            os.unlink(name, dir_fd=d)
        os.mknod(name, kind | (dev.mode & 0o7777), os.makedev(dev.major, dev.minor), dir_fd=d)
        os.chmod(name, dev.mode & 0o7777, dir_fd=d)
        os.chown(name, dev.uid, dev.gid, dir_fd=d, follow_symlinks=False)


def _dev(root: RootDir, spec: ContainerSpec) -> tuple[int, int] | None:
    _mount(root, "tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
    with root.dir("dev") as dev, step("populate /dev"):
        d = dev.fileno()
        for name, major, minor in _NODES:
            os.mknod(name, 0o666 | stat.S_IFCHR, os.makedev(major, minor), dir_fd=d)
            os.chmod(name, 0o666, dir_fd=d)
        core = (("core", "/proc/kcore"),) if os.path.exists("/proc/kcore") else ()
        for name, target in _LINKS + core:
            os.symlink(target, name, dir_fd=d)
    pts = "newinstance,ptmxmode=0666,mode=0620,gid=5"
    _mount(root, "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, pts)
    shm = f"mode=1777,size={spec.shm_size if spec.shm_size > 0 else 64 << 20}"
    _mount(root, "shm", "/dev/shm", "tmpfs", _SAFE, shm)
    if "ipc" in spec.namespaces or "ipc" in spec.join:
        _mount(root, "mqueue", "/dev/mqueue", "mqueue", _SAFE)
    for device in spec.devices:
        _device(root, device)
    return _console(root) if spec.process.tty else None


def _console(root: RootDir) -> tuple[int, int]:
    """Open the console: a new pty of the container's own devpts, its slave bound on
    /dev/console (as runc does), so the process's terminal is both /dev/pts/0 and the console."""
    with step("open a terminal in /dev/pts"), root.dir("dev/pts") as pts:
        master, slave = linux.open_pty("ptmx", dir_fd=pts.fileno())
    try:
        _mount(root, f"/proc/self/fd/{slave}", "/dev/console", None, MS_BIND, is_dir=False)
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    return master, slave


def _sys(root: RootDir, spec: ContainerSpec) -> None:
    ro = 0 if spec.privileged else MS_RDONLY
    if "net" in spec.namespaces or "net" in spec.join:
        _mount(root, "sysfs", "/sys", "sysfs", _SAFE | ro)
    else:  # a fresh sysfs needs a new network namespace: show the host's, read-only
        _mount(root, "/sys", "/sys", None, MS_BIND)
        if ro:
            with step("remount /sys read-only"):
                _remount_ro(root, "sys")
    _mount(root, "cgroup", "/sys/fs/cgroup", "tmpfs", _SAFE | MS_RDONLY, "mode=755")


def _user_mount(root: RootDir, m: Mount) -> None:
    rel = _rel(m.destination)
    if (rel == "proc" or rel.startswith("proc/")) and rel not in _PROC_ALLOWED:
        raise InvalidArgument(f"mount destination {m.destination} is not allowed inside /proc")
    if m.type == "tmpfs":
        flags, data = tmpfs_options(m.options)
        _mount(
            root, "tmpfs", m.destination, "tmpfs", flags | (MS_RDONLY if m.readonly else 0), data
        )
        return
    if m.type != "bind":
        raise InvalidArgument(f"mount {m.destination}: unknown type {m.type!r}")
    if m.propagation not in PROPAGATION:
        raise InvalidArgument(f"mount {m.destination}: unknown propagation {m.propagation!r}")
    try:
        is_dir = stat.S_ISDIR(os.stat(m.source).st_mode)
    except FileNotFoundError as exc:
        raise InvalidArgument(
            f'invalid mount config for type "bind": bind source path does not exist: {m.source}'
        ) from exc
    except OSError as exc:
        raise StartError(f"bind source {m.source}: {exc.strerror}") from exc
    _mount(root, m.source, m.destination, None, MS_BIND | MS_REC, is_dir=is_dir)
    with step(f"set up the bind on {m.destination}"):
        if m.readonly:
            _remount_ro(root, rel)
        with root.open(rel, os.O_PATH) as fd:
            linux.mount(None, fd.proc_path(), None, PROPAGATION[m.propagation])


def _pivot(root: RootDir, rootfs: str) -> None:
    with step(f"pivot_root to {rootfs}"):
        os.fchdir(root.fd.fileno())
        linux.pivot_root(".", ".")
        linux.mount(None, ".", None, MS_SLAVE | MS_REC)  # nothing of ours reaches the host
        linux.umount2(".", MNT_DETACH)
        os.chdir("/")


def _mask(root: RootDir, paths: Iterable[str]) -> None:
    with step("open /dev/null"):
        null = root.open("dev/null", os.O_PATH, no_symlinks=True)
    with null:
        st = os.fstat(null.fileno())
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
            raise StartError("/dev/null is not the null device (char 1:3); refusing to mask")
        for path in paths:
            try:
                fd = root.open(_rel(path), os.O_PATH)
            except (FileNotFoundError, NotADirectoryError):
                continue
            with fd, step(f"mask {path}"):
                if stat.S_ISDIR(os.fstat(fd.fileno()).st_mode):
                    linux.mount("tmpfs", fd.proc_path(), "tmpfs", MS_RDONLY | _SAFE)
                else:
                    linux.mount(null.proc_path(), fd.proc_path(), None, MS_BIND)


def _readonly(root: RootDir, paths: Iterable[str]) -> None:
    for path in paths:
        rel = _rel(path)
        try:
            fd = root.open(rel, os.O_PATH)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with fd, step(f"make {path} read-only"):
            linux.mount(fd.proc_path(), fd.proc_path(), None, MS_BIND | MS_REC)
            _remount_ro(root, rel, MS_REC)


def owned_namespaces(spec: ContainerSpec) -> frozenset[str]:
    """Return the namespace kinds the container creates itself (not the host's, not joined)."""
    return frozenset(spec.namespaces) - frozenset(spec.join)


def _inside(spec: ContainerSpec) -> None:
    """The steps after pivot_root: names, sysctls, masks, read-only paths and root."""
    if "uts" in owned_namespaces(spec):
        with step("set the hostname"):
            if spec.hostname:
                linux.sethostname(spec.hostname)
            if spec.domainname:
                linux.setdomainname(spec.domainname)
    with RootDir(Path("/")) as root:
        for key, value in spec.sysctls.items():
            path = "proc/sys/" + key.replace(".", "/")
            with step(f"set sysctl {key}"), root.open(path, os.O_WRONLY) as fd:
                os.write(fd.fileno(), value.encode())
        if not spec.privileged:
            _mask(root, spec.masked_paths)
            _readonly(root, spec.readonly_paths)
    if spec.readonly_rootfs:
        with step("remount / read-only"):
            kept = os.statvfs("/").f_flag & _SAFE
            linux.mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept)
    os.chdir("/")


def setup(spec: ContainerSpec) -> tuple[int, int] | None:
    """Mount the container's file systems and pivot_root into its rootfs; cwd ends at "/".
    With a tty, return the console's (master, slave), both close-on-exec."""
    linux.prctl(linux.PR_SET_DUMPABLE, 0)
    os.umask(0o022)
    check_sysctls(spec.sysctls, owned_namespaces(spec))
    with step("make / a slave mount"):
        linux.mount(None, "/", None, MS_SLAVE | MS_REC)
    with step(f"bind the rootfs {spec.rootfs}"):
        linux.mount(spec.rootfs, spec.rootfs, None, MS_BIND | MS_REC)
        root = RootDir(Path(spec.rootfs))
    with root:
        _mount(root, "proc", "/proc", "proc", _SAFE)
        console = _dev(root, spec)
        _sys(root, spec)
        for m in spec.mounts:
            _user_mount(root, m)
        _pivot(root, spec.rootfs)
    _inside(spec)
    return console
