"""graph/archive/copy.py as root: owners (copyUIDGID), device nodes, read-only mounts (CP-06),
the symlink-exchange race (CP-02), numeric owners without NSS (CP-04), and ``/proc/<pid>/root``
of a process in its own mount namespace, which is what the daemon passes for a running container.

tmp_path/"root" is the container root; mounts made under it are undone by the ``mounts``
fixture, processes started here are killed by PID.
"""

from __future__ import annotations

import ctypes
import io
import os
import shlex
import shutil
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.errors import FailedPrecondition, InvalidArgument, NotFound
from graph.archive.copy import archive_path, extract_to, stat_path
from tests.unit.test_archive_kit import Member, build, dir_, hard, node, reg, sym

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chown, mount, unshare")

CANARY = b"HOST CANARY " + uuid.uuid4().hex.encode()
AT_FDCWD = -100
RENAME_EXCHANGE = 2

Mount = Callable[..., None]


def get(root: Path, path: str) -> bytes:
    out = io.BytesIO()
    archive_path(root, path, out)
    return out.getvalue()


def put(root: Path, path: str, *items: Member, **options: bool) -> None:
    extract_to(root, path, io.BytesIO(build(*items)), **options)


def names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getnames()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    top = tmp_path / "root"
    for d in ("etc", "tmp", "vol", "dev"):
        (top / d).mkdir(parents=True)
    (top / "etc/hostname").write_bytes(b"container\n")
    return top


@pytest.fixture
def mounts() -> Iterator[Mount]:
    """``mount(target, *args)`` runs ``mount *args target``; every mount is undone at the end."""
    done: list[Path] = []

    def mount(target: Path, *args: str) -> None:
        subprocess.run(["mount", *args, str(target)], check=True, capture_output=True)
        done.append(target)

    try:
        yield mount
    finally:
        for target in reversed(done):
            subprocess.run(["umount", str(target)], check=False, capture_output=True)


def owned(item: Member) -> Member:
    """Give *item* owner 1234:5678 with names that NSS would map to 0."""
    info, data = item
    info.uid, info.gid, info.uname, info.gname = 1234, 5678, "root", "root"
    return info, data


def test_owners_are_root_unless_copy_uid_gid(root: Path) -> None:
    items = [
        owned(m)
        for m in (
            dir_("d"),
            reg("d/f", b"f"),
            sym("d/s", "f"),
            hard("d/h", "d/f"),
            reg("implied/parents/g", b"g"),
        )
    ]
    (root / "a").mkdir()
    (root / "b").mkdir()
    put(root, "/a", *items)
    put(root, "/b", *items, copy_uid_gid=True)
    for name in ("d", "d/f", "d/s", "d/h", "implied/parents/g"):
        st_a, st_b = os.lstat(root / "a" / name), os.lstat(root / "b" / name)
        assert (st_a.st_uid, st_a.st_gid) == (0, 0), name
        assert (st_b.st_uid, st_b.st_gid) == (1234, 5678), name  # the names are never looked up
    assert (root / "b/implied").stat().st_uid == 0  # dirs the tar only implies belong to root


def test_device_nodes_round_trip(root: Path) -> None:
    os.mknod(root / "dev/null", 0o20666, os.makedev(1, 3))
    with tarfile.open(fileobj=io.BytesIO(get(root, "/dev"))) as tf:
        info = tf.getmember("dev/null")
        assert info.ischr() and (info.devmajor, info.devminor) == (1, 3)
    put(root, "/tmp", node("zero", tarfile.CHRTYPE, 1, 5))
    assert os.lstat(root / "tmp/zero").st_rdev == os.makedev(1, 5)


