"""A container's monitor: the process that starts the container and stays with it until it ends.

The forking helper forks a monitor in its own session, so the monitor belongs to no daemon
process and survives a daemon (and helper) that is killed. The monitor:

1. becomes a session leader and a child subreaper, opens the container's stdio (pipes; for
   ``-t`` /dev/null and a console socket), creates its cgroup, and ``unshare(CLONE_NEWPID)`` so
   its one child is PID 1;
2. forks the container's first process, which makes the other namespaces, reports, waits for
   ``go``, sets up the root file system and security and execs (``rootfs``, ``security``); with
   ``-t`` it opens the console in the container's own devpts and sends its master back on the
   console socket before it execs (``init.take_console``);
3. reports ``{"pid"}`` and ``{"started"}`` to the daemon, then serves ``monitor.sock``: attach
   (output fan-out, stdin in), kill, resize, watch;
4. writes every line of output to the json-file log, reaps whatever is reparented to it, and when
   the first process ends records the exit (code, 128+signal, OOM, time) in ``exit.json``,
   tells every watcher, removes the cgroup and exits.

Everything runs in one thread with ``selectors``: the monitor is forked from a single-threaded
helper and stays single-threaded.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

import orjson

from drivers.exec.native import linux, protocol
from drivers.exec.spec import ContainerSpec, Exit

HIERARCHY: Any = None  # the cgroup hierarchy, detected once by the helper before it forks
DRAIN_AFTER_EXIT = 2.0  # seconds to keep reading output held open by leftover processes
READ_SIZE = 16 << 10


@dataclass
class Client:
    """A connection to the monitor: the daemon's watcher, or an attached stream."""

    sock: socket.socket
    stdout: bool = False
    stderr: bool = False
    stdin: bool = False
    stdin_once: bool = False
    watch: bool = False
    buffer: bytearray = field(default_factory=bytearray)


