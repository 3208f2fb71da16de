"""Lifecycle of real containers through the dockyard CLI, held to Docker's behaviour.

Vocabulary: a *sleeper* is a detached ``busybox sleep 100`` that tests exec into, copy to and
inspect; ``names`` hands out unique container names and removes those containers after the
test, passed or failed. Commands that need a terminal run under a pseudo-terminal made with
``pty.openpty()`` (``in_pty``). Tests that take more than ~3 s are marked ``slow``.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import secrets
import select
import struct
import subprocess
import tarfile
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import request
from tests.linux.containerkit import DOCKYARD_CMD, Containers, containers, needs_root

pytestmark = needs_root
__all__ = ["containers"]

Names = Callable[[], str]


@pytest.fixture
def names(containers: Containers) -> Iterator[Names]:
    """Unique container names; every container so named is removed at teardown."""
    made: list[str] = []

    def make() -> str:
        made.append(f"lc-{secrets.token_hex(4)}")
        return made[-1]

    yield make
    if made:
        containers.cli("rm", "-f", *made, timeout=60)


@pytest.fixture(scope="module")
def sleeper(containers: Containers) -> Iterator[str]:
    """A running ``busybox sleep 100`` shared by the exec, cp, top and stats tests."""
    name = f"lc-sleeper-{secrets.token_hex(4)}"
    try:
        containers.ok("run", "-d", "--name", name, "busybox", "sleep", "100")
        yield name
    finally:
        containers.cli("rm", "-f", name, timeout=60)


def until(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    """Poll *check* every 50 ms until it holds; fail naming *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def gone(containers: Containers, name: str) -> bool:
    """Whether the daemon answers 404 for *name*."""
    status, _, _ = request(containers.daemon, "GET", f"/containers/{name}/json")
    return status == 404