def test_cp06_read_only_volume(root: Path, mounts: Mount) -> None:
    """CP-06: a :ro volume (TestCpToErrReadOnlyVolume): a clear error, nothing written."""
    mounts(root / "vol", "-t", "tmpfs", "-o", "ro,size=1m", "none")
    os.symlink("/vol", root / "to-vol")
    for path in ("/vol", "/to-vol"):
        body = io.BytesIO(build(reg("x", b"x")))
        with pytest.raises(FailedPrecondition, match="^mounted volume is marked read-only$"):
            extract_to(root, path, body)
        assert body.tell() == 0
    # Through the rootfs: the check at the extraction point passes, the entry hits EROFS.
    with pytest.raises(FailedPrecondition, match="read-only.*'vol/x'"):
        put(root, "/", reg("vol/x", b"x"))
    assert os.listdir(root / "vol") == []


def test_cp06_read_only_rootfs_mount(root: Path, mounts: Mount) -> None:
    """CP-06: a rootfs mounted read-only (a running --read-only container)."""
    mounts(root, "--bind", str(root))
    subprocess.run(["mount", "-o", "remount,bind,ro", str(root)], check=True)
    with pytest.raises(FailedPrecondition, match="^container rootfs is marked read-only$"):
        put(root, "/tmp", reg("x", b"x"))
    assert os.listdir(root / "tmp") == []
    assert "etc/hostname" in names(get(root, "/etc"))  # reading still works


def test_cp06_symlink_in_volume_to_read_only_rootfs(root: Path, mounts: Mount) -> None:
    """TestPutContainerArchiveErrSymlinkInVolumeToReadOnlyRootfs: the link is followed first."""
    mounts(root / "vol", "-t", "tmpfs", "-o", "size=1m", "none")
    os.symlink("/tmp", root / "vol/lnk")
    put(root, "/vol", reg("ok", b"ok"), rootfs_read_only=True)
    assert (root / "vol/ok").read_bytes() == b"ok"
    with pytest.raises(FailedPrecondition, match="^container rootfs is marked read-only$"):
        put(root, "/vol/lnk", reg("x", b"x"), rootfs_read_only=True)
    assert os.listdir(root / "tmp") == []


def test_cp04_numeric_owners_with_container_nss(root: Path, tmp_path: Path) -> None:
    """CP-04: a container NSS module that would leave a canary is never loaded."""
    canary = tmp_path / "nss-canary"
    lib = root / "lib/x86_64-linux-gnu/libnss_files.so.2"
    lib.parent.mkdir(parents=True)
    (root / "etc/nsswitch.conf").write_text("passwd: files\ngroup: files\n")
    src = tmp_path / "nss.c"
    src.write_text(
        "#include <stdio.h>\n__attribute__((constructor)) static void hit(void) {"
        f' FILE *f = fopen("{canary}", "w"); if (f) fclose(f); }}\n'
    )
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    put(
        root,
        "/tmp",
        reg("f", b"f", uid=4321, gid=4321, uname="root", gname="root"),
        copy_uid_gid=True,
    )
    st = os.lstat(root / "tmp/f")
    assert (st.st_uid, st.st_gid) == (4321, 4321)
    os.chown(root / "etc/hostname", 0, 0)  # a name lookup would give "root"
    with tarfile.open(fileobj=io.BytesIO(get(root, "/"))) as tf:
        for info in tf:
            assert (info.uname, info.gname) == ("", ""), info.name
        assert tf.getmember("/tmp/f").uid == 4321  # GET / names entries /etc, /tmp, ...
    assert not canary.exists()


