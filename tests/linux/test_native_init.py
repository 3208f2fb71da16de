"""The native driver's in-container setup on real namespaces (reliability-security.md §1.4-1.6).

Each test builds a busybox rootfs under tmp_path and runs a fresh Python process (never a fork
of pytest) with the ``_HARNESS`` script: it unshares a pid namespace and forks the future PID 1,
which unshares mnt/uts/ipc/net and calls ``rootfs.setup`` then ``security.exec_process`` as the
driver does. A setup failure comes back on stderr as ``START ERROR: <message>`` with exit 125.
Oracles: what the container prints, the host canaries, and the host's mountinfo (no new lines
under the test's directory or on /, /proc, /sys, /dev).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from drivers.exec.native import security
from drivers.exec.spec import ContainerSpec, Device, Mount, Process, Rlimit, to_json
from jobs import capabilities

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: namespaces, mounts")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MASK = "00000000a80425fb"
LEAK_FD = 9
# Runs in a fresh interpreter (importing neither pytest nor this module, to start fast).
_HARNESS = """
import os, socket, sys
import orjson
from drivers.exec.native import init, linux, protocol, rootfs, security
from drivers.exec.spec import ContainerSpec, from_json

cfg = orjson.loads(sys.argv[1])
spec = from_json(ContainerSpec, cfg["spec"])
if cfg["leak"]:  # an fd on a host directory that the child must neither keep nor use
    os.dup2(os.open(cfg["leak"], os.O_RDONLY | os.O_DIRECTORY), cfg["leak_fd"])
master = -1
console_r = console_w = None
if spec.process.tty:  # the console's master comes back on a socket, as to the monitor
    console_r, console_w = socket.socketpair()
linux.unshare(linux.CLONE_NEWPID)
err_r, err_w = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        os.close(err_r)
        if console_w is not None:
            console_r.close()
            os.setsid()
        flags = 0
        for kind in spec.namespaces:
            flags |= 0 if kind == "pid" else linux.NS_FLAGS[kind]
        linux.unshare(flags)
        console = rootfs.setup(spec)
        if console is not None:
            init.take_console(spec, console, console_w.detach())
        security.exec_process(spec.process, privileged=spec.privileged)
    except BaseException as exc:
        os.write(err_w, f"{type(exc).__name__}: {exc}".encode())
        os._exit(125)
os.close(err_w)
if console_w is not None:
    console_w.close()
    try:
        master = protocol.recv_request(console_r)[1][0]
    except protocol.ProtocolError:  # the child failed before it had a console
        pass
err = b""
while chunk := os.read(err_r, 65536):
    err += chunk
if master >= 0:
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO once every slave fd is closed
            break
        if not data:
            break
        sys.stdout.buffer.write(data)
    sys.stdout.flush()
_, status = os.waitpid(pid, 0)
if err:
    sys.stderr.write("START ERROR: " + err.decode(errors="replace"))
    sys.exit(125)
