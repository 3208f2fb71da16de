"""Isolation and resource limits of real containers, checked from inside and from the host.

Every test drives the dockyard CLI against the module's daemon (``containers`` fixture) and runs
busybox commands in containers: namespaces (pid, uts, mnt, net, ipc), masked and read-only
``/proc``/``/sys`` paths, the device cgroup, capabilities and no_new_privs, inherited fds,
symlinks in the image that point at host paths, networking modes, and the memory, pids and cpu
cgroup limits read back from the host through the container's PID. The last test checks that a
removed container leaves neither processes nor cgroup directories behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.linux.containerkit import Containers, containers, needs_root

pytestmark = needs_root
__all__ = ["containers"]

DEFAULT_CAPS = "00000000a80425fb"
NO_CAPS = "0000000000000000"


def sh(kit: Containers, script: str, *opts: str) -> subprocess.CompletedProcess[str]:
    """Run ``sh -c SCRIPT`` in a throwaway busybox container with extra run options."""
    return kit.cli("run", "--rm", *opts, "busybox", "sh", "-c", script, timeout=60)


def sh_ok(kit: Containers, script: str, *opts: str) -> str:
    """Like ``sh`` but the script must succeed; its stdout."""
    return kit.ok("run", "--rm", *opts, "busybox", "sh", "-c", script)


@contextlib.contextmanager
def running(kit: Containers, *argv: str) -> Iterator[str]:
    """A detached container (``run -d ARGV``), force-removed afterwards; yields its id."""
    cid = kit.ok("run", "-d", *argv).strip()
    try:
        yield cid
    finally:
        kit.cli("rm", "-f", cid)


def pid_of(kit: Containers, cid: str) -> int:
    """The host PID of the container's first process."""
    kit.wait_for(cid, ".State.Status", "running")
    pid = int(kit.inspect(cid, ".State.Pid"))
    assert pid > 0
    return pid


def cgroup_dir(pid: int, controller: str) -> Path:
    """The host directory of *pid*'s cgroup for a v1 *controller* (or the v2 one)."""
    mounts: dict[str, tuple[str, str]] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ")
        fstype, _, superopts = right.split()[:3]
        root, point = left.split()[3:5]
        if fstype == "cgroup":
            for opt in superopts.split(","):
                mounts.setdefault(opt, (root, point))
        elif fstype == "cgroup2":
            mounts.setdefault("", (root, point))
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(",") or (names == "" and controller not in mounts):
            root, point = mounts[controller if names else ""]
            rel = path[len(root) :] if root != "/" and path.startswith(root) else path
            return Path(point + rel)
    raise AssertionError(f"no {controller} cgroup for pid {pid}")


def status_field(text: str, name: str) -> str:
    """One ``Name:\\tvalue`` field of /proc/<pid>/status text."""
    match = re.search(rf"^{name}:\s*(\S+)", text, re.M)
    assert match, f"{name} not in {text!r}"
    return match.group(1)


# --- namespaces -----------------------------------------------------------------------------


