"""The native exec driver's cgroups on this host's real hierarchies (v1, and the v2 unified tree).

Every test makes its cgroups under ``<own cgroup>/dockyard-test-<random>/<id>`` and removes them,
their parents and the processes it started (by pid) even when it fails. The v2 tests use the
unified hierarchy a hybrid host mounts at /sys/fs/cgroup/unified, or /sys/fs/cgroup on a v2 host.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drivers.exec.native import bpfdevices
from drivers.exec.native.cgroups import Cgroup, Hierarchy, read
from drivers.exec.spec import (
    DEFAULT_DEVICE_RULES,
    PRIVILEGED_DEVICE_RULES,
    DeviceRule,
    Resources,
)
from engine.errors import FailedPrecondition, InvalidArgument, NotSupported

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: makes cgroups")

MiB = 1 << 20
Factory = Callable[..., Cgroup]


def _hierarchy(version: str) -> Hierarchy:
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        with contextlib.suppress(NotSupported, FileNotFoundError):
            h = Hierarchy.detect(root)
            if h.version == version:
                return h
    pytest.skip(f"needs a cgroup v{version} hierarchy on this host")


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started; killed by pid and reaped at the end."""
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for p in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait()


def _cgroups(version: str) -> Iterator[Factory]:
    hierarchy = _hierarchy(version)
    parent = f"dockyard-test-{secrets.token_hex(4)}"
    made: list[Cgroup] = []

    def make(
        id: str = "c1",
        resources: Resources | None = None,
        rules: tuple[DeviceRule, ...] = (),
        create: bool = True,
    ) -> Cgroup:
        cg = Cgroup.for_container(id, parent, hierarchy)
        made.append(cg)
        if create:
            cg.create(resources or Resources(), rules)
        return cg

    try:
        yield make
    finally:
        for cg in made:
            for pid in cg.pids():  # only processes of this test can be in there
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            cg.remove()
            for directory in {os.path.dirname(d) for d in cg.paths().values()}:
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(directory)


@pytest.fixture
def v1() -> Iterator[Factory]:
    """Make cgroups on the v1 hierarchy."""
    yield from _cgroups("1")


@pytest.fixture
def v2() -> Iterator[Factory]:
    """Make cgroups on the v2 (unified) hierarchy."""
    yield from _cgroups("2")


