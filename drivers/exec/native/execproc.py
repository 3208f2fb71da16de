"""A process started in a running container (``docker exec``), forked by the helper.

The forked process opens the container's namespace files and root through ``/proc/<pid>``
(the container's PID 1 as the host sees it), joins its cgroup, then ``setns`` into ipc, uts, net,
pid and mnt, and ``chroot``s to the container's root. Joining a pid namespace only affects
children, so it forks once more; that child is the exec'd process (``security.exec_process``).
The parent waits for it and reports ``{"pid"}`` and then ``{"exit"}`` on the daemon's
connection. An error before exec is reported as ``{"error"}`` through a close-on-exec pipe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from typing import NoReturn

from drivers.exec.native import linux, protocol
from drivers.exec.spec import ExecSpec

ORDER = ("ipc", "uts", "net", "pid", "mnt")  # mnt last: the others are opened through /proc


def run(conn: socket.socket, spec: ExecSpec, stdio: list[int]) -> NoReturn:
    """Start *spec* in its container with *stdio* as fds 0-2; report on *conn*; never return."""
    try:
        pid = _start(spec, stdio)
    except BaseException as exc:
        _report(conn, {"error": str(exc) or type(exc).__name__, "code": getattr(exc, "code", 128)})
        os._exit(1)
    _report(conn, {"pid": pid})
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    _report(conn, {"exit": {"code": 128 - code if code < 0 else code}})
    os._exit(0)


def _report(conn: socket.socket, message: dict[str, object]) -> None:
    with contextlib.suppress(OSError):
        protocol.send(conn, message)


def _start(spec: ExecSpec, stdio: list[int]) -> int:
    linux.prctl(linux.PR_SET_DUMPABLE, 0)
    base = f"/proc/{spec.pid}"
    namespaces = {}
    for kind in ORDER:
        fd = os.open(f"{base}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
        own = os.stat(f"/proc/self/ns/{kind}")
        theirs = os.fstat(fd)
        if (own.st_dev, own.st_ino) == (theirs.st_dev, theirs.st_ino):
            os.close(fd)  # a namespace the container shares with the host
            continue
        namespaces[kind] = fd
    root = os.open(f"{base}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for directory in spec.cgroup.values():
        with open(os.path.join(directory, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    for kind in ORDER:
        if kind in namespaces:
            linux.setns(namespaces[kind], linux.NS_FLAGS[kind])
            os.close(namespaces[kind])
    os.fchdir(root)
    os.chroot(".")
    os.close(root)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        _child(spec, stdio, err_w)
    os.close(err_w)
    for fd in stdio:
        os.close(fd)
    failure = protocol.read_failure(err_r)
    os.close(err_r)
    if failure is not None:
        os.waitpid(pid, 0)
        raise failure
    return pid


def _child(spec: ExecSpec, stdio: list[int], err_w: int) -> NoReturn:
    try:
        from drivers.exec.native import security

        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.setsid()
        linux.adopt_stdio(stdio, tty=spec.process.tty)
        os.chdir("/")
        security.exec_process(spec.process, privileged=spec.privileged)
    except BaseException as exc:
        protocol.report_failure(err_w, exc)
        os._exit(127)