def test_pid_one_and_hostname(containers: Containers) -> None:
    with running(containers, "busybox", "sh", "-c", "echo $$; hostname; sleep 30") as cid:
        pid_of(containers, cid)
        deadline = time.monotonic() + 10
        while len(out := containers.ok("logs", cid).split()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert out == ["1", cid[:12]]
    assert sh_ok(containers, "hostname", "-h", "isolated") == "isolated\n"


def test_mounts_are_the_container_s_own(containers: Containers) -> None:
    text = sh_ok(containers, "cat /proc/self/mountinfo")
    points = [line.split()[4] for line in text.splitlines()]
    assert "/" in points and "/proc" in points, text
    base = str(containers.daemon.base)
    assert not [p for p in points if p.startswith(base) or p.startswith("/work")], text
    allowed = ("/", "/proc", "/dev", "/sys", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
    strays = [p for p in points if not any(p == a or p.startswith(a + "/") for a in allowed)]
    assert not strays, text


def test_host_processes_are_invisible(containers: Containers) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        out = sh_ok(containers, "ls /proc; echo ---; ps -o pid,comm")
        listing, ps = out.split("---")
        pids = {int(name) for name in listing.split() if name.isdigit()}
        assert 1 in pids and sleeper.pid not in pids, out
        assert len(pids) <= 4, out
        assert "sleep" not in ps, ps
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)


def test_namespaces_differ_from_the_host_s(containers: Containers) -> None:
    kinds = ["mnt", "net", "pid", "uts", "ipc"]
    out = sh_ok(containers, " ; ".join(f"readlink /proc/1/ns/{k}" for k in kinds))
    inside = out.split()
    assert len(inside) == len(kinds), out
    for kind, link in zip(kinds, inside, strict=True):
        assert link.startswith(f"{kind}:["), out
        assert link != os.readlink(f"/proc/self/ns/{kind}"), f"{kind} namespace is the host's"


# --- /proc and /sys -------------------------------------------------------------------------


def test_proc_sys_and_sys_are_read_only(containers: Containers) -> None:
    probes = ["echo dockyard > /proc/sys/kernel/domainname", "mkdir /sys/dockyard-probe"]
    if Path("/proc/sysrq-trigger").exists():
        probes.append(": > /proc/sysrq-trigger")  # opened for writing, nothing written
    for probe in probes:
        proc = sh(containers, probe)
        assert proc.returncode != 0, probe
        assert "Read-only file system" in proc.stderr, (probe, proc.stderr)


def test_masked_paths_read_empty(containers: Containers) -> None:
    files = [
        p
        for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug")
        if Path(p).exists()
    ]
    assert files
    script = "; ".join(f"echo {p} $(head -c 64 {p} | wc -c)" for p in files)
    out = sh_ok(containers, script + "; echo /sys/firmware $(ls -A /sys/firmware | wc -l)")
    sizes = dict(line.split() for line in out.splitlines())
    assert sizes == {p: "0" for p in [*files, "/sys/firmware"]}, out


# --- devices --------------------------------------------------------------------------------


def test_raw_host_disk_cannot_be_read(containers: Containers) -> None:
    dev = os.stat("/").st_dev
    major, minor = os.major(dev), os.minor(dev)
    if major == 0:  # root on a virtual file system: any block device must be denied
        major, minor = 7, 0
    proc = sh(
        containers,
        f"mknod /tmp/disk b {major} {minor} && echo made && dd if=/tmp/disk of=/dev/null count=1",
    )
    assert proc.stdout == "made\n", proc.stderr
    assert proc.returncode != 0 and "Operation not permitted" in proc.stderr, proc.stderr


def test_denied_character_device(containers: Containers) -> None:
    proc = sh(containers, "mknod /tmp/kmsg c 1 11 && head -c1 /tmp/kmsg")
    assert proc.returncode != 0 and "Operation not permitted" in proc.stderr, proc.stderr


def test_allowed_devices_work(containers: Containers) -> None:
    out = sh_ok(
        containers,
        "echo x > /dev/null && head -c 4 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c",
    )
    assert out.split() == ["4", "4"]
    proc = sh(containers, "echo x > /dev/full")
    assert proc.returncode != 0 and "No space left on device" in proc.stderr, proc.stderr


# --- capabilities and no_new_privs -----------------------------------------------------------


def test_default_capabilities(containers: Containers) -> None:
    for text in (
        sh_ok(containers, "cat /proc/self/status"),
        sh_ok(containers, "cat /proc/1/status"),
    ):
        for name in ("CapPrm", "CapEff", "CapBnd"):
            assert status_field(text, name) == DEFAULT_CAPS, name
        for name in ("CapInh", "CapAmb"):
            assert status_field(text, name) == NO_CAPS, name
    with running(containers, "busybox", "sleep", "30") as cid:
        pid_of(containers, cid)
        text = containers.ok("exec", cid, "cat", "/proc/self/status")
        assert status_field(text, "CapEff") == DEFAULT_CAPS
        assert status_field(text, "CapBnd") == DEFAULT_CAPS
        assert status_field(text, "CapInh") == NO_CAPS


def test_non_root_user_has_no_effective_capabilities(containers: Containers) -> None:
    text = sh_ok(containers, "cat /proc/self/status", "--user", "1000")
    assert status_field(text, "Uid") == "1000"
    assert status_field(text, "CapEff") == NO_CAPS
    assert status_field(text, "CapPrm") == NO_CAPS
    assert status_field(text, "CapBnd") == DEFAULT_CAPS


def test_privileged_gets_the_daemon_s_bounding_set(containers: Containers) -> None:
    host = status_field(Path("/proc/self/status").read_text(), "CapBnd")
    text = sh_ok(containers, "cat /proc/self/status", "--privileged")
    assert status_field(text, "CapBnd") == host
    assert status_field(text, "CapEff") == host


def test_cap_drop_and_cap_add(containers: Containers) -> None:
    assert sh(containers, "mknod /tmp/n c 1 3").returncode == 0
    proc = sh(containers, "mknod /tmp/n c 1 3", "--cap-drop", "MKNOD")
    assert proc.returncode != 0 and "Operation not permitted" in proc.stderr, proc.stderr
    toggle = "ip link set lo up && ip link set lo down"  # one of the two changes the flags
    proc = sh(containers, toggle, "--network", "none")
    assert proc.returncode != 0, "ip link set worked without NET_ADMIN"
    sh_ok(containers, toggle, "--cap-add", "NET_ADMIN", "--network", "none")
    for flag in ("--cap-add", "--cap-drop"):
        proc = containers.cli("run", "--rm", flag, "NOPE", "busybox", "true")
        assert proc.returncode == 125 and "NOPE" in proc.stderr, (flag, proc.stderr)


def test_unprivileged_cannot_mount(containers: Containers) -> None:
    proc = sh(containers, "mkdir -p /mnt && mount -t tmpfs none /mnt")
    assert proc.returncode != 0 and "permission denied" in proc.stderr.lower(), proc.stderr


def test_no_new_privileges(containers: Containers) -> None:
    script = "grep NoNewPrivs /proc/self/status"
    assert sh_ok(containers, script).split() == ["NoNewPrivs:", "0"]
    out = sh_ok(containers, script, "--security-opt", "no-new-privileges")
    assert out.split() == ["NoNewPrivs:", "1"]


# --- inherited file descriptors ---------------------------------------------------------------


def test_only_standard_fds_are_inherited(containers: Containers) -> None:
    assert sh_ok(containers, "ls /proc/self/fd").split() in (["0", "1", "2"], ["0", "1", "2", "3"])
    with running(containers, "busybox", "sleep", "30") as cid:
        pid = pid_of(containers, cid)
        assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2"]
        out = containers.ok("exec", cid, "ls", "/proc/1/fd")
        assert out.split() == ["0", "1", "2"], out
        out = containers.ok("exec", cid, "sh", "-c", "ls /proc/$$/fd; echo -; ls /proc/self/fd")
        assert out.split() == ["0", "1", "2", "-", "0", "1", "2", "3"], out


# --- symlinks that point at host paths --------------------------------------------------------


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A host directory with one file, which no container may touch."""
    path = tmp_path / "canary"
    path.mkdir()
    (path / "keep").write_text("host\n")
    return path


def snapshot(path: Path) -> dict[str, bytes]:
    """Names and contents of the files under *path*."""
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_bind_mount_through_image_symlink_stays_in_rootfs(
    containers: Containers, canary: Path, tmp_path: Path
) -> None:
    image = f"symlinked-{secrets.token_hex(4)}"
    name = f"link-{secrets.token_hex(4)}"
    containers.ok("run", "--name", name, "busybox", "ln", "-s", f"/../../../..{canary}", "/data")
    try:
        containers.ok("commit", name, image)
    finally:
        containers.cli("rm", "-f", name)
    hostdir = tmp_path / "volume"
    hostdir.mkdir()
    (hostdir / "from-host").write_text("bound\n")
    before = snapshot(canary)
    try:
        out = containers.ok(
            "run", "--rm", "-v", f"{hostdir}:/data", image, "sh", "-c",
            "cat /data/from-host && echo leak > /data/from-ctr",
        )  # fmt: skip
    finally:
        containers.cli("rmi", "-f", image)
    assert out == "bound\n"
    assert (hostdir / "from-ctr").read_text() == "leak\n"
    assert snapshot(canary) == before
    assert str(canary) not in Path("/proc/self/mountinfo").read_text()


def test_cp_through_symlinks_stays_in_container(
    containers: Containers, canary: Path, tmp_path: Path
) -> None:
    src = tmp_path / f"payload-{secrets.token_hex(4)}"
    src.write_text("copied\n")
    script = f"ln -s {canary} /test && ln -s / /toroot && sleep 30"
    before = snapshot(canary)
    with running(containers, "busybox", "sh", "-c", script) as cid:
        pid_of(containers, cid)
        deadline = time.monotonic() + 10
        while containers.cli("exec", cid, "test", "-L", "/toroot").returncode != 0:
            assert time.monotonic() < deadline, "symlinks never appeared"
            time.sleep(0.1)
        containers.ok("cp", str(src), f"{cid}:/toroot/tmp/")
        assert containers.ok("exec", cid, "cat", f"/tmp/{src.name}") == "copied\n"
        assert not Path("/tmp", src.name).exists()
        containers.cli("exec", cid, "mkdir", "-p", str(canary))
        containers.ok("cp", str(src), f"{cid}:/test/")
        assert containers.ok("exec", cid, "cat", f"{canary}/{src.name}") == "copied\n"
    assert snapshot(canary) == before


# --- networking modes -----------------------------------------------------------------------


def test_network_none_has_only_loopback(containers: Containers) -> None:
    assert sh_ok(containers, "ls /sys/class/net", "--network", "none").split() == ["lo"]
    out = sh_ok(containers, "ip -o link", "--network", "none")
    assert [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"], out


def test_network_none_loopback_is_up(containers: Containers) -> None:
    out = sh_ok(containers, "ip addr show lo", "--network", "none")
    assert "UP" in out.splitlines()[0].split("<")[1].split(">")[0].split(","), out
    assert "inet 127.0.0.1/8" in out, out


def test_network_host_sees_host_interfaces(containers: Containers) -> None:
    out = sh_ok(containers, "ls /sys/class/net", "--network", "host")
    assert sorted(out.split()) == sorted(os.listdir("/sys/class/net"))


# --- resource limits ------------------------------------------------------------------------


@pytest.mark.slow
def test_memory_limit_oom_kills(containers: Containers) -> None:
    name = f"hog-{secrets.token_hex(4)}"
    proc = containers.cli(
        "run", "--name", name, "--memory", "32m", "busybox", "sh", "-c",
        "a=a; while true; do a=$a$a; done", timeout=60,
    )  # fmt: skip
    try:
        assert proc.returncode == 137, proc.stderr
        assert containers.inspect(name, ".State.ExitCode") == "137"
        assert containers.inspect(name, ".State.OOMKilled") == "true"
    finally:
        containers.cli("rm", "-f", name)


@pytest.mark.slow
def test_pids_limit_bounds_forks(containers: Containers) -> None:
    # the subshell forks until refused; the container's pid 1 then becomes a sleep without forking
    script = "(for i in $(seq 50); do sleep 20 & done) 2>/dev/null; exec sleep 30"
    with running(containers, "--pids-limit", "10", "busybox", "sh", "-c", script) as cid:
        group = cgroup_dir(pid_of(containers, cid), "pids")
        assert (group / "pids.max").read_text().strip() == "10"
        deadline = time.monotonic() + 10
        while True:
            events = dict(line.split() for line in (group / "pids.events").read_text().splitlines())
            if int(events.get("max", "0")) > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert int(events["max"]) > 0, "no fork was refused"
        assert 5 <= int((group / "pids.current").read_text()) <= 10
        assert containers.inspect(cid, ".State.Status") == "running"
        assert subprocess.run(["true"], timeout=10).returncode == 0  # the host still forks


def test_cpu_and_memory_limits_in_cgroup_files(containers: Containers) -> None:
    with running(containers, "--cpus", "0.5", "--memory", "64m", "busybox", "sleep", "30") as cid:
        pid = pid_of(containers, cid)
        cpu = cgroup_dir(pid, "cpu")
        if (cpu / "cpu.max").exists():
            assert (cpu / "cpu.max").read_text().split() == ["50000", "100000"]
            assert (cgroup_dir(pid, "memory") / "memory.max").read_text().strip() == "67108864"
        else:
            assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
            assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
            memory = cgroup_dir(pid, "memory")
            assert (memory / "memory.limit_in_bytes").read_text().strip() == "67108864"
        assert cid in str(cpu)


# --- cleanup --------------------------------------------------------------------------------


def test_removed_container_leaves_no_process_or_cgroup(containers: Containers) -> None:
    with running(containers, "busybox", "sleep", "30") as cid:
        pid = pid_of(containers, cid)
        groups = [cgroup_dir(pid, c) for c in ("cpu", "memory", "pids", "devices", "freezer")]
        assert all(g.is_dir() for g in groups), groups
        containers.ok("rm", "-f", cid)
    assert not Path(f"/proc/{pid}").exists() or pid_gone(pid)
    assert [g for g in groups if g.exists()] == []
    assert containers.ok("ps", "-aq").split() == []
    marker = f"/{containers.cgroup_parent}/"
    leftovers = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (proc / "cgroup").read_text():
                    leftovers.append(proc.name)
    assert leftovers == [], f"processes still in container cgroups: {leftovers}"


def pid_gone(pid: int) -> bool:
    """Whether *pid* is gone or is an unrelated process that reused the number."""
    try:
        return "sleep" not in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return True