def _exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, bytes(a), AT_FDCWD, bytes(b), RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@pytest.mark.slow
def test_cp02_symlink_exchange_race(root: Path, tmp_path: Path) -> None:
    """CP-02 (CVE-2018-15664): /w/x flips between a dir and a symlink to "/" while we copy."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_bytes(CANARY)
    (root / "w/x").mkdir(parents=True)
    os.symlink("/", root / "w/y")
    tag = uuid.uuid4().hex
    stop, flips = threading.Event(), [0]

    def flip() -> None:
        while not stop.is_set():
            _exchange(root / "w/x", root / "w/y")
            flips[0] += 1

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    landed = 0
    deadline = time.monotonic() + 10
    try:
        for i in range(100):
            if time.monotonic() > deadline:
                break
            try:
                put(root, "/w/x", reg(f"pwned-{tag}-{i}", CANARY[:4]))
                landed += 1
            except (NotFound, InvalidArgument):
                pass
            for path in ("/w/x", "/w/x/", "/w/x/etc/hostname", f"/w/x{host}/secret"):
                try:
                    data = get(root, path)
                except NotFound:
                    continue
                assert CANARY not in data, path
            with pytest.raises(NotFound):
                put(root, f"/w/x{host}", reg("planted", b"x"))
    finally:
        stop.set()
        flipper.join()
        leaked = [n for n in os.listdir("/") if n.startswith(f"pwned-{tag}")]
        for name in leaked:
            os.unlink(Path("/", name))
    assert not leaked and os.listdir(host) == ["secret"]
    assert flips[0] > 0 and landed > 0
    found = list(root.rglob(f"pwned-{tag}-*"))
    assert len(found) == landed  # every PUT landed inside the root


def test_proc_pid_root_sees_the_container_mount_namespace(tmp_path: Path) -> None:
    """A running container's root is /proc/<pid>/root: its mounts are visible, not the host's."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (
        f"mount -t tmpfs none {shlex.quote(str(mnt))} && echo inner > {shlex.quote(str(mnt))}/inner"
        " && echo ready && exec sleep 30"
    )
    proc = subprocess.Popen(["unshare", "-m", "sh", "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        root = Path(f"/proc/{proc.pid}/root")
        assert stat_path(root, f"{mnt}/inner").size == 6
        with tarfile.open(fileobj=io.BytesIO(get(root, f"{mnt}/inner"))) as tf:
            member = tf.extractfile("inner")
            assert member is not None and member.read() == b"inner\n"
        with pytest.raises(NotFound):
            get(Path("/"), f"{mnt}/inner")  # the host does not see the namespace's tmpfs
        put(root, str(mnt), reg("put-file", b"p"), sym("up", "/"))
        assert os.listdir(mnt) == []
        assert sorted(names(get(root, f"{mnt}/."))) == [".", "./inner", "./put-file", "./up"]
        # A link to "/" inside the namespace resolves to the namespace's root, not past it.
        assert "inner" in names(get(root, f"{mnt}/up{mnt}/inner"))
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_proc_pid_root_after_pivot_root(tmp_path: Path) -> None:
    """As runc leaves it: the process pivot_root()ed into the rootfs and dropped the old root."""
    if not os.path.exists("/bin/busybox"):
        pytest.skip("needs /bin/busybox (package busybox-static) to run inside the new root")
    top = tmp_path / "rootfs"
    for d in ("bin", "old", "data", "etc"):
        (top / d).mkdir(parents=True)
    (top / "etc/hostname").write_bytes(b"container\n")
    shutil.copy("/bin/busybox", top / "bin/busybox")
    bb, q = "/bin/busybox", shlex.quote(str(top))
    script = (
        f"mount --bind {q} {q} && cd {q} && pivot_root . old && {bb} umount -l /old"
        f" && {bb} mount -t tmpfs none /data && {bb} echo ready && exec {bb} sleep 30"
    )
    proc = subprocess.Popen(["unshare", "-m", "sh", "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        root = Path(f"/proc/{proc.pid}/root")
        put(root, "/data", reg("x/y", b"y"), sym("host", str(tmp_path)))
        assert os.listdir(top / "data") == []  # written to the namespace's tmpfs only
        assert sorted(names(get(root, "/data/."))) == [".", "./host", "./x", "./x/y"]
        assert stat_path(root, "/data/host").link_target == str(tmp_path)  # dangling in there
        with pytest.raises(NotFound):
            get(root, "/data/host/")
        assert "hostname" in names(get(root, "/etc/hostname"))
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
