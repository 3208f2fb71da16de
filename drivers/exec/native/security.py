"""The last steps inside a container: user, rlimits, capabilities, cwd, fds, then ``execve``.

``exec_process`` runs in the single-threaded helper whose root is already the container's (after
``rootfs.setup`` for a new container, or setns + chroot for ``docker exec``). Everything it reads
from the container (``/etc/passwd``, ``/etc/group``, ``$PATH`` entries) is plain data resolved
inside that root: never pwd/grp/NSS, which would load libraries from the image (CVE-2019-14271).

Vocabulary: a *cap set* is a mask of capability numbers (bit n = capability n, as in
``/proc/<pid>/status``); names are the kernel's (``CAP_CHOWN``). This module also holds the
capability table, Docker's ``CapAdd``/``CapDrop`` arithmetic and the passwd/group parser.
Failures raise ``InvalidArgument`` (bad config) or ``StartError`` (the kernel said no), each
naming the step and path, so a caller can report ``str(exc)`` as it is.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import signal
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NoReturn

from drivers.exec.spec import CAPABILITIES, RLIMITS, Process, Rlimit, held_capabilities
from engine.errors import EngineError, InvalidArgument
from graph.archive.rootdir import RootDir

from . import linux

CAP_NUMBERS: Final = {name: n for n, name in enumerate(CAPABILITIES)}
DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BREAKOUT: Final = (
    "current working directory is outside of container mount namespace root -- "
    "possible container breakout detected"
)
_MAX_ID: Final = 2**31 - 1
_MAX_DB: Final = 4 << 20  # bytes read from /etc/passwd or /etc/group at most


class StartError(EngineError):
    """The kernel refused a step of setting up the container process; the message names it."""


@contextmanager
def step(what: str) -> Iterator[None]:
    """Turn an OSError raised inside the block into a StartError "WHAT: strerror"."""
    try:
        yield
    except OSError as exc:
        raise StartError(f"{what}: {exc.strerror or exc}") from exc


# ---- capabilities ---------------------------------------------------------------------------


def cap_name(name: str) -> str:
    """Return the canonical ``CAP_X`` of *name* (any case, prefix optional, "ALL" kept)."""
    up = name.strip().upper()
    if up == "ALL":
        return up
    full = up if up.startswith("CAP_") else "CAP_" + up
    if full not in CAP_NUMBERS:
        raise InvalidArgument(f"unknown capability: {name}")
    return full


def cap_mask(names: Iterable[str]) -> int:
    """Return the mask of capability *names*; InvalidArgument for an unknown one."""
    mask = 0
    for name in names:
        canonical = cap_name(name)
        if canonical == "ALL":
            raise InvalidArgument("capability ALL is not allowed here")
        mask |= 1 << CAP_NUMBERS[canonical]
    return mask


def cap_names(mask: int) -> tuple[str, ...]:
    """Return the names of the known capabilities in *mask*, in number order."""
    return tuple(name for n, name in enumerate(CAPABILITIES) if mask >> n & 1)


def held_caps(status: str | None = None) -> int:
    """Return the CapBnd mask of ``/proc/self/status`` (or of the given status text)."""
    try:
        return held_capabilities(status)
    except OSError as exc:
        raise StartError(f"read /proc/self/status: {exc}") from None


# ---- users and groups -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    """One line of the container's /etc/passwd."""

    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True, slots=True)
