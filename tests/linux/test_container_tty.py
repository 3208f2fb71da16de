"""Containers with a terminal (``run -t``) on a real daemon, compared with what Docker/runc give.

The console is a pty of the container's own devpts instance: ``tty`` prints ``/dev/pts/0``,
/dev/console is bound from that same slave, the console size of the create request applies
before the process starts, a resize reaches the running process, and stdin typed on the client's
terminal reaches it. ``--init`` keeps the terminal and forwards signals; ``exec -t`` gets the next
pts of the same devpts; a container without ``-t`` has neither a terminal nor /dev/console.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import orjson
import pytest

from tests.daemon.conftest import request
from tests.linux.containerkit import DOCKYARD_CMD, Containers, containers, needs_root

pytestmark = needs_root
__all__ = ["containers"]

PTS_MAJOR = "88"  # 136, as stat prints it (hex)


def lines(text: str) -> list[str]:
    """Output of a terminal split into lines (the pty turns every newline into CR LF)."""
    return text.replace("\r", "").split("\n")


def pty_run(
    containers: Containers, *argv: str, rows: int = 40, cols: int = 100, typed: bytes = b""
) -> tuple[int, bytes]:
    """Run ``dockyard ARGV`` on a pty of *rows* x *cols* as its terminal, typing *typed* once
    it has printed something; return its exit code and everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = subprocess.Popen(
        [*DOCKYARD_CMD, "-H", containers.daemon.hosts[0], *argv],
        stdin=slave, stdout=slave, stderr=slave, env=containers.daemon.env,
        start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every holder of the slave side closed it
                    break
                if not chunk:
                    break
                out += chunk
                if typed and b"ready" in out:
                    os.write(master, typed)
                    typed = b""
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), out
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def api(containers: Containers, method: str, path: str, body: object = None) -> bytes:
    """One Engine API call that must succeed; its response body."""
    data = None if body is None else orjson.dumps(body)
    headers = {"Content-Type": "application/json"} if data is not None else {}
    status, _, out = request(containers.daemon, method, path, data, headers)
    assert 200 <= status < 300, (method, path, status, out, containers.tail())
    return out


def wait_logs(containers: Containers, name: str, pattern: str, timeout: float = 15) -> str:
    """Poll ``logs`` until the regex *pattern* matches; return the logs."""
    deadline = time.monotonic() + timeout
    while True:
        out = containers.ok("logs", name)
        if re.search(pattern, out, re.M):
            return out
        assert time.monotonic() < deadline, f"{pattern!r} not in logs of {name}: {out!r}"
        time.sleep(0.1)


def test_run_t_is_pts0_of_the_containers_devpts_and_the_console(containers: Containers) -> None:
    script = "tty; stat -L -c %t:%T /dev/console /dev/pts/0 /proc/self/fd/1; ls -1 /dev/pts"
    out = lines(containers.ok("run", "--rm", "-t", "busybox", "sh", "-c", script))
    pts0 = f"{PTS_MAJOR}:0"
    assert out[:6] == ["/dev/pts/0", pts0, pts0, pts0, "0", "ptmx"], out


def test_run_without_t_has_no_terminal_and_no_console(containers: Containers) -> None:
    proc = containers.cli("run", "--rm", "busybox", "sh", "-c", "tty; ls /dev/pts; ls /dev/console")
    assert proc.stdout.split("\n")[:2] == ["not a tty", "ptmx"], proc
    assert "/dev/console" in proc.stderr and proc.returncode != 0, proc


def test_run_t_under_a_terminal_gets_its_size(containers: Containers) -> None:
    code, out = pty_run(containers, "run", "--rm", "-t", "busybox", "sh", "-c", "tty; stty size")
    assert code == 0, out
    assert lines(out.decode(errors="replace"))[:2] == ["/dev/pts/0", "40 100"], out


def test_run_it_stdin_typed_on_the_terminal_reaches_the_process(containers: Containers) -> None:
    script = "echo ready; read line; echo got:$line"
    code, out = pty_run(
        containers, "run", "--rm", "-i", "-t", "busybox", "sh", "-c", script, typed=b"hello\r"
    )
    assert code == 0, out
    assert b"got:hello" in out, out


def test_console_size_applies_before_start_and_resize_reaches_the_process(
    containers: Containers,
) -> None:
    name = "tty-resize"
    body = {
        "Image": "busybox",
        "Tty": True,
        "Cmd": ["sh", "-c", "stty size; while :; do sleep 0.1; stty size; done"],
        "HostConfig": {"ConsoleSize": [25, 70]},
    }
    try:
        api(containers, "POST", f"/containers/create?name={name}", body)
        api(containers, "POST", f"/containers/{name}/start")
        first = lines(wait_logs(containers, name, r"^\d+ \d+"))[0]
        assert first == "25 70"  # the very first line: sized before the process ran
        api(containers, "POST", f"/containers/{name}/resize?h=31&w=93")
        wait_logs(containers, name, r"^31 93\r?$")
    finally:
        containers.cli("rm", "-f", name)


def test_run_t_with_init_keeps_the_terminal_and_forwards_signals(containers: Containers) -> None:
    proc = containers.cli("run", "--rm", "-t", "--init", "busybox", "sh", "-c", "tty; exit 3")
    assert (proc.returncode, lines(proc.stdout)[0]) == (3, "/dev/pts/0"), proc
    name = "tty-init"
    try:
        containers.ok("run", "-d", "-t", "--init", "--name", name, "busybox", "sleep", "60")
        containers.wait_for(name, ".State.Status", "running")
        started = time.monotonic()
        containers.ok("stop", "-t", "20", name)
        assert time.monotonic() - started < 10  # SIGTERM reached sleep through the reaper
        assert containers.inspect(name, ".State.ExitCode") == "143"
    finally:
        containers.cli("rm", "-f", name)


def test_exec_t_gets_the_next_pts_of_the_same_devpts(containers: Containers) -> None:
    name = "tty-exec"
    try:
        containers.ok("run", "-d", "-t", "--name", name, "busybox", "sleep", "60")
        out = lines(containers.ok("exec", "-t", name, "sh", "-c", "tty; ls -1 /dev/pts"))
        assert out[:4] == ["/dev/pts/1", "0", "1", "ptmx"], out
        plain = containers.cli("exec", name, "tty")
        assert (plain.returncode, plain.stdout) == (1, "not a tty\n"), plain
    finally:
        containers.cli("rm", "-f", name)


@pytest.mark.slow
def test_run_t_with_other_options_and_after_a_restart(containers: Containers) -> None:
    for extra in (["--read-only"], ["-u", "1000"], ["--privileged"], ["--network", "host"]):
        proc = containers.cli("run", "--rm", "-t", *extra, "busybox", "tty")
        assert (proc.returncode, lines(proc.stdout)[0]) == (0, "/dev/pts/0"), (extra, proc)
    name = "tty-restart"
    try:
        containers.ok("run", "-t", "--name", name, "busybox", "tty")
        containers.wait_for(name, ".State.Status", "exited")
        containers.ok("start", name)
        containers.wait_for(name, ".State.Status", "exited")
        # Every start mounts a new devpts instance: the console is pts 0 again.
        assert lines(containers.ok("logs", name))[:2] == ["/dev/pts/0", "/dev/pts/0"]
    finally:
        containers.cli("rm", "-f", name)