def in_pty(containers: Containers, *argv: str, timeout: float = 20) -> tuple[int, str]:
    """Run ``dockyard ARGV`` with a 24x80 pseudo-terminal as its stdio; its status and output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        proc = subprocess.Popen(
            [*DOCKYARD_CMD, "-H", containers.daemon.hosts[0], *argv],
            stdin=slave, stdout=slave, stderr=slave, env=containers.daemon.env,
            start_new_session=True,
        )  # fmt: skip
    finally:
        os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the slave side is gone
                break
            if not chunk:
                break
            output += chunk
        else:
            raise AssertionError(f"{argv} still running after {timeout}s: {bytes(output)!r}")
        return proc.wait(timeout=10), output.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


# run flags and exit codes


def test_run_env_workdir_user_and_name(containers: Containers, names: Names) -> None:
    assert containers.ok(
        "run", "--rm", "-e", "FOO=bar baz", "busybox", "sh", "-c", "echo $FOO"
    ) == ("bar baz\n")
    assert containers.ok("run", "--rm", "-w", "/tmp/new/dir", "busybox", "pwd") == "/tmp/new/dir\n"
    out = containers.ok("run", "--rm", "-u", "1000:1000", "busybox", "id")
    assert out.startswith("uid=1000 gid=1000"), out
    name = names()
    containers.ok("run", "--name", name, "busybox", "true")
    assert containers.inspect(name, ".Name") == f"/{name}"


def test_run_bind_mount_writes_reach_the_host(containers: Containers, tmp_path: Path) -> None:
    containers.ok("run", "--rm", "-v", f"{tmp_path}:/data", "busybox", "sh", "-c",
                  "echo inside > /data/f")  # fmt: skip
    assert (tmp_path / "f").read_text() == "inside\n"


def test_run_tmpfs_and_read_only(containers: Containers) -> None:
    mounts = containers.ok("run", "--rm", "--tmpfs", "/scratch", "busybox", "sh", "-c",
                           "echo x > /scratch/f && grep ' /scratch ' /proc/mounts")  # fmt: skip
    assert mounts.split()[2] == "tmpfs", mounts
    proc = containers.cli("run", "--rm", "--read-only", "busybox", "touch", "/x")
    assert proc.returncode != 0
    assert "Read-only file system" in proc.stderr + proc.stdout
    out = containers.ok("run", "--rm", "--read-only", "--tmpfs", "/tmp", "busybox", "sh", "-c",
                        "touch /tmp/x && echo ok")  # fmt: skip
    assert out == "ok\n"


def test_exit_code_and_missing_executable(containers: Containers) -> None:
    assert containers.cli("run", "--rm", "busybox", "sh", "-c", "exit 3").returncode == 3
    proc = containers.cli("run", "--rm", "busybox", "no-such-command")
    assert proc.returncode == 127, proc.stderr
    assert "executable file not found" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_start_failures_record_dockers_exit_codes(containers: Containers, names: Names) -> None:
    missing, not_executable = names(), names()
    assert containers.cli("run", "--name", missing, "busybox", "no-such-command").returncode == 127
    assert containers.inspect(missing, ".State.ExitCode") == "127"
    proc = containers.cli("run", "--name", not_executable, "busybox", "/etc/passwd")
    assert proc.returncode == 126, proc.stderr
    assert containers.inspect(not_executable, ".State.ExitCode") == "126"


# signals


@pytest.mark.slow
def test_kill_gives_128_plus_signal(containers: Containers, names: Names) -> None:
    plain, init = names(), names()
    containers.ok("run", "-d", "--name", plain, "busybox", "sleep", "100")
    containers.ok("run", "-d", "--init", "--name", init, "busybox", "sleep", "100")
    containers.ok("kill", "-s", "KILL", plain)
    containers.ok("kill", "-s", "TERM", init)
    containers.wait_for(plain, ".State.Status", "exited")
    containers.wait_for(init, ".State.Status", "exited")
    assert containers.inspect(plain, ".State.ExitCode") == "137"
    assert containers.inspect(init, ".State.ExitCode") == "143"


def test_stop_kills_a_pid1_that_ignores_term(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "-d", "--name", name, "busybox", "sleep", "100")
    started = time.monotonic()
    containers.ok("stop", "-t", "1", name)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 5, elapsed
    assert containers.inspect(name, ".State.Status") == "exited"
    assert containers.inspect(name, ".State.ExitCode") == "137"


def test_stop_runs_the_term_trap(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "-d", "--name", name, "busybox", "sh", "-c",
                  'trap "exit 7" TERM; while true; do sleep 0.1; done')  # fmt: skip
    containers.wait_for(name, ".State.Running", "true")
    time.sleep(0.3)  # let sh install its trap
    containers.ok("stop", "-t", "5", name)
    assert containers.inspect(name, ".State.ExitCode") == "7"


# restart policies


def state(containers: Containers, name: str) -> tuple[str, int]:
    """State.Status and RestartCount of *name*."""
    return (
        containers.inspect(name, ".State.Status"),
        int(containers.inspect(name, ".RestartCount")),
    )


@pytest.mark.slow
def test_restart_on_failure_gives_up_after_the_maximum(
    containers: Containers, names: Names
) -> None:
    name = names()
    containers.ok("run", "-d", "--restart", "on-failure:2", "--name", name, "busybox", "sh", "-c",
                  "exit 1")  # fmt: skip
    until(lambda: state(containers, name) == ("exited", 2), "exited with RestartCount 2")
    time.sleep(0.6)
    assert state(containers, name) == ("exited", 2)
    assert containers.inspect(name, ".State.ExitCode") == "1"


@pytest.mark.slow
def test_restart_always_until_stopped(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "-d", "--restart", "always", "--name", name, "busybox", "sh", "-c",
                  "sleep 0.2")  # fmt: skip
    until(lambda: state(containers, name)[1] >= 2, "two restarts")
    containers.ok("stop", "-t", "1", name)
    status, count = state(containers, name)
    assert status == "exited"
    time.sleep(0.8)
    assert state(containers, name) == (status, count)


def test_restart_unless_stopped_stays_stopped(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "-d", "--init", "--restart", "unless-stopped", "--name", name, "busybox",
                  "sleep", "100")  # fmt: skip
    containers.wait_for(name, ".State.Running", "true")
    containers.ok("stop", name)
    time.sleep(0.8)
    assert state(containers, name) == ("exited", 0)


# pause, rename, wait, --rm


@pytest.mark.slow
def test_pause_freezes_the_container(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "-d", "--name", name, "busybox", "sh", "-c",
                  "i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done")  # fmt: skip
    until(lambda: len(containers.ok("logs", name).split()) >= 3, "the counter to start")
    containers.ok("pause", name)
    assert containers.inspect(name, ".State.Paused") == "true"
    assert containers.inspect(name, ".State.Status") == "paused"
    frozen = containers.ok("logs", name)
    time.sleep(0.5)
    assert containers.ok("logs", name) == frozen
    containers.ok("unpause", name)
    assert containers.inspect(name, ".State.Status") == "running"
    assert containers.inspect(name, ".State.Paused") == "false"
    until(lambda: len(containers.ok("logs", name).split()) > len(frozen.split()), "the counter")


def test_rename(containers: Containers, names: Names) -> None:
    old, new = names(), names()
    containers.ok("run", "-d", "--name", old, "busybox", "sleep", "100")
    assert old in containers.ok("ps")  # ps keeps each summary's fixed part from here on
    containers.ok("rename", old, new)
    assert gone(containers, old)
    assert containers.cli("inspect", old).returncode != 0
    assert containers.inspect(new, ".Name") == f"/{new}"
    listed = containers.ok("ps", "--filter", f"name={new}")
    assert new in listed and old not in listed
    assert containers.ok("exec", new, "echo", "hi") == "hi\n"


def test_wait_prints_the_exit_code(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "-d", "--name", name, "busybox", "sh", "-c", "exit 4")
    assert containers.ok("wait", name) == "4\n"


def test_wait_next_exit_blocks_until_the_exit(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "-d", "--init", "--name", name, "busybox", "sleep", "100")
    waiter = subprocess.Popen(
        [*DOCKYARD_CMD, "-H", containers.daemon.hosts[0], "wait", "--condition", "next-exit", name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=containers.daemon.env,
    )  # fmt: skip
    try:
        time.sleep(1)
        assert waiter.poll() is None, waiter.communicate()
        containers.ok("kill", "-s", "TERM", name)
        out, err = waiter.communicate(timeout=15)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 0, err
    assert out == "143\n"


def test_wait_removed_and_auto_remove(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "-d", "--rm", "--name", name, "busybox", "sh", "-c", "sleep 1; exit 3")
    assert containers.ok("wait", "--condition", "removed", name) == "3\n"
    assert gone(containers, name)
    other = names()
    containers.ok("run", "--rm", "--name", other, "busybox", "true")
    assert gone(containers, other)


# logs


def test_logs_follow_tail_and_timestamps(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "-d", "--name", name, "busybox", "sh", "-c",
                  "for i in 1 2 3; do echo $i; sleep 0.2; done")  # fmt: skip
    assert containers.ok("logs", "-f", name, timeout=15) == "1\n2\n3\n"
    assert containers.inspect(name, ".State.Running") == "false"
    assert containers.ok("logs", "--tail", "1", name) == "3\n"
    stamped = containers.ok("logs", "-t", name).splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["1", "2", "3"]
    for line in stamped:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d) \d", line), (
            line
        )


def test_logs_keep_stderr_apart(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "--name", name, "busybox", "sh", "-c", "echo out; echo err >&2")
    proc = containers.cli("logs", name)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "out\n", "err\n")


def test_logs_rotate(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "--name", name, "--log-opt", "max-size=1k", "--log-opt", "max-file=2",
                  "busybox", "sh", "-c",
                  "i=1; while [ $i -le 50 ]; do echo line-$i; i=$((i+1)); done")  # fmt: skip
    id = containers.inspect(name, ".Id")
    folder = containers.daemon.data_root / "containers" / id
    assert (folder / f"{id}-json.log").is_file()
    assert (folder / f"{id}-json.log.1").is_file()
    assert not (folder / f"{id}-json.log.2").exists()
    lines = containers.ok("logs", name).split()
    numbers = [int(line.removeprefix("line-")) for line in lines]
    assert numbers[-1] == 50 and numbers[0] > 1, numbers
    assert numbers == list(range(numbers[0], 51))


# stdin and terminals


def test_attach_stdin(containers: Containers, names: Names) -> None:
    assert containers.ok("run", "--rm", "-i", "busybox", "cat", input="hello\nworld\n") == (
        "hello\nworld\n"
    )
    name = names()
    containers.ok("create", "-i", "--name", name, "busybox", "cat")
    assert containers.ok("start", "-a", "-i", name, input="again\n") == "again\n"
    assert containers.inspect(name, ".State.Status") == "exited"


def test_run_with_a_tty(containers: Containers) -> None:
    code, out = in_pty(containers, "run", "--rm", "-t", "busybox", "tty")
    assert code == 0, out
    assert out.strip() in ("/dev/pts/0", "/dev/console"), out
    code, out = in_pty(containers, "run", "--rm", "-t", "busybox", "sh", "-c", "stty size")
    assert (code, out.strip()) == (0, "24 80")


# exec


def test_exec_output_and_exit_code(containers: Containers, sleeper: str) -> None:
    assert containers.ok("exec", sleeper, "echo", "hi") == "hi\n"
    assert containers.cli("exec", sleeper, "sh", "-c", "exit 5").returncode == 5


def test_exec_user_workdir_env(containers: Containers, sleeper: str) -> None:
    assert containers.ok("exec", "-u", "1000", sleeper, "id", "-u") == "1000\n"
    assert containers.ok("exec", "-w", "/tmp", sleeper, "pwd") == "/tmp\n"
    assert containers.ok("exec", "-e", "A=1", sleeper, "sh", "-c", "echo $A") == "1\n"


def test_exec_tty_and_stdin(containers: Containers, sleeper: str) -> None:
    code, out = in_pty(containers, "exec", "-t", sleeper, "tty")
    assert code == 0, out
    assert re.fullmatch(r"/dev/pts/\d+", out.strip()), out
    assert containers.ok("exec", "-i", sleeper, "cat", input="piped\n") == "piped\n"


def test_exec_into_a_stopped_container_fails(containers: Containers, names: Names) -> None:
    name = names()
    containers.ok("run", "--name", name, "busybox", "true")
    proc = containers.cli("exec", name, "echo", "hi")
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert "is not running" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_exec_never_loses_output(containers: Containers, sleeper: str) -> None:
    expected = "".join(f"{n}\n" for n in range(1, 301))
    for turn in range(20):
        proc = containers.cli("exec", sleeper, "sh", "-c", f"seq 1 300; echo {turn} >&2")
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, expected, f"{turn}\n"), turn


# files: cp, commit, diff, export


def test_cp_both_ways(containers: Containers, sleeper: str, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from host\n")
    containers.ok("cp", str(tmp_path / "in.txt"), f"{sleeper}:/tmp/")
    assert containers.ok("exec", sleeper, "cat", "/tmp/in.txt") == "from host\n"
    containers.ok("exec", sleeper, "sh", "-c", "echo from container > /tmp/out.txt")
    containers.ok("cp", f"{sleeper}:/tmp/out.txt", str(tmp_path))
    assert (tmp_path / "out.txt").read_text() == "from container\n"
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "b.txt").write_text("deep\n")
    containers.ok("cp", str(tree), f"{sleeper}:/tmp/tree")
    assert containers.ok("exec", sleeper, "cat", "/tmp/tree/a/b.txt") == "deep\n"
    containers.ok("cp", f"{sleeper}:/tmp/tree", str(tmp_path / "back"))
    assert (tmp_path / "back" / "a" / "b.txt").read_text() == "deep\n"


def test_commit_diff_export(containers: Containers, names: Names, tmp_path: Path) -> None:
    name, image = names(), f"lc-img-{secrets.token_hex(4)}"
    containers.ok("run", "--name", name, "busybox", "sh", "-c",
                  "echo hello > /hello && echo extra:x:5:5::/:/bin/sh >> /etc/passwd"
                  " && mkdir /tmp/made")  # fmt: skip
    changes = containers.ok("diff", name).splitlines()
    for entry in ("A /hello", "C /etc/passwd", "C /tmp", "A /tmp/made"):
        assert entry in changes, changes
    assert not [c for c in changes if c.startswith("D ")], changes
    try:
        containers.ok("commit", "-c", 'CMD ["cat","/hello"]', name, image)
        assert containers.ok("run", "--rm", image) == "hello\n"
    finally:
        containers.cli("rmi", "-f", image)
    tar = tmp_path / "export.tar"
    containers.ok("export", "-o", str(tar), name)
    with tarfile.open(tar) as archive:
        members = {m.name.removeprefix("./"): m for m in archive.getmembers()}
        assert "bin/busybox" in members and members["bin/busybox"].isfile()
        hello = archive.extractfile(members["hello"])
        assert hello is not None and hello.read() == b"hello\n"
        passwd = archive.extractfile(members["etc/passwd"])
        assert passwd is not None and b"extra:x:5:5" in passwd.read()


# ps, top, stats


def test_ps_filters(containers: Containers, names: Names) -> None:
    done, running = names(), names()
    containers.ok("run", "--name", done, "-l", "a=b", "--label", "c=d", "busybox", "true")
    containers.ok("run", "-d", "--name", running, "busybox", "sleep", "100")
    done_id, running_id = containers.inspect(done, ".Id"), containers.inspect(running, ".Id")

    def ps(*argv: str) -> list[str]:
        return containers.ok("ps", "-q", "--no-trunc", *argv).split()

    exited = ps("-a", "--filter", "status=exited")
    assert done_id in exited and running_id not in exited
    assert ps("--filter", f"name={running}") == [running_id]
    assert ps("-a", "--filter", "label=a=b") == [done_id]
    assert ps("-a", "--filter", "label=c") == [done_id]
    ancestors = ps("-a", "--filter", "ancestor=busybox")
    assert done_id in ancestors and running_id in ancestors
    assert ps("-a", "--last", "1") == [running_id]
    short = containers.ok("ps", "-q").split()
    assert running_id[:12] in short and done_id[:12] not in short
    assert all(re.fullmatch(r"[0-9a-f]{12}", line) for line in short), short


def test_top_and_stats(containers: Containers, sleeper: str) -> None:
    top = containers.ok("top", sleeper).splitlines()
    assert "PID" in top[0].split(), top
    assert any(line.split()[-2:] == ["sleep", "100"] for line in top[1:]), top
    stats = containers.ok("stats", "--no-stream", sleeper).splitlines()
    row = next(line for line in stats[1:] if sleeper in line)
    usage = re.search(r"(\d+(?:\.\d+)?)(B|KiB|MiB|GiB) / ", row)
    assert usage is not None and float(usage.group(1)) > 0, stats