code = os.waitstatus_to_exitcode(status)
sys.exit(128 - code if code < 0 else code)
"""
PASSWD = """\
root:x:0:0:root:/root:/bin/sh
1000:x:0:0:named like a uid:/:/bin/sh
foo:x:1001:1001:Foo:/home/foo:/bin/sh
"""
GROUP = "root:x:0:\nfoo:x:1001:\nbar:x:2000:foo\n"


def _mountinfo(text: str | None = None) -> list[list[str]]:
    if text is None:
        text = Path("/proc/self/mountinfo").read_text()
    return [line.split() for line in text.splitlines() if line]


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


@pytest.fixture(autouse=True)
def no_host_mounts(tmp_path: Path) -> Any:
    """Fail if the host gained a mount under tmp_path or on /, /proc, /sys or /dev."""
    before = {" ".join(f) for f in _mountinfo()}
    yield
    new = [f for f in _mountinfo() if " ".join(f) not in before]
    watched = (str(tmp_path), "/proc", "/sys", "/dev")
    leaked = [f for f in new if f[4] == "/" or any(_under(f[4], w) for w in watched)]
    assert not leaked, leaked


def build_rootfs(top: Path) -> None:
    """Make a busybox rootfs at *top*: users root, "1000" (uid 0!) and foo (1001, group bar)."""
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root"):
        (top / d).mkdir(parents=True)
    shutil.copy2("/bin/busybox", top / "bin/busybox")
    applets = subprocess.run(
        ["/bin/busybox", "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", top / "bin" / applet)
    (top / "etc/passwd").write_text(PASSWD)
    (top / "etc/group").write_text(GROUP)


@pytest.fixture
def root(tmp_path: Path) -> Any:
    """A busybox rootfs under tmp_path, removed afterwards unless a mount leaked into it."""
    top = tmp_path / "rootfs"
    build_rootfs(top)
    try:
        yield top
    finally:
        # Never delete through a mount that leaked onto the host (no_host_mounts reports it).
        if not any(_under(f[4], str(top)) for f in _mountinfo()):
            shutil.rmtree(top)


@pytest.fixture
def shared_dir(tmp_path: Path) -> Any:
    """A tmpfs mounted ``shared`` on the host, as systemd leaves /; unmounted afterwards."""
    top = tmp_path / "shared"
    top.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(top)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(top)], check=True)
        yield top
    finally:
        subprocess.run(["umount", "-R", str(top)], check=True)


def spec_for(top: Path, *args: str, **kw: Any) -> ContainerSpec:
    """A container spec for rootfs *top* running *args*; Process fields may be given in *kw*."""
    fields = ("user", "caps", "cwd", "no_new_privileges", "tty", "env", "rlimits", "console_size")
    proc = {k: kw.pop(k) for k in fields if k in kw}
    proc.setdefault("env", ("PATH=/bin", "HOSTNAME=box"))
    return ContainerSpec(
        id="t" * 64,
        rootfs=str(top),
        bundle=str(top.parent),
        run_dir=str(top.parent),
        process=Process(args=args, **proc),
        hostname="box",
        **kw,
    )


def run(spec: ContainerSpec, *, leak: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run *spec* through the harness; return the finished harness process."""
    cfg = {
        "spec": orjson.loads(to_json(spec)),
        "leak": str(leak) if leak else "",
        "leak_fd": LEAK_FD,
    }
    return subprocess.run(
        [sys.executable, "-c", _HARNESS, orjson.dumps(cfg).decode()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def sh(top: Path, script: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run ``sh -c script`` in a container made from *top*."""
    leak = kw.pop("leak", None)
    return run(spec_for(top, "sh", "-c", script, **kw), leak=leak)


def caps_of(out: str) -> dict[str, str]:
    """Parse ``grep Cap /proc/self/status`` output into {"CapEff": "...", ...}."""
    return dict(line.split(":\t") for line in out.splitlines() if line.startswith("Cap"))


def test_pid1_hostname_and_only_container_mounts(root: Path) -> None:
    res = sh(root, "echo $$; hostname; cat /proc/self/mountinfo")
    assert res.returncode == 0, res.stderr
    pid, hostname, *lines = res.stdout.splitlines()
    assert (pid, hostname) == ("1", "box")
    mounts = _mountinfo("\n".join(lines))
    points = {f[4] for f in mounts}
    core = {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"}
    assert core <= points
    allowed = core | set(ContainerSpec.__dataclass_fields__["masked_paths"].default)
    allowed |= set(ContainerSpec.__dataclass_fields__["readonly_paths"].default)
    assert points <= allowed, points - allowed
    host_root_dev = next(f[2] for f in _mountinfo() if f[4] == "/")
    assert [f[4] for f in mounts if f[2] == host_root_dev] == ["/"]
    assert not [f for f in mounts if f[4] != "/" and str(root.parent) in " ".join(f)]
    by_point = {f[4]: f for f in mounts}
    assert by_point["/sys"][5].startswith("ro") and by_point["/sys/fs/cgroup"][5].startswith("ro")
    assert "nosuid" in by_point["/proc"][5] and "noexec" in by_point["/proc"][5]


def test_dev_nodes_and_links(root: Path) -> None:
    script = (
        "stat -c '%n %F %t:%T %a' /dev/null /dev/zero /dev/full /dev/random /dev/urandom "
        "/dev/tty; for l in ptmx fd stdin stdout stderr; do readlink /dev/$l; done; "
        "readlink /dev/core || echo no-core; stat -c '%a' /dev/shm; "
        "grep -E ' /dev/(pts|shm) ' /proc/self/mountinfo"
    )
    res = sh(root, script)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    nodes = [("null", "1:3"), ("zero", "1:5"), ("full", "1:7"), ("random", "1:8")]
    nodes += [("urandom", "1:9"), ("tty", "5:0")]
    assert out[:6] == [f"/dev/{n} character special file {mm} 666" for n, mm in nodes]
    links = ["pts/ptmx", "/proc/self/fd"] + [f"/proc/self/fd/{n}" for n in range(3)]
    assert out[6:11] == links
    assert out[11] == ("/proc/kcore" if os.path.exists("/proc/kcore") else "no-core")
    assert out[12] == "1777"
    assert "ptmxmode=666" in res.stdout and "mode=620" in res.stdout and "gid=5" in res.stdout


# Masked files this kernel has (it may lack /proc/kcore or /proc/sysrq-trigger).
MASKED_FILES = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list") if os.path.exists(p)]
RO_PROBES = [
    p
    for p in ("/proc/sysrq-trigger", "/proc/sys/kernel/core_pattern", "/sys/kernel/profiling")
    if os.path.exists(p)
]


def test_proc_and_sys_read_only_and_masked(root: Path) -> None:
    # Open for append, never write (reliability-security.md §0.2).
    script = (
        f"for f in {' '.join(RO_PROBES)}; do (exec 3>>$f) 2>&1; done; "
        "touch /sys/fs/cgroup/x /sys/firmware/x 2>&1; "
        f"cat {' '.join(MASKED_FILES)} | wc -c; stat -c '%n %t:%T' {' '.join(MASKED_FILES)}; "
        "ls -A /proc/acpi /sys/firmware; echo end"
    )
    res = sh(root, script)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    n = len(RO_PROBES) + 2
    assert [ln for ln in out[:n] if "Read-only file system" in ln] == out[:n]
    assert out[n] == "0"
    assert out[n + 1 : n + 1 + len(MASKED_FILES)] == [f"{p} 1:3" for p in MASKED_FILES]
    assert out[n + 1 + len(MASKED_FILES) :] == ["/proc/acpi:", "", "/sys/firmware:", "end"]


def test_default_capabilities(root: Path) -> None:
    res = sh(root, "grep -E 'Cap|NoNewPrivs' /proc/self/status")
    assert res.returncode == 0, res.stderr
    assert caps_of(res.stdout) == {
        "CapInh": "0" * 16,
        "CapPrm": DEFAULT_MASK,
        "CapEff": DEFAULT_MASK,
        "CapBnd": DEFAULT_MASK,
        "CapAmb": "0" * 16,
    }
    assert "NoNewPrivs:\t0" in res.stdout


def test_numeric_user_has_no_effective_caps_and_is_not_a_name(root: Path) -> None:
    res = sh(root, "id -u; id -g; echo $HOME; grep Cap /proc/self/status", user="1000")
    assert res.returncode == 0, res.stderr
    uid, gid, home, *_ = res.stdout.splitlines()
    assert (uid, gid, home) == ("1000", "0", "/")  # not the image's user *named* 1000 (uid 0)
    caps = caps_of(res.stdout)
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapInh"] == "0" * 16
    assert caps["CapBnd"] == DEFAULT_MASK


def test_named_user_gets_container_groups_and_home(root: Path) -> None:
    res = sh(root, "id -u; id -G; echo $HOME; pwd; stat -c %u:%g .", user="foo", cwd="/home/foo/w")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["1001", "1001 2000", "/home/foo", "/home/foo/w", "1001:1001"]


def test_unknown_user_is_refused(root: Path) -> None:
    res = sh(root, "true", user="nobody")
    assert res.returncode == 125
    assert "unable to find user nobody: no matching entries in passwd file" in res.stderr


def test_privileged_gets_what_the_host_holds(root: Path) -> None:
    held = security.held_caps()
    caps = capabilities.effective((), (), privileged=True, held=held)
    script = "grep Cap /proc/self/status; stat -c %F /proc/keys; grep ' /sys ' /proc/self/mountinfo"
    res = sh(root, script, caps=caps, privileged=True)
    assert res.returncode == 0, res.stderr
    got = caps_of(res.stdout)
    assert int(got["CapBnd"], 16) == held == int(got["CapEff"], 16)
    assert "regular" in res.stdout  # not masked
    assert " /sys rw," in res.stdout


def test_rlimits_signals_and_umask(root: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = (Rlimit("nofile", 100, min(200, hard)),)
    res = sh(
        root,
        "ulimit -n; ulimit -Hn; grep -E 'Sig(Ign|Blk)' /proc/self/status; umask",
        rlimits=limits,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout.split()
    assert out[:2] == ["100", str(min(200, hard))]
    # Python ignores SIGPIPE and SIGXFSZ; the container's process must not inherit that.
    assert out[2:] == ["SigBlk:", "0" * 16, "SigIgn:", "0" * 16, "0022"]
    too_high = (Rlimit("nofile", 100, hard + 1),)
    res = sh(root, "true", rlimits=too_high)
    assert res.returncode == 125
    assert "above the current hard limit" in res.stderr


def test_no_new_privileges(root: Path) -> None:
    res = sh(root, "grep NoNewPrivs /proc/self/status", no_new_privileges=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["NoNewPrivs:", "1"]


def test_only_stdio_fds_reach_the_process(root: Path, tmp_path: Path) -> None:
    res = sh(root, "ls /proc/self/fd", leak=tmp_path)
    assert res.returncode == 0, res.stderr
    fds = set(res.stdout.split())
    assert {"0", "1", "2"} <= fds <= {"0", "1", "2", "3"}  # 3: ls reading the directory


def test_cwd_through_a_leaked_fd_is_refused(root: Path, tmp_path: Path) -> None:
    res = sh(root, "ls ../../..", cwd=f"/proc/self/fd/{LEAK_FD}", leak=tmp_path)
    assert res.returncode == 125
    assert security.BREAKOUT in res.stderr
    assert res.stdout == ""


def test_symlinks_in_the_image_stay_inside(root: Path, tmp_path: Path) -> None:
    canary = tmp_path / "host-canary"
    canary.write_text(f"canary {time.time_ns()}\n")
    canary_dir = tmp_path / "host-canary-dir"
    canary_dir.mkdir()
    (canary_dir / "hello").write_text("hello\n")
    before = (canary.read_text(), canary.stat().st_mtime_ns, sorted(os.listdir(canary_dir)))
    climb = "/" + "../" * 6
    (root / "etc/hosts").symlink_to(climb + str(canary).lstrip("/"))
    (root / "data").symlink_to(climb + str(canary_dir).lstrip("/"))
    hosts = tmp_path / "bundle-hosts"
    hosts.write_text("127.0.0.1 box\n")
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "volfile").write_text("v\n")
    mounts = (
        Mount("/etc/hosts", source=str(hosts), readonly=True),
        Mount("/data", source=str(vol), readonly=True),
    )
    res = sh(root, "cat /etc/hosts; ls /data; touch /data/x 2>&1; echo end", mounts=mounts)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert out[:2] == ["127.0.0.1 box", "volfile"]
    assert "Read-only file system" in out[2]
    after = (canary.read_text(), canary.stat().st_mtime_ns, sorted(os.listdir(canary_dir)))
    assert after == before
    assert os.listdir(vol) == ["volfile"]
    assert not (root / "etc/hosts").is_symlink()  # replaced by a real file, as an init layer
    assert (root / str(canary_dir).lstrip("/")).is_dir()  # /data landed inside the rootfs


@pytest.mark.parametrize("name", ["proc", "sys"])
def test_proc_or_sys_symlink_refused(root: Path, tmp_path: Path, name: str) -> None:
    (root / name).rmdir()
    (root / name).symlink_to(str(tmp_path))
    res = sh(root, "true")
    assert res.returncode == 125
    assert f"mount destination /{name} must be an ordinary directory" in res.stderr


def test_mknod_needs_cap_mknod(root: Path) -> None:
    ok = sh(root, "mknod /tmp/blk b 7 0 && stat -c %F /tmp/blk")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "block special file"
    no_mknod = capabilities.effective((), ["mknod"], privileged=False, held=0)
    refused = sh(root, "mknod /tmp/blk2 b 7 0 2>&1", caps=no_mknod)
    assert refused.returncode != 0
    assert "Operation not permitted" in refused.stdout


def test_missing_command_and_bind_source(root: Path, tmp_path: Path) -> None:
    res = run(spec_for(root, "nope"))
    assert res.returncode == 125
    assert 'exec: "nope": executable file not found in $PATH' in res.stderr
    missing = tmp_path / "no-such-dir"
    res = sh(root, "true", mounts=(Mount("/data", source=str(missing)),))
    assert res.returncode == 125
    assert f"bind source path does not exist: {missing}" in res.stderr


def test_readonly_rootfs_sysctl_devices_and_tmpfs(root: Path) -> None:
    host_shmmax = Path("/proc/sys/kernel/shmmax").read_text()
    script = (
        "touch /x 2>&1; cat /proc/sys/kernel/shmmax; touch /dev/shm/ok && echo shm-ok; "
        "stat -c '%t:%T %a %u' /dev/mydev; stat -c %a /scratch; touch /scratch/f && echo tmp-ok"
    )
    res = sh(
        root,
        script,
        readonly_rootfs=True,
        sysctls={"kernel.shmmax": "123456789"},
        devices=(Device("/dev/mydev", "c", 1, 3, 0o600, 1001, 0),),
        mounts=(Mount("/scratch", "tmpfs", options=("size=1m", "mode=1777", "noexec")),),
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert "Read-only file system" in out[0]
    assert out[1:] == ["123456789", "shm-ok", "1:3 600 1001", "1777", "tmp-ok"]
    assert Path("/proc/sys/kernel/shmmax").read_text() == host_shmmax


def test_host_network_binds_host_sys_read_only(root: Path) -> None:
    res = sh(root, "grep -E ' /sys ' /proc/self/mountinfo", namespaces=("mnt", "uts", "ipc", "pid"))
    assert res.returncode == 0, res.stderr
    assert " /sys ro," in res.stdout


def test_bad_sysctl_is_refused_before_anything(root: Path) -> None:
    res = sh(root, "true", sysctls={"kernel.core_pattern": "|/x"})
    assert res.returncode == 125
    assert "sysctl kernel.core_pattern is not allowed" in res.stderr


def test_tty_console_is_the_pty(root: Path) -> None:
    """The terminal is pts 0 of the container's own devpts, also bound on /dev/console."""
    script = "tty; stat -L -c %t:%T /dev/console /dev/pts/0 /proc/self/fd/0; stty size"
    res = sh(root, script, tty=True, console_size=(33, 77))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.replace("\r", "").split("\n")
    assert lines[:5] == ["/dev/pts/0", "88:0", "88:0", "88:0", "33 77"], res.stdout


def test_nothing_propagates_from_a_shared_host_mount(shared_dir: Path, tmp_path: Path) -> None:
    top = shared_dir / "rootfs"
    build_rootfs(top)
    vol = tmp_path / "vol"
    vol.mkdir()
    mounts = (Mount("/data", source=str(vol)), Mount("/scratch", "tmpfs"))
    res = run(spec_for(top, "sh", "-c", "grep -c . /proc/self/mountinfo", mounts=mounts))
    assert res.returncode == 0, res.stderr
    assert int(res.stdout) >= 10  # the container did mount its file systems ...
    under = [f[4] for f in _mountinfo() if _under(f[4], str(shared_dir))]
    assert under == [str(shared_dir)]  # ... and none of them reached the host's peer group
