"""The container's first process, from fork to exec, and the ``--init`` reaper.

``child`` runs in the process the monitor forked (PID 1 of the container's new pid namespace):
it takes the container's stdio, makes (or joins) the other namespaces, tells the monitor it is
ready (``r`` on the ready pipe), waits for ``g``, sets up the root file system
(``rootfs.setup``) and execs the process (``security.exec_process``). Any failure is written to
the error pipe, which is close-on-exec: the monitor reads EOF when the exec succeeded.

With a tty the stdio the monitor gives is /dev/null until ``rootfs.setup`` has opened the
*console* in the container's own devpts: ``take_console`` sizes it, sends its master to the
monitor on the console socket (``SCM_RIGHTS``) and makes the slave the stdio and controlling
terminal, so ``tty`` inside prints ``/dev/pts/0``, as under runc.

With ``--init`` the first process stays behind as a reaper: it forks the real process, forwards
every signal it gets to it, reaps every orphan, and exits with the real process's status.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
from typing import Final, NoReturn

from drivers.exec.native import linux, protocol
from drivers.exec.spec import ContainerSpec

SIOCGIFFLAGS: Final = 0x8913
SIOCSIFFLAGS: Final = 0x8914
IFF_UP: Final = 0x1

_FORWARDED = tuple(
    s for s in signal.Signals if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)
)


def child(
    spec: ContainerSpec,
    stdio: tuple[int, int, int],
    ready_w: int,
    go_r: int,
    err_w: int,
    console_w: int = -1,
) -> NoReturn:
    """Become the container's first process; see the module docstring. *console_w* is the
    socket the console's master goes to (a tty only)."""
    try:
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        linux.adopt_stdio(stdio)  # a tty's console replaces it once the container's devpts exists
        for kind, path in spec.join.items():
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                linux.setns(fd, linux.NS_FLAGS[kind])
            finally:
                os.close(fd)
        flags = 0
        for kind in spec.namespaces:
            if kind != "pid" and kind not in spec.join:
                flags |= linux.NS_FLAGS[kind]
        linux.unshare(flags)
        if flags & linux.CLONE_NEWNET:
            _loopback_up()
        os.write(ready_w, b"r")
        os.close(ready_w)
        if os.read(go_r, 1) != b"g":
            os._exit(1)
        os.close(go_r)
        from drivers.exec.native import rootfs, security

        console = rootfs.setup(spec)
        if console is not None:
            take_console(spec, console, console_w)
        linux.prctl(linux.PR_SET_PDEATHSIG, 0)
        if spec.init:
            _reaper(spec, err_w)
        security.exec_process(spec.process, privileged=spec.privileged)
    except BaseException as exc:
        protocol.report_failure(err_w, exc)
        os._exit(127)


def take_console(spec: ContainerSpec, console: tuple[int, int], console_w: int) -> None:
    """Size the *console* (master, slave), send its master on the socket *console_w* (closed
    after) and make the slave this session leader's stdio and controlling terminal."""
    master, slave = console
    rows, cols = spec.process.console_size
    if rows and cols:
        linux.set_winsize(master, rows, cols)
    if console_w < 0:
        raise RuntimeError("a tty was asked for but there is no console socket")
    with socket.socket(fileno=console_w) as sock:
        protocol.send(sock, {"console": True}, [master])
    os.close(master)
    linux.adopt_stdio((slave, slave, slave), tty=True)
    os.close(slave)


def _loopback_up() -> None:
    """Bring ``lo`` up in a new network namespace (it starts down), as Docker does."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _reaper(spec: ContainerSpec, err_w: int) -> NoReturn:
    """Fork the process, then reap and forward signals until it ends; exit with its status."""
    from drivers.exec.native import security

    for signum in _FORWARDED:
        with contextlib.suppress(OSError, ValueError):
            signal.signal(signum, signal.SIG_DFL)
    blocked = set(_FORWARDED) | {signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    pid = os.fork()
    if pid == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        try:
            security.exec_process(spec.process, privileged=spec.privileged)
        except BaseException as exc:
            protocol.report_failure(err_w, exc)
            os._exit(127)
    os.close(err_w)
    linux.close_range(3)
    while True:
        info = signal.sigwaitinfo(blocked)
        if info.si_signo != signal.SIGCHLD:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, info.si_signo)
            continue
        while True:
            try:
                reaped, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                os._exit(0)
            if reaped == 0:
                break
            if reaped == pid:
                code = os.waitstatus_to_exitcode(status)
                os._exit(128 - code if code < 0 else code)