class GroupEntry:
    """One line of the container's /etc/group."""

    name: str
    gid: int
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class User:
    """Who the process runs as; ``name`` is "" when no passwd entry matched."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    home: str = "/"
    name: str = ""


def _id(text: str) -> int | None:
    if not text.isdigit() or not text.isascii():
        return None
    value = int(text)
    return value if value <= _MAX_ID else None


def _records(text: str, fields: int) -> Iterator[list[str]]:
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            parts = line.split(":")
            if len(parts) >= fields:
                yield parts


def parse_passwd(text: str) -> list[PasswdEntry]:
    """Parse passwd(5) text; lines with a bad uid or gid are skipped, not read as 0."""
    entries = []
    for p in _records(text, 4):
        uid, gid = _id(p[2]), _id(p[3])
        if uid is not None and gid is not None:
            entries.append(PasswdEntry(p[0], uid, gid, p[5] if len(p) > 5 else ""))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    """Parse group(5) text; lines with a bad gid are skipped."""
    entries = []
    for p in _records(text, 3):
        gid = _id(p[2])
        if gid is not None:
            members = tuple(m.strip() for m in p[3].split(",") if m.strip()) if len(p) > 3 else ()
            entries.append(GroupEntry(p[0], gid, members))
    return entries


def _read_db(root: RootDir, rel: str) -> str | None:
    try:
        fd = root.open(rel, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with fd, step(f"read /{rel}"):
        if not stat.S_ISREG(os.fstat(fd.fileno()).st_mode):
            raise InvalidArgument(f"/{rel} in the container is not a regular file")
        return os.read(fd.fileno(), _MAX_DB).decode("utf-8", "replace")


def resolve_user(spec: str, root: str = "/") -> User:
    """Resolve "", "uid", "uid:gid", "name" or "name:group" in the passwd/group files of *root*."""
    user_arg, _, group_arg = spec.partition(":")
    uid_arg, gid_arg = _id(user_arg), _id(group_arg)
    for arg, value in ((user_arg, uid_arg), (group_arg, gid_arg)):
        if value is None and arg.lstrip("-").isdigit():
            raise InvalidArgument(f"user {spec!r}: uids and gids must be in range 0-{_MAX_ID}")
    with RootDir(Path(root)) as rootdir:
        passwd_text = _read_db(rootdir, "etc/passwd")
        group_text = _read_db(rootdir, "etc/group")
    users = parse_passwd(passwd_text or "")
    if not user_arg:
        match = [u for u in users if u.uid == 0]
    elif uid_arg is not None:  # numeric is always a uid (CVE-2016-3697)
        match = [u for u in users if u.uid == uid_arg]
    else:
        match = [u for u in users if u.name == user_arg]
        if not match:
            raise InvalidArgument(
                f"unable to find user {user_arg}: no matching entries in passwd file"
            )
    uid = match[0].uid if match else (uid_arg or 0)
    gid, home, name = (match[0].gid, match[0].home or "/", match[0].name) if match else (0, "/", "")
    groups = parse_group(group_text or "")
    sgids: tuple[int, ...] = ()
    if group_arg:
        if gid_arg is not None:  # numeric is always a gid
            gid = gid_arg
        elif found := [g for g in groups if g.name == group_arg]:
            gid = found[0].gid
        else:
            raise InvalidArgument(
                f"unable to find group {group_arg}: no matching entries in group file"
            )
    elif name:
        sgids = tuple(dict.fromkeys(g.gid for g in groups if name in g.members))
    return User(uid, gid, sgids, home, name)


# ---- the process ----------------------------------------------------------------------------

_RLIMITS: Final = {name: n for n, name in enumerate(RLIMITS)}


def set_rlimits(rlimits: Iterable[Rlimit]) -> None:
    """Apply rlimits; a hard limit above the current one (or soft above hard) is refused."""
    inf = resource.RLIM_INFINITY

    def big(v: int) -> float:
        return float("inf") if v < 0 or v == inf else v

    for lim in rlimits:
        key = lim.name.lower().removeprefix("rlimit_")
        if key not in _RLIMITS:
            raise InvalidArgument(f"unknown rlimit: {lim.name}")
        _, cur_hard = resource.getrlimit(_RLIMITS[key])
        soft, hard = (inf if v < 0 else v for v in (lim.soft, lim.hard))
        if big(soft) > big(hard):
            raise InvalidArgument(f"rlimit {key}: soft limit {lim.soft} is above hard {lim.hard}")
        if big(hard) > big(cur_hard):
            raise InvalidArgument(
                f"rlimit {key}: hard limit {lim.hard} is above the current hard limit {cur_hard}"
            )
        with step(f"setrlimit {key}"):
            resource.setrlimit(_RLIMITS[key], (soft, hard))


def build_env(env: Iterable[str], home: str) -> dict[str, str]:
    """Return the process environment: *env*, plus PATH and HOME when missing."""
    out: dict[str, str] = {}
    for item in env:
        key, sep, value = item.partition("=")
        if sep and key:
            out[key] = value
    out.setdefault("PATH", DEFAULT_PATH)
    out.setdefault("HOME", home or "/")
    return out


class CommandNotFound(InvalidArgument):
    """The command does not exist in the container (Docker's exit status 127)."""

    exit_code = 127


class CommandNotExecutable(InvalidArgument):
    """The command exists but cannot be executed (Docker's exit status 126)."""

    exit_code = 126


def lookpath(name: str, path: str) -> str:
    """Find *name* as execvp would, in the current root; InvalidArgument in Docker's words."""
    if "/" in name:
        try:
            st = os.stat(name)
        except OSError as exc:
            why = (exc.strerror or "").lower()  # Go's spelling, as Docker prints it
            raise CommandNotFound(f'exec: "{name}": stat {name}: {why}') from exc
        if stat.S_ISDIR(st.st_mode) or not os.access(name, os.X_OK):
            raise CommandNotExecutable(f'exec: "{name}": permission denied')
        return name
    for entry in path.split(":"):
        candidate = os.path.join(entry or ".", name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
            return candidate
    raise CommandNotFound(f'exec: "{name}": executable file not found in $PATH')


def _enter_cwd(cwd: str, user: User) -> None:
    path = cwd or "/"
    if not path.startswith("/"):
        raise InvalidArgument(f"working directory {cwd!r} is not an absolute path")
    try:
        os.chdir(path)
        return
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StartError(f"chdir to cwd {path!r}: {exc.strerror}") from exc
    parts, made = [p for p in path.split("/") if p], "/"
    with step(f"create cwd {path!r}"):
        for part in parts:
            made = os.path.join(made, part)
            if not os.path.lexists(made):
                os.mkdir(made, 0o755)
                os.chown(made, user.uid, user.gid, follow_symlinks=False)
    with step(f"chdir to cwd {path!r}"):
        os.chdir(path)


def verify_cwd() -> None:
    """Raise StartError if the cwd is not reachable from the current root (CVE-2024-21626)."""
    try:
        where = os.getcwd()
    except OSError as exc:
        raise StartError(BREAKOUT) from exc
    if not where.startswith("/"):  # the kernel's "(unreachable)/..." form
        raise StartError(BREAKOUT)


def mark_fds_cloexec() -> None:
    """Mark every fd >= 3 close-on-exec (so a failure can still be reported before execve)."""
    try:
        linux.close_range(3, 0xFFFFFFFF, linux.CLOSE_RANGE_CLOEXEC)
        return
    except OSError:
        pass
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= 3:
            with suppress(OSError):  # the listing's own fd, closed meanwhile
                os.set_inheritable(fd, False)


def apply_user_and_caps(user: User, caps: int) -> None:
    """Bounding set = *caps*, no inheritable/ambient; switch ids; root keeps *caps* as perm/eff."""
    last = linux.last_cap()
    with step("capabilities"):
        eff, perm, _ = linux.capget()
        linux.capset(eff, perm, 0)
        with suppress(OSError):  # a kernel without ambient capabilities has none to clear
            linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
        for n in range(last + 1):
            if not caps >> n & 1 and linux.prctl(linux.PR_CAPBSET_READ, n):
                linux.prctl(linux.PR_CAPBSET_DROP, n)
    with step(f"set user {user.uid}:{user.gid}"):
        linux.setgroups(list(user.groups))
        os.setgid(user.gid)
        os.setuid(user.uid)  # a non-root uid clears permitted and effective (no KEEPCAPS)
    if user.uid == 0:
        with step("capabilities"):
            linux.capset(caps, caps, 0)


def _wanted_caps(names: Iterable[str], privileged: bool) -> int:
    want = cap_mask(names)
    held = sum(1 << n for n in range(linux.last_cap() + 1) if linux.prctl(linux.PR_CAPBSET_READ, n))
    if privileged:
        return want & held
    if want & ~held:
        missing = ", ".join(cap_names(want & ~held))
        raise StartError(f"capabilities not available on this host: {missing}")
    return want


_RESERVED_SIGNALS: Final = (32, 33)
_RT_SIGACTION: Final = {"x86_64": 13, "aarch64": 134}.get(platform.machine(), 13)
_libc = ctypes.CDLL(None, use_errno=True)


def _reset_signals() -> None:
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    # glibc reserves 32 and 33 and refuses to touch them, but a parent may have left them
    # ignored: the raw syscall sets them back to the default (an all-zero kernel sigaction).
    default = ctypes.create_string_buffer(32)
    for reserved in _RESERVED_SIGNALS:
        _libc.syscall(_RT_SIGACTION, reserved, default, None, 8)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def exec_process(process: Process, *, privileged: bool) -> NoReturn:
    """Become *process* inside the current root and execve it; raise on any failure."""
    linux.prctl(linux.PR_SET_DUMPABLE, 0)
    if not process.args:
        raise InvalidArgument("no command specified")
    user = resolve_user(process.user, "/")
    caps = _wanted_caps(process.caps, privileged)
    env = build_env(process.env, user.home)
    set_rlimits(process.rlimits)
    mark_fds_cloexec()
    _enter_cwd(process.cwd, user)
    apply_user_and_caps(user, caps)
    if process.no_new_privileges:
        with step("set no_new_privs"):
            linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    verify_cwd()
    path = lookpath(process.args[0], env["PATH"])
    _reset_signals()
    os.umask(0o022)
    with step(f"exec {process.args[0]}"):
        os.execve(path, list(process.args), env)
    raise AssertionError("unreachable")  # pragma: no cover
