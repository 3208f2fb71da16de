"""Containers survive the daemon: live restore after SIGKILL and SIGTERM, exits while it is away.

Every test gets a daemon of its own (it kills it), on its own data root and ``--cgroup-parent``.
"Restart" below means a new daemon process on the same data root, exec root and socket.
Monitors and the forking helper are processes of their own that outlive a killed daemon by
design; teardown checks that none whose command line names the test's directory is left.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.daemon.conftest import request, start
from tests.linux.containerkit import (
    DOCKYARD_CMD,
    Containers,
    busybox_tar,
    cgroup_dirs,
    mounts_under,
    needs_root,
    remove_cgroups,
)

pytestmark = [needs_root, pytest.mark.slow]

COUNTER = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.1; done"
ZERO_TIME = "0001-01-01T00:00:00Z"


class Survival(Containers):
    """A daemon that a test may kill and start again on the same directories."""

    def __init__(self, base: Path, parent: str) -> None:
        self.base = base
        super().__init__(start(base, "--cgroup-parent", parent), parent)

    def kill_daemon(self, sig: int = signal.SIGKILL) -> int:
        """Stop the daemon with *sig*; return its exit status."""
        return self.daemon.stop(sig)

    def restart_daemon(self) -> None:
        """Start a new daemon on the same data root (the old one must be gone)."""
        assert self.daemon.proc.poll() is not None, "the daemon is still running"
        self.daemon = start(self.base, "--cgroup-parent", self.cgroup_parent)

    def inspect(self, name: str, field: str) -> str:
        """One field of inspect (``.A.B``), through the API: a CLI process per poll is slow."""
        status, _, body = request(self.daemon, "GET", f"/containers/{name}/json")
        assert status == 200, f"inspect {name}: {status} {body!r}"
        value: Any = orjson.loads(body)
        for key in field.strip(".").split("."):
            value = value[key]
        if isinstance(value, bool):
            return str(value).lower()
        return str(value)

    def pid(self, name: str) -> int:
        """The host pid of the container's process (State.Pid)."""
        return int(self.inspect(name, ".State.Pid"))

    def config_path(self, name: str) -> Path:
        """The container's ``config.v2.json`` in the data root."""
        return self.daemon.data_root / "containers" / self.inspect(name, ".Id") / "config.v2.json"


def alive(pid: int) -> bool:
    """Whether *pid* exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status


def gone_within(pid: int, timeout: float) -> bool:
    """Poll until *pid* is gone; False if it is still alive after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def pids_mentioning(path: Path) -> list[int]:
    """Processes (other than this one) whose command line names *path* or something under it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        wanted = str(path).encode()
        if any(arg == wanted or wanted + b"/" in arg for arg in argv):
            found.append(int(entry.name))
    return found


def cgroup_pids(parent: str) -> list[int]:
    """Processes still in the test's cgroups."""
    pids: set[int] = set()
    for top in cgroup_dirs(parent):
        for procs in top.rglob("cgroup.procs"):
            try:
                pids.update(int(line) for line in procs.read_text().split())
            except OSError:
                continue
    return sorted(pids)


def kill_leftovers(pids: list[int]) -> None:
    """SIGKILL processes this test started and that teardown could not end (by pid)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def rfc3339(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC time with up to nanosecond digits."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    whole = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return whole + (float("0." + frac) if frac else 0.0)


@pytest.fixture
def survival(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Survival]:
    """A daemon of the test's own with ``busybox:latest``; everything is removed at teardown."""
    base = tmp_path_factory.mktemp("survival")
    tar = busybox_tar(tmp_path_factory.getbasetemp())
    parent = f"dockyard-test-{secrets.token_hex(4)}"
    kit = Survival(base, parent)
    try:
        with open(tar) as f:
            proc = subprocess.run(
                [*DOCKYARD_CMD, "-H", kit.daemon.hosts[0], "import", "-", "busybox:latest",
                 "-c", 'CMD ["sh"]'],
                stdin=f, capture_output=True, text=True, env=kit.daemon.env, timeout=60,
                check=False,
            )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        yield kit
    finally:
        _teardown(kit, base, parent)