def write_atomic(path: str, data: bytes) -> None:
    """Write *path* via a temp file, fsync and rename."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def run(
    conn: socket.socket, spec: ContainerSpec, attached: list[tuple[dict[str, Any], int]]
) -> NoReturn:
    """Be the monitor of *spec*; *conn* is the daemon's start request, *attached* pre-attached
    streams (options, fd). Never returns."""
    code = 1
    try:
        Monitor(conn, spec, attached).main()
        code = 0
    except BaseException as exc:
        with contextlib.suppress(OSError):
            protocol.send(
                conn, {"error": str(exc) or type(exc).__name__, "code": getattr(exc, "code", 128)}
            )
    finally:
        os._exit(code)


class Monitor:
    """The state of one monitor; see the module docstring."""

    def __init__(
        self, conn: socket.socket, spec: ContainerSpec, attached: list[tuple[dict[str, Any], int]]
    ) -> None:
        self.conn, self.spec = conn, spec
        self.sel = selectors.DefaultSelector()
        self.clients: list[Client] = []
        for options, fd in attached:
            self.clients.append(_client(socket.socket(fileno=fd), options))
        self.pid = 0
        self.exit: Exit | None = None
        self.log: Any = None
        self.cgroup: Any = None
        self.master = -1
        self.stdin_w = -1
        self.outputs: dict[int, int] = {}  # fd → stream kind

    # -- start ---------------------------------------------------------------------------------

    def main(self) -> None:
        gc.disable()  # a collection would touch, and so copy, the heap shared with the helper
        os.setsid()
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_IGN)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        os.makedirs(self.spec.run_dir, mode=0o700, exist_ok=True)
        child_stdio = self._open_stdio()
        self.cgroup = _new_cgroup(self.spec)
        listener = self._listen()
        self._start(child_stdio)
        self.log = _open_log(self.spec)
        self.sel.register(wake_r, selectors.EVENT_READ, "signal")
        self.sel.register(listener, selectors.EVENT_READ, "accept")
        watcher = Client(self.conn, watch=True)
        self.clients.append(watcher)
        for client in self.clients:
            self.sel.register(client.sock, selectors.EVENT_READ, client)
        for fd in self.outputs:
            self.sel.register(fd, selectors.EVENT_READ, "output")
        self._reap()  # the process may have ended before SIGCHLD had a handler to wake us
        self._loop(wake_r)
        self._finish(listener)

    def _open_stdio(self) -> tuple[int, int, int]:
        process = self.spec.process
        if process.tty:  # until the first process has its console (``_take_console``)
            null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            return null, null, null
        if process.stdin:
            stdin_r, self.stdin_w = os.pipe2(os.O_CLOEXEC)
        else:
            stdin_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
        self.outputs = {out_r: protocol.STDOUT, err_r: protocol.STDERR}
        return stdin_r, out_w, err_w

    def _listen(self) -> socket.socket:
        path = os.path.join(self.spec.run_dir, "monitor.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            with protocol.short_path(path) as short:
                listener.bind(short)
        finally:
            os.umask(old)
        listener.listen(16)
        listener.setblocking(False)
        return listener

    def _start(self, stdio: tuple[int, int, int]) -> None:
        from drivers.exec.native import init

        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        console_r, console_w = socket.socketpair() if self.spec.process.tty else (None, None)
        if "pid" in self.spec.namespaces:
            linux.unshare(linux.CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:
            for fd in (ready_r, go_w, err_r):
                os.close(fd)
            console_fd = -1
            if console_r is not None and console_w is not None:
                console_r.close()
                console_fd = console_w.detach()
            init.child(self.spec, stdio, ready_w, go_r, err_w, console_fd)  # never returns
        self.pid = pid
        for fd in {ready_w, go_r, err_w, *stdio}:
            os.close(fd)
        if console_w is not None:
            console_w.close()
        try:
            if self.cgroup is not None:
                self.cgroup.add(pid)
            if os.read(ready_r, 1) != b"r":
                raise protocol.read_failure(err_r) or RuntimeError(
                    "the container process died while starting"
                )
            protocol.send(self.conn, {"pid": pid})
            if self.spec.wait_for_network:
                message = protocol.recv_control(self.conn)
                if not message.get("go"):
                    raise RuntimeError(str(message.get("error", "start cancelled by the daemon")))
            os.write(go_w, b"g")
            os.close(go_w)
            if console_r is not None:
                self._take_console(console_r)
            failure = protocol.read_failure(err_r)  # none: exec succeeded (close-on-exec)
            if failure is not None:
                raise failure
            if console_r is not None and self.master < 0:
                raise RuntimeError("the container process started without its console")
        except BaseException:
            _kill_and_reap(pid)
            if self.cgroup is not None:
                self.cgroup.remove()
            raise
        finally:
            os.close(ready_r)
            os.close(err_r)
            if console_r is not None:
                console_r.close()
        started = time.time()
        state = {
            "pid": pid,
            "monitor_pid": os.getpid(),
            "started": started,
            "start_ticks": _start_ticks(pid),
            "cgroup": self.cgroup.paths() if self.cgroup is not None else {},
        }
        write_atomic(os.path.join(self.spec.run_dir, "state.json"), orjson.dumps(state))
        protocol.send(self.conn, {"started": state})

    def _take_console(self, sock: socket.socket) -> None:
        """Receive the console's master from the first process; it is then used as a pty
        master opened here would be. Nothing comes when the process failed before it had one
        (the error pipe says why)."""
        try:
            _message, fds = protocol.recv_request(sock)
        except (OSError, protocol.ProtocolError, ValueError):
            return
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise RuntimeError(f"the console socket carried {len(fds)} fds, not 1")
        master = fds[0]
        os.set_inheritable(master, False)
        os.set_blocking(master, False)
        self.master, self.outputs = master, {master: protocol.STDOUT}
        self.stdin_w = master if self.spec.process.stdin else -1

    # -- running -------------------------------------------------------------------------------

    def _loop(self, wake_r: int) -> None:
        deadline = 0.0
        while self.outputs:
            timeout = None
            if self.exit is not None:
                if not deadline:
                    deadline = time.monotonic() + DRAIN_AFTER_EXIT
                timeout = max(0.0, deadline - time.monotonic())
                if timeout == 0:
                    break
            for key, _ in self.sel.select(timeout):
                data = key.data
                if data == "signal":
                    _drain(wake_r)
                    self._reap()
                elif data == "accept":
                    self._accept(key.fileobj)  # type: ignore[arg-type]
                elif data == "output":
                    self._output(key.fd)
                else:
                    self._client_input(data)
        while self.exit is None:  # output closed early: wait for the process itself
            self.sel.select(1.0)
            _drain(wake_r)
            self._reap()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.pid:
                code = os.waitstatus_to_exitcode(status)
                self.exit = Exit(code=128 - code if code < 0 else code, finished=time.time())

    def _output(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the pty's last slave closed
            if exc.errno != errno.EIO:
                raise
            data = b""
        kind = self.outputs[fd]
        if not data:
            self.sel.unregister(fd)
            del self.outputs[fd]
            if fd != self.master:
                os.close(fd)
            return
        if self.log is not None:
            self.log.write("stdout" if kind == protocol.STDOUT else "stderr", data)
        packet = protocol.frame(kind, data)
        for client in list(self.clients):
            if (client.stdout and kind == protocol.STDOUT) or (
                client.stderr and kind == protocol.STDERR
            ):
                self._send(client, packet)

    def _send(self, client: Client, packet: bytes) -> None:
        try:
            client.sock.setblocking(True)
            client.sock.settimeout(5.0)  # a stalled client must not stall the container for long
            client.sock.sendall(packet)
        except OSError:
            self._drop(client)

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(True)
        sock.settimeout(5.0)
        try:
            request, _fds = protocol.recv_request(sock)
        except (OSError, protocol.ProtocolError, ValueError):
            sock.close()
            return
        op = request.get("op")
        if op == "kill":
            try:
                os.kill(self.pid, int(request.get("signal", signal.SIGKILL)))
                protocol.send(sock, {"ok": True})
            except (OSError, ValueError) as exc:
                protocol.send(sock, {"error": str(exc)})
            sock.close()
        elif op == "resize":
            if self.master >= 0:
                linux.set_winsize(self.master, int(request["rows"]), int(request["cols"]))
            protocol.send(sock, {"ok": True})
            sock.close()
        elif op == "state":
            protocol.send(sock, {"pid": self.pid, "monitor_pid": os.getpid()})
            sock.close()
        elif op in ("attach", "watch"):
            client = _client(sock, request) if op == "attach" else Client(sock, watch=True)
            protocol.send(sock, {"ok": True})
            self.clients.append(client)
            self.sel.register(sock, selectors.EVENT_READ, client)
        else:
            protocol.send(sock, {"error": f"unknown op {op!r}"})
            sock.close()

    def _client_input(self, client: Client) -> None:
        try:
            chunk = client.sock.recv(READ_SIZE)
        except OSError:
            chunk = b""
        if not chunk:
            if client.stdin and client.stdin_once:
                self._close_stdin()
            self._drop(client)
            return
        client.buffer += chunk
        while len(client.buffer) >= protocol.HEADER.size:
            kind, length = protocol.HEADER.unpack_from(client.buffer)
            if len(client.buffer) < protocol.HEADER.size + length:
                break
            payload = bytes(client.buffer[protocol.HEADER.size : protocol.HEADER.size + length])
            del client.buffer[: protocol.HEADER.size + length]
            if kind == protocol.STDIN and client.stdin and self.stdin_w >= 0:
                self._write_stdin(payload)
            elif kind == protocol.STDIN_EOF and client.stdin:
                self._close_stdin()

    def _write_stdin(self, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.stdin_w, view) :]
        except OSError:
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self.stdin_w >= 0:
            if self.stdin_w == self.master:
                with contextlib.suppress(OSError):
                    os.write(self.master, b"\x04")  # end of input on a terminal
            else:
                os.close(self.stdin_w)
            self.stdin_w = -1

    def _drop(self, client: Client) -> None:
        if client in self.clients:
            self.clients.remove(client)
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(client.sock)
            client.sock.close()

    # -- exit ----------------------------------------------------------------------------------

    def _finish(self, listener: socket.socket) -> None:
        assert self.exit is not None
        if self.log is not None:
            self.log.close()
        oom = False
        if self.cgroup is not None:
            try:
                oom = bool(self.cgroup.oom_killed())
            except OSError:
                oom = False
        exit_ = Exit(code=self.exit.code, oom_killed=oom, finished=self.exit.finished)
        record = {"code": exit_.code, "oom_killed": exit_.oom_killed, "finished": exit_.finished}
        write_atomic(os.path.join(self.spec.bundle, "exit.json"), orjson.dumps(record))
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.spec.run_dir, "monitor.sock"))
        message = protocol.control({"exit": record})
        for client in list(self.clients):
            self._send(client, message)
            client.sock.close()
        if self.cgroup is not None:
            _kill_cgroup(self.cgroup)
            self.cgroup.remove()


def _client(sock: socket.socket, options: dict[str, Any]) -> Client:
    return Client(
        sock,
        stdout=bool(options.get("stdout")),
        stderr=bool(options.get("stderr")),
        stdin=bool(options.get("stdin")),
        stdin_once=bool(options.get("stdin_once")),
    )


def _new_cgroup(spec: ContainerSpec) -> Any:
    from drivers.exec.native import cgroups

    cgroup = cgroups.Cgroup.for_container(spec.id, spec.cgroup_parent, HIERARCHY)
    cgroup.create(spec.resources, spec.device_rules)
    return cgroup


def _open_log(spec: ContainerSpec) -> Any:
    if spec.log is None:
        return None
    from drivers.logging.jsonfile import JsonFileWriter

    return JsonFileWriter(spec.log.path, spec.log.max_size, spec.log.max_file)


def _kill_cgroup(cgroup: Any) -> None:
    """Kill what is left in the cgroup (processes of a container that shares the host's pid
    namespace outlive its first process)."""
    for _ in range(50):
        pids = [p for p in cgroup.pids() if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass


def _kill_and_reap(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _start_ticks(pid: int) -> int:
    """The process's start time in clock ticks since boot (guards against pid reuse)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2 :].split()[19])
