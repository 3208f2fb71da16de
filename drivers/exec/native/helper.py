"""The forking helper: a single-threaded process that forks monitors and exec'd processes.

The daemon is threaded and must never ``fork()`` (a fork copies locks held by other threads,
and an SQLite connection must not cross a fork), and starting a Python interpreter per container
costs ~0.1 s. So the daemon starts this helper once (``python -m drivers.exec.native.helper
SOCKET``) in its own session: it imports everything a container start needs, freezes its heap
(``gc.freeze``) so that forks share it, and serves requests on a unix socket (mode 0600):

- ``start``: fork; the child becomes the container's monitor (``monitor.run``) and answers
  the daemon on the same connection. The helper does not wait for it.
- ``exec``: fork a process that joins the container's namespaces and cgroup, forks the exec'd
  process inside them, and reports its pid and exit code on the connection (``execproc``).
- ``quit``: exit (the daemon replaces its helper at every start).

The helper ends with its daemon; the monitors outlive both.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import sys
from typing import Any

from drivers.exec.native import cgroups, execproc, linux, monitor, protocol
from drivers.exec.spec import ContainerSpec, ExecSpec, from_json


def serve(path: str) -> None:
    """Serve requests on the unix socket *path* until ``quit``."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    old = os.umask(0o177)
    try:
        with protocol.short_path(path) as short:
            listener.bind(short)
    finally:
        os.umask(old)
    listener.listen(64)
    monitor.HIERARCHY = cgroups.Hierarchy.detect()  # read once here, shared by every monitor
    gc.collect()
    gc.freeze()  # keep the imported heap shared with every forked monitor
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        try:
            conn.settimeout(10)
            request, fds = protocol.recv_request(conn)
            conn.settimeout(None)
        except (OSError, protocol.ProtocolError, ValueError):
            conn.close()
            continue
        op = request.get("op")
        if op == "quit":
            protocol.send(conn, {"ok": True})
            return
        try:
            _fork(op, request, fds, conn, listener)
        except Exception as exc:
            with contextlib.suppress(OSError):
                protocol.send(conn, {"error": f"{op}: {exc}"})
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()


def _fork(
    op: Any, request: dict[str, Any], fds: list[int], conn: socket.socket, listener: socket.socket
) -> None:
    if op == "start":
        spec = from_json(ContainerSpec, request["spec"])
        attach = request.get("attach") or []
        if len(attach) != len(fds):
            raise ValueError("one fd per attached stream expected")
        # One fork, not two: an intermediate process would dirty pages that the monitor would
        # then own alone. The kernel reaps the monitor (SIGCHLD is ignored here), and when the
        # helper ends the monitor is adopted by init.
        pid = os.fork()
        if pid == 0:
            _child_reset(listener)
            monitor.run(conn, spec, list(zip(attach, fds, strict=True)))
    elif op == "exec":
        spec = from_json(ExecSpec, request["spec"])
        if len(fds) != 3:
            raise ValueError("exec needs three stdio fds")
        pid = os.fork()
        if pid == 0:
            _child_reset(listener)
            execproc.run(conn, spec, fds)
    else:
        raise ValueError(f"unknown op {op!r}")


def _child_reset(listener: socket.socket) -> None:
    listener.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # The frozen heap stays frozen: a collection over it would copy every page it touches.


def main() -> None:
    """Entry point: ``python -m drivers.exec.native.helper SOCKET``."""
    if len(sys.argv) != 2:
        sys.exit("usage: python -m drivers.exec.native.helper SOCKET")
    # Everything a monitor or a container process needs, imported before any fork.
    from drivers.exec.native import init, rootfs, security  # noqa: F401
    from drivers.logging import jsonfile  # noqa: F401

    os.chdir("/")
    # The helper holds no state of its own: it ends with the daemon that started it (the next
    # daemon starts its own), while the monitors it forked live on.
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:
        sys.exit("the daemon that started the helper is gone")
    serve(sys.argv[1])


if __name__ == "__main__":
    main()