def _teardown(kit: Survival, base: Path, parent: str) -> None:
    problems = []
    try:
        if kit.daemon.proc.poll() is not None:
            kit.restart_daemon()  # also replaces the helper a killed daemon left
        kit.remove_all()
    finally:
        if kit.daemon.proc.poll() is None:
            kit.daemon.stop(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while (pids_mentioning(base) or cgroup_pids(parent)) and time.monotonic() < deadline:
            time.sleep(0.1)
        in_cgroups = cgroup_pids(parent)
        if in_cgroups:
            problems.append(f"processes left in the cgroups: {in_cgroups}")
            kill_leftovers(in_cgroups)
        remove_cgroups(parent)
        if cgroup_dirs(parent):
            problems.append(f"cgroups left: {cgroup_dirs(parent)}")
        naming = pids_mentioning(base)
        if naming:
            cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes() for p in naming if alive(p)]
            problems.append(f"processes left naming {base}: {naming} {cmdlines}")
            kill_leftovers(naming)
        left = mounts_under(base)
        for mount in reversed(left):
            subprocess.run(["umount", "-l", mount], check=False)
        if left:
            problems.append(f"mounts left behind: {left}")
        shutil.rmtree(base, ignore_errors=True)
    assert not problems, "\n".join(problems)


def test_sigkilled_daemon_leaves_the_container_running_and_finds_it_again(
    survival: Survival,
) -> None:
    survival.ok("run", "-d", "--name", "counter", "busybox", "sh", "-c", COUNTER)
    survival.wait_for("counter", ".State.Status", "running")
    pid = survival.pid("counter")
    time.sleep(0.5)

    down_at = time.time()
    survival.kill_daemon(signal.SIGKILL)
    time.sleep(1.5)
    assert alive(pid), "the container's process died with the daemon"
    survival.restart_daemon()
    up_at = time.time()

    assert survival.inspect("counter", ".State.Status") == "running"
    assert survival.inspect("counter", ".State.Running") == "true"
    assert survival.pid("counter") == pid
    time.sleep(0.3)

    lines = survival.ok("logs", "-t", "counter").splitlines()
    stamps = [rfc3339(line.split(" ", 1)[0]) for line in lines]
    numbers = [int(line.split(" ", 1)[1]) for line in lines]
    assert numbers == list(range(len(numbers))), f"gap or repeat in the log: {numbers}"
    during = [n for n, t in zip(numbers, stamps, strict=True) if down_at + 0.2 < t < up_at - 0.2]
    assert len(during) >= 5, f"too few lines logged while the daemon was down: {during}"
    assert any(t > up_at for t in stamps), "nothing logged after the restart"

    waiter = subprocess.Popen(
        [*DOCKYARD_CMD, "-H", survival.daemon.hosts[0], "wait", "counter"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=survival.daemon.env,
    )  # fmt: skip
    try:
        time.sleep(0.3)
        survival.ok("stop", "-t", "1", "counter")
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 0, err
    assert out.strip() == "137"  # sh as pid 1 ignores SIGTERM: killed after the timeout
    assert survival.inspect("counter", ".State.Status") == "exited"
    assert gone_within(pid, 5)


def test_exit_while_the_daemon_is_down_is_applied_at_restart(survival: Survival) -> None:
    survival.ok("run", "-d", "--name", "quits", "busybox", "sh", "-c", "sleep 2; exit 42")
    survival.wait_for("quits", ".State.Status", "running")
    pid = survival.pid("quits")
    started = survival.inspect("quits", ".State.StartedAt")
    survival.kill_daemon(signal.SIGKILL)
    time.sleep(3)
    assert gone_within(pid, 3)
    survival.restart_daemon()

    survival.wait_for("quits", ".State.Status", "exited", timeout=10)
    assert survival.inspect("quits", ".State.ExitCode") == "42"
    assert survival.inspect("quits", ".State.Running") == "false"
    assert survival.inspect("quits", ".State.Pid") == "0"
    finished = survival.inspect("quits", ".State.FinishedAt")
    assert finished != ZERO_TIME
    assert rfc3339(finished) - rfc3339(started) >= 1.5, (started, finished)
    assert survival.ok("wait", "quits", timeout=20).strip() == "42"


def test_restart_always_container_comes_back_after_exiting_while_the_daemon_was_down(
    survival: Survival,
) -> None:
    survival.ok("run", "-d", "--name", "phoenix", "--restart", "always", "busybox",
                "sh", "-c", "sleep 1; exit 1")  # fmt: skip
    survival.wait_for("phoenix", ".State.Status", "running")
    pid = survival.pid("phoenix")
    survival.kill_daemon(signal.SIGKILL)
    assert gone_within(pid, 5), "the container did not exit while the daemon was down"
    survival.restart_daemon()

    deadline = time.monotonic() + 10
    while True:
        status, new_pid = survival.inspect("phoenix", ".State.Status"), survival.pid("phoenix")
        if status == "running" and new_pid not in (0, pid) and alive(new_pid):
            break
        assert time.monotonic() < deadline, f"not back: {status}, pid {new_pid}"
        time.sleep(0.05)
    assert int(survival.inspect("phoenix", ".RestartCount")) >= 1


def test_graceful_daemon_stop_leaves_containers_running(survival: Survival) -> None:
    survival.ok("run", "-d", "--name", "calm", "busybox", "sleep", "300")
    survival.ok("run", "-d", "--name", "calm2", "busybox", "sleep", "300")
    survival.wait_for("calm", ".State.Status", "running")
    survival.wait_for("calm2", ".State.Status", "running")
    pids = {name: survival.pid(name) for name in ("calm", "calm2")}

    assert survival.kill_daemon(signal.SIGTERM) == 0, survival.tail()
    for name, pid in pids.items():
        assert alive(pid), f"{name} died with a graceful daemon stop"
    survival.restart_daemon()

    running = survival.ok("ps", "-q", "--no-trunc").split()
    assert sorted(running) == sorted(survival.inspect(name, ".Id") for name in pids)
    for name, pid in pids.items():
        assert survival.inspect(name, ".State.Status") == "running"
        assert survival.pid(name) == pid
    assert survival.ok("exec", "calm", "echo", "reachable").strip() == "reachable"
    survival.ok("stop", "-t", "1", "calm")
    assert survival.inspect("calm", ".State.Status") == "exited"
    assert gone_within(pids["calm"], 5)
    assert alive(pids["calm2"])


def test_rst08_failed_create_frees_the_name(survival: Survival) -> None:
    failed = survival.cli("create", "--name", "taken1", "--cap-add", "NOPE", "busybox")
    assert failed.returncode != 0
    # --volumes-from is resolved after the name is reserved (while the layers are made).
    failed = survival.cli("create", "--name", "taken1", "--volumes-from", "nosuch", "busybox")
    assert failed.returncode != 0
    assert survival.ok("ps", "-aq").split() == []
    created = survival.ok("create", "--name", "taken1", "busybox", "true").strip()
    assert survival.inspect("taken1", ".Id") == created

    survival.kill_daemon(signal.SIGKILL)
    survival.restart_daemon()
    assert survival.inspect("taken1", ".Id") == created
    survival.ok("start", "taken1")
    assert survival.ok("wait", "taken1", timeout=20).strip() == "0"


def test_rst07_unreadable_container_config_does_not_stop_the_daemon(survival: Survival) -> None:
    survival.ok("run", "-d", "--name", "healthy", "busybox", "sleep", "300")
    survival.ok("create", "--name", "garbled", "busybox", "true")
    pid = survival.pid("healthy")
    config = survival.config_path("garbled")
    assert config.exists()

    assert survival.kill_daemon(signal.SIGTERM) == 0, survival.tail()
    config.write_bytes(b'{"ID": "not json at all \x00\xff')
    survival.restart_daemon()

    assert survival.inspect("healthy", ".State.Status") == "running"
    assert survival.pid("healthy") == pid
    assert survival.ok("exec", "healthy", "echo", "fine").strip() == "fine"
    assert survival.ok("run", "--rm", "--network", "none", "busybox", "echo", "new").strip() == (
        "new"
    )
    survival.ok("create", "--name", "fresh", "busybox", "true")
    survival.ok("stop", "-t", "1", "healthy")
    assert survival.inspect("healthy", ".State.Status") == "exited"