def start(procs: list[subprocess.Popen[str]], code: str) -> subprocess.Popen[str]:
    """A Python child that runs *code* once it reads a line (after the test put it in a cgroup)."""
    child = subprocess.Popen(
        [sys.executable, "-c", f"import sys\nsys.stdin.readline()\n{code}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    procs.append(child)
    return child


def go(child: subprocess.Popen[str]) -> str:
    """Let *child* run and return its output."""
    out, _ = child.communicate("go\n", timeout=60)
    return out


def test_limits_are_written_and_updated(v1: Factory) -> None:
    r = Resources(
        memory=64 * MiB,
        memory_swap=128 * MiB,
        memory_reservation=32 * MiB,
        cpu_shares=512,
        cpu_period=100000,
        cpu_quota=50000,
        cpuset_cpus="0",
        cpuset_mems="0",
        pids_limit=20,
    )
    cg = v1(resources=r)
    d = cg.paths()
    values = {
        ("memory", "memory.limit_in_bytes"): str(64 * MiB),
        ("memory", "memory.memsw.limit_in_bytes"): str(128 * MiB),
        ("memory", "memory.soft_limit_in_bytes"): str(32 * MiB),
        ("cpu", "cpu.shares"): "512",
        ("cpu", "cpu.cfs_period_us"): "100000",
        ("cpu", "cpu.cfs_quota_us"): "50000",
        ("cpuset", "cpuset.cpus"): "0",
        ("cpuset", "cpuset.mems"): "0",
        ("pids", "pids.max"): "20",
    }
    for (controller, name), value in values.items():
        assert read(f"{d[controller]}/{name}") == value, name
    # Growing past the current memsw needs memsw first, shrinking needs the limit first.
    cg.update(Resources(memory=256 * MiB, memory_swap=512 * MiB, pids_limit=-1))
    assert read(f"{d['memory']}/memory.limit_in_bytes") == str(256 * MiB)
    assert read(f"{d['memory']}/memory.memsw.limit_in_bytes") == str(512 * MiB)
    assert read(f"{d['pids']}/pids.max") == "max"
    cg.update(Resources(memory=16 * MiB, memory_swap=24 * MiB, cpu_shares=1 << 20))
    assert read(f"{d['memory']}/memory.limit_in_bytes") == str(16 * MiB)
    assert read(f"{d['memory']}/memory.memsw.limit_in_bytes") == str(24 * MiB)
    assert read(f"{d['cpu']}/cpu.shares") == "262144"  # clamped to the kernel's maximum
    assert read(f"{d['cpu']}/cpu.cfs_quota_us") == "50000"  # zero fields are left alone


def test_default_swap_is_twice_memory(v1: Factory) -> None:
    cg = v1(resources=Resources(memory=32 * MiB))
    assert read(f"{cg.paths()['memory']}/memory.memsw.limit_in_bytes") == str(64 * MiB)


def test_kernel_refusal_names_the_field_and_leaves_nothing(v1: Factory) -> None:
    cg = v1("bad", create=False)
    with pytest.raises(InvalidArgument, match=r"Resources\.CpusetCpus"):
        cg.create(Resources(cpuset_cpus=str((os.cpu_count() or 1) + 7)))  # no such CPU
    assert all(not os.path.exists(d) for d in cg.paths().values())
    with pytest.raises(InvalidArgument, match=r"Resources\.Memory"):
        cg.create(Resources(memory=1 * MiB))  # below the minimum: refused before any mkdir
    assert all(not os.path.exists(d) for d in cg.paths().values())


def test_add_lists_pids_and_reopens_from_paths(
    v1: Factory, procs: list[subprocess.Popen[str]]
) -> None:
    cg = v1()
    child = start(procs, "import time; time.sleep(60)")
    cg.add(child.pid)
    assert cg.pids() == [child.pid]
    memory = Path(f"/proc/{child.pid}/cgroup").read_text()
    assert os.path.relpath(cg.paths()["memory"], "/sys/fs/cgroup/memory") in memory
    again = Cgroup.from_paths(json.loads(json.dumps(cg.paths())))
    assert again.pids() == [child.pid]
    again.update(Resources(pids_limit=5))
    assert read(f"{cg.paths()['pids']}/pids.max") == "5"


@pytest.mark.slow
def test_remove_refuses_while_processes_remain(
    v1: Factory, procs: list[subprocess.Popen[str]]
) -> None:
    cg = v1()
    child = start(procs, "")
    cg.add(child.pid)
    with pytest.raises(FailedPrecondition):
        cg.remove()  # kills nothing: waits briefly, then gives up
    go(child)
    cg.remove()
    assert all(not os.path.exists(d) for d in cg.paths().values())


def _freeze_and_thaw(
    cg: Cgroup, procs: list[subprocess.Popen[str]], tmp_path: Path, state: Callable[[], str]
) -> None:
    """A child ticking into a file stops while frozen and goes on once thawed."""
    ticks = tmp_path / "ticks"
    child = start(
        procs,
        f"import time\nwith open({str(ticks)!r}, 'a', buffering=1) as f:\n"
        "    while True:\n        f.write('x\\n'); time.sleep(0.005)",
    )
    cg.add(child.pid)
    assert child.stdin is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    deadline = time.monotonic() + 10
    while not ticks.exists() or ticks.stat().st_size < 5:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    cg.freeze()
    assert state() == "frozen"
    size = ticks.stat().st_size
    time.sleep(0.3)
    assert ticks.stat().st_size == size
    cg.thaw()
    assert state() == "thawed"
    time.sleep(0.3)
    assert ticks.stat().st_size > size


def test_freeze_thaw_v1(v1: Factory, procs: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    cg = v1()
    states = {"FROZEN": "frozen", "THAWED": "thawed"}
    _freeze_and_thaw(
        cg, procs, tmp_path, lambda: states[read(f"{cg.paths()['freezer']}/freezer.state") or ""]
    )


def test_freeze_thaw_v2(v2: Factory, procs: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    cg = v2()

    def state() -> str:
        events = (read(f"{cg.paths()['']}/cgroup.events") or "").splitlines()
        return "frozen" if "frozen 1" in events else "thawed"

    _freeze_and_thaw(cg, procs, tmp_path, state)


def test_oom_kill_is_reported(v1: Factory, procs: list[subprocess.Popen[str]]) -> None:
    cg = v1(resources=Resources(memory=16 * MiB))
    child = start(procs, "b = b'x' * (200 << 20)\nprint(len(b))")
    cg.add(child.pid)
    assert not cg.oom_killed()
    go(child)
    assert child.returncode == -signal.SIGKILL
    assert cg.oom_killed()


def test_pids_limit_stops_a_fork_loop(v1: Factory, procs: list[subprocess.Popen[str]]) -> None:
    cg = v1(resources=Resources(pids_limit=10))
    shell = subprocess.Popen(
        ["/bin/sh", "-c", "read x; i=0; while [ $i -lt 50 ]; do sleep 60 & i=$((i+1)); done"],
        stdin=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    procs.append(shell)
    cg.add(shell.pid)
    shell.communicate("go\n", timeout=60)
    d = cg.paths()["pids"]
    assert 0 < len(cg.pids()) <= 10
    assert int(read(f"{d}/pids.current") or 0) <= 10
    assert (
        dict(line.split() for line in (read(f"{d}/pids.events") or "").splitlines())["max"] != "0"
    )
    assert subprocess.run(["/bin/true"], check=False).returncode == 0  # the host still forks


def _device_probe(procs: list[subprocess.Popen[str]], node: Path) -> subprocess.Popen[str]:
    return start(
        procs,
        "import os\n"
        f"for path in ({str(node)!r}, '/dev/null'):\n"
        "    try:\n        os.close(os.open(path, os.O_RDONLY)); print(path, 'ok')\n"
        "    except OSError as e:\n        print(path, e.errno)\n"
        f"os.mknod({str(node)!r} + '2', 0o600 | 0o020000, os.makedev(1, 11)); print('mknod ok')",
    )


@pytest.fixture
def kmsg_node(tmp_path: Path) -> Path:
    """A char 1:11 (kmsg) node: not in the default allow-list."""
    node = tmp_path / "kmsg"
    os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 11))
    return node


def test_device_rules_v1(v1: Factory, procs: list[subprocess.Popen[str]], kmsg_node: Path) -> None:
    cg = v1(rules=DEFAULT_DEVICE_RULES)
    listed = set((read(f"{cg.paths()['devices']}/devices.list") or "").splitlines())
    assert {"c 1:3 rwm", "c *:* m", "b *:* m", "c 136:* rwm", "c 5:2 rwm"} <= listed
    assert "a *:* rwm" not in listed and not any(r.startswith("c 10:229") for r in listed)
    child = _device_probe(procs, kmsg_node)
    cg.add(child.pid)
    out = go(child).splitlines()
    assert out == [f"{kmsg_node} {errno.EPERM}", "/dev/null ok", "mknod ok"]


def test_device_program_v2(
    v2: Factory, procs: list[subprocess.Popen[str]], kmsg_node: Path
) -> None:
    cg = v2(rules=DEFAULT_DEVICE_RULES)
    directory = cg.paths()[""]
    assert len(bpfdevices.attached(directory)) == 1
    child = _device_probe(procs, kmsg_node)
    cg.add(child.pid)
    out = go(child).splitlines()
    assert out == [f"{kmsg_node} {errno.EPERM}", "/dev/null ok", "mknod ok"]
    cg.remove()
    assert not os.path.exists(directory)


def test_privileged_v2_needs_no_program(
    v2: Factory, procs: list[subprocess.Popen[str]], kmsg_node: Path
) -> None:
    cg = v2(rules=PRIVILEGED_DEVICE_RULES)
    assert bpfdevices.attached(cg.paths()[""]) == []
    child = _device_probe(procs, kmsg_node)
    cg.add(child.pid)
    assert go(child).splitlines()[0] == f"{kmsg_node} ok"


def test_v2_limit_without_its_controller_is_not_supported(v2: Factory) -> None:
    root = _hierarchy("2").mounts[""]
    if "memory" in (read(f"{root}/cgroup.controllers") or "").split():
        pytest.skip("the memory controller is on this v2 hierarchy")
    cg = v2("nomem", create=False)
    with pytest.raises(NotSupported, match=r"Resources\.Memory"):
        cg.create(Resources(memory=64 * MiB))
    assert not os.path.exists(cg.paths()[""])


def _burn(procs: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    return start(
        procs,
        "import time\nend = time.monotonic() + 0.2\nwhile time.monotonic() < end: pass\n"
        "print('done', flush=True)\ntime.sleep(60)",
    )


def _burnt(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("go\n")
    child.stdin.flush()
    assert child.stdout.readline() == "done\n"


def test_stats_v1(v1: Factory, procs: list[subprocess.Popen[str]]) -> None:
    cg = v1(resources=Resources(memory=64 * MiB, pids_limit=20))
    child = _burn(procs)
    cg.add(child.pid)
    _burnt(child)
    s = json.loads(json.dumps(cg.stats()))
    mem, cpu = s["memory_stats"], s["cpu_stats"]
    assert 0 < mem["usage"] <= mem["max_usage"] and mem["limit"] == 64 * MiB
    assert "total_rss" in mem["stats"] and mem["failcnt"] >= 0
    assert cpu["cpu_usage"]["total_usage"] >= 100_000_000  # 0.2 s burnt, at least 0.1 s counted
    assert len(cpu["cpu_usage"]["percpu_usage"]) == cpu["online_cpus"] == os.cpu_count()
    assert cpu["system_cpu_usage"] > cpu["cpu_usage"]["total_usage"]
    assert set(cpu["throttling_data"]) == {"periods", "throttled_periods", "throttled_time"}
    assert s["pids_stats"] == {"current": 1, "limit": 20}
    assert all(isinstance(v, list) for v in s["blkio_stats"].values())
    assert "io_service_bytes_recursive" in s["blkio_stats"]


def test_stats_v2(v2: Factory, procs: list[subprocess.Popen[str]]) -> None:
    cg = v2()
    child = _burn(procs)
    cg.add(child.pid)
    _burnt(child)
    s = cg.stats()
    cpu = s["cpu_stats"]
    assert isinstance(cpu, dict)
    assert cpu["cpu_usage"]["total_usage"] >= 100_000_000
    assert "percpu_usage" not in cpu["cpu_usage"]
    assert set(s) == {"memory_stats", "cpu_stats", "pids_stats", "blkio_stats"}
    blkio = s["blkio_stats"]
    assert isinstance(blkio, dict) and isinstance(blkio["io_service_bytes_recursive"], list)
