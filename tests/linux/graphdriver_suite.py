"""Conformance suite every graph driver runs (as moby's graphtest).

``GraphDriverSuite`` holds the tests; a test module subclasses it and provides a ``driver_name``
fixture (``test_graphdriver_conformance.py`` parametrizes it over every registered driver). A
driver raising NotSupported on this host is skipped with its reason. btrfs gets a loop-mounted
btrfs image made for the test session. Every mount a test makes is gone at teardown and every
temporary directory removed.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.graph import NaiveDiffer, base
from drivers.graph.base import Differ, GraphDriver
from drivers.graph.btrfs import destroy_subvolume
from drivers.graph.mounts import MNT_DETACH, LibcMounter
from engine.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, NotSupported
from graph.archive import Change, ChangeKind

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (chown, mknod, trusted.* xattrs)")


def new_id() -> str:
    """Return a fresh, valid layer id."""
    return secrets.token_hex(32)


def mountpoints() -> set[str]:
    """Return every mount point of this mount namespace."""
    points = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            raw = line.split()[4]
            points.add(raw.encode().decode("unicode_escape"))  # \040 etc.
    return points


def mounts_under(path: Path) -> list[str]:
    """Return the mount points at or below *path*."""
    prefix = str(path)
    return sorted(p for p in mountpoints() if p == prefix or p.startswith(prefix + "/"))


def is_mounted(path: Path) -> bool:
    """Return whether *path* is a mount point (by mountinfo: btrfs subvolumes fool ismount)."""
    return str(path) in mountpoints()


def differ_for(driver: GraphDriver) -> Differ:
    """Return the driver's own Differ, or the naive one."""
    return driver if isinstance(driver, Differ) else NaiveDiffer(driver)


def write_layer(driver: GraphDriver, id: str, files: dict[str, str]) -> None:
    """Write *files* (path → text; a trailing "/" makes a directory) into layer *id*."""
    root = driver.get(id)
    try:
        for rel, text in files.items():
            path = root / rel
            if rel.endswith("/"):
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    finally:
        driver.put(id)


def tar_of(entries: list[tuple[str, bytes | None]]) -> io.BytesIO:
    """Build a layer tar: (name, data) is a file, (name, None) a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture(scope="session")
def btrfs_mount() -> Iterator[Path]:
    """A 200 MiB btrfs image, loop-mounted for the session; unmounted and detached at the end."""
    if not IS_ROOT:
        pytest.skip("btrfs: needs root for the loop mount")
    if shutil.which("mkfs.btrfs") is None:
        pytest.skip("btrfs: mkfs.btrfs missing (apt-get install -y btrfs-progs)")
    work = Path(tempfile.mkdtemp(prefix="graphtest-btrfs-"))
    image, mnt = work / "btrfs.img", work / "mnt"
    mnt.mkdir()
    try:
        _run("truncate", "-s", "200M", str(image))
        _run("mkfs.btrfs", "-q", str(image))
        _run("mount", "-o", "loop", str(image), str(mnt))
        try:
            yield mnt
        finally:
            _run("umount", str(mnt))
    finally:
        loops = subprocess.run(
            ["losetup", "-j", str(image)], capture_output=True, text=True, check=False
        ).stdout
        for line in loops.splitlines():  # autoclear normally detaches it already
            subprocess.run(["losetup", "-d", line.split(":")[0]], check=False)
        shutil.rmtree(work)


@pytest.fixture
def graph_root(request: pytest.FixtureRequest, driver_name: str) -> Iterator[Path]:
    """A fresh data root; on the session's btrfs for btrfs, else in the temp dir."""
    parent = request.getfixturevalue("btrfs_mount") if driver_name == "btrfs" else None
    root = Path(tempfile.mkdtemp(prefix="graphtest-", dir=parent))
    try:
        yield root
    finally:
        for point in reversed(mounts_under(root)):  # only after a failed test
            LibcMounter().unmount(Path(point), MNT_DETACH)
        subvolumes = root / "btrfs" / "subvolumes"
        if subvolumes.is_dir():
            for sub in subvolumes.iterdir():
                destroy_subvolume(subvolumes, sub.name)
        shutil.rmtree(root)


@pytest.fixture
def driver(driver_name: str, graph_root: Path) -> Iterator[GraphDriver]:
    """The driver under test in a fresh home; skipped if NotSupported here."""
    registry = base._registry
    try:
        drv = registry.new(driver_name, graph_root, [])
    except NotSupported as exc:
        pytest.skip(f"{driver_name}: {exc}")
    yield drv
    drv.cleanup()
    leftover = mounts_under(graph_root)
    assert not leftover, f"cleanup left mounts: {leftover}"


class GraphDriverSuite:
    """The behaviour every graph driver must show."""

    def test_create_empty(self, driver: GraphDriver) -> None:
        layer = new_id()
        assert not driver.exists(layer)
        driver.create(layer)
        assert driver.exists(layer)
        root = driver.get(layer)
        try:
            assert root.is_dir() and os.listdir(root) == []
            assert stat.S_IMODE(root.stat().st_mode) == 0o755
        finally:
            driver.put(layer)

    def test_create_twice_is_already_exists(self, driver: GraphDriver) -> None:
        layer = new_id()
        driver.create(layer)
        with pytest.raises(AlreadyExists):
            driver.create(layer)

    def test_create_with_missing_parent_is_not_found(self, driver: GraphDriver) -> None:
        layer = new_id()
        with pytest.raises(NotFound):
            driver.create(layer, new_id())
        assert not driver.exists(layer)

    @pytest.mark.parametrize("bad", ["", "../etc", "ABC" * 21 + "D", "a" * 63, "a" * 64 + "/x"])
    def test_invalid_ids_are_refused(self, driver: GraphDriver, bad: str) -> None:
        for call in (driver.create, driver.remove, driver.get, driver.put, driver.exists):
            with pytest.raises(InvalidArgument):
                call(bad)
        if bad:  # "" as parent means "no parent"
            with pytest.raises(InvalidArgument):
                driver.create(new_id(), bad)

    def test_init_layer_id_is_accepted(self, driver: GraphDriver) -> None:
        image, init = new_id(), new_id() + "-init"
        driver.create(image)
        driver.create(init, image)
        assert driver.exists(init)

    def test_child_sees_parent_and_parent_stays_unchanged(self, driver: GraphDriver) -> None:
        parent, child = new_id(), new_id()
        driver.create(parent)
        write_layer(driver, parent, {"etc/hostname": "base\n", "bin/": ""})
        driver.create(child, parent)
        write_layer(driver, child, {"etc/hostname": "child\n", "new": "n"})
        root = driver.get(child)
        try:
            assert (root / "etc/hostname").read_text() == "child\n"
            assert (root / "bin").is_dir() and (root / "new").read_text() == "n"
        finally:
            driver.put(child)
        root = driver.get(parent)
        try:
            assert (root / "etc/hostname").read_text() == "base\n"
            assert not (root / "new").exists()
        finally:
            driver.put(parent)

    def test_files_and_metadata_survive(self, driver: GraphDriver) -> None:
        parent, child = new_id(), new_id()
        driver.create(parent)
        root = driver.get(parent)
        try:
            (root / "dir").mkdir()
            (root / "dir/file").write_text("data")
            os.chmod(root / "dir/file", 0o4751)
            os.symlink("/etc/passwd", root / "abs-link")
            os.symlink("dir/file", root / "rel-link")
            os.link(root / "dir/file", root / "hard")
            os.mkfifo(root / "fifo", 0o640)
            os.setxattr(root / "dir/file", "user.note", b"kept")
            for path in ("dir/file", "dir", "fifo"):
                os.utime(root / path, ns=(1_500_000_000_123_456_789, 1_600_000_000_987_654_321))
            before = {p: os.lstat(root / p) for p in ("dir", "dir/file", "abs-link", "fifo")}
        finally:
            driver.put(parent)
        driver.create(child, parent)
        root = driver.get(child)
        try:
            for path, old in before.items():
                new = os.lstat(root / path)
                assert new.st_mode == old.st_mode, path
                assert new.st_mtime_ns == old.st_mtime_ns, path
            assert stat.S_IMODE(os.stat(root / "dir/file").st_mode) == 0o4751
            assert os.readlink(root / "abs-link") == "/etc/passwd"
            assert (root / "rel-link").read_text() == "data"
            assert os.stat(root / "hard").st_ino == os.stat(root / "dir/file").st_ino
            assert os.stat(root / "dir/file").st_nlink == 2
            assert os.getxattr(root / "dir/file", "user.note") == b"kept"
        finally:
            driver.put(child)

    @needs_root
    def test_owner_devices_and_trusted_xattrs_survive(self, driver: GraphDriver) -> None:
        parent, child = new_id(), new_id()
        driver.create(parent)
        root = driver.get(parent)
        try:
            (root / "owned").write_text("x")
            os.chown(root / "owned", 1000, 1001)
            os.chmod(root / "owned", 0o6755)  # after chown, which clears setuid/setgid
            os.symlink("owned", root / "owned-link")
            os.chown(root / "owned-link", 1002, 1003, follow_symlinks=False)
            os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
            os.mknod(root / "loop9", stat.S_IFBLK | 0o660, os.makedev(7, 9))
            os.setxattr(root / "owned", "trusted.test", b"secret")
        finally:
            driver.put(parent)
        driver.create(child, parent)
        root = driver.get(child)
        try:
            st = os.lstat(root / "owned")
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1001, 0o6755)
            link = os.lstat(root / "owned-link")
            assert (link.st_uid, link.st_gid) == (1002, 1003)
            null = os.lstat(root / "null")
            assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
            loop = os.lstat(root / "loop9")
            assert stat.S_ISBLK(loop.st_mode) and loop.st_rdev == os.makedev(7, 9)
            assert os.getxattr(root / "owned", "trusted.test") == b"secret"
        finally:
            driver.put(child)

    def test_get_put_refcounting(self, driver: GraphDriver) -> None:
        parent, child = new_id(), new_id()
        driver.create(parent)
        driver.create(child, parent)
        first = driver.get(child)
        assert driver.get(child) == first
        mounts = driver.name == "overlay"  # the only built-in that mounts per layer
        assert is_mounted(first) == mounts
        driver.put(child)
        assert is_mounted(first) == mounts and first.is_dir()
        driver.put(child)
        assert not is_mounted(first)

    def test_forget_keeps_the_mount_for_the_next_get(self, driver: GraphDriver) -> None:
        parent, child = new_id(), new_id()
        driver.create(parent)
        driver.create(child, parent)
        first = driver.get(child)
        driver.get(child)
        (first / "kept").write_text("x")
        driver.forget(child)  # a daemon stopping while a container still uses the layer
        mounts = driver.name == "overlay"
        assert is_mounted(first) == mounts and (first / "kept").read_text() == "x"
        assert driver.get(child) == first  # a new daemon takes the mount over
        assert is_mounted(first) == mounts
        driver.put(child)  # one put now releases it: the forgotten gets are gone
        assert not is_mounted(first)

    def test_remove(self, driver: GraphDriver) -> None:
        layer = new_id()
        driver.create(layer)
        write_layer(driver, layer, {"f": "x"})
        driver.remove(layer)
        assert not driver.exists(layer)
        for call in (driver.remove, driver.get):
            with pytest.raises(NotFound):
                call(layer)
        driver.create(layer)  # the id is free again, and empty
        assert os.listdir(driver.get(layer)) == []
        driver.put(layer)

    def test_remove_parent_with_children_is_refused(self, driver: GraphDriver) -> None:
        parent, child = new_id(), new_id()
        driver.create(parent)
        driver.create(child, parent)
        with pytest.raises(FailedPrecondition):
            driver.remove(parent)
        assert driver.exists(parent) and driver.exists(child)
        driver.remove(child)
        driver.remove(parent)
        assert not driver.exists(parent)

    def test_remove_unmounts_a_held_layer(self, driver: GraphDriver) -> None:
        parent, child = new_id(), new_id()
        driver.create(parent)
        driver.create(child, parent)
        path = driver.get(child)
        driver.remove(child)
        assert not driver.exists(child) and not is_mounted(path)

    def test_status(self, driver: GraphDriver) -> None:
        status = driver.status()
        assert status and all(isinstance(k, str) and isinstance(v, str) for k, v in status)

    def test_cleanup_unmounts_everything(self, driver: GraphDriver, graph_root: Path) -> None:
        base_id = new_id()
        driver.create(base_id)
        held = []
        for _ in range(3):
            layer = new_id()
            driver.create(layer, base_id)
            held.append(driver.get(layer))
            driver.get(layer)
        driver.cleanup()
        assert mounts_under(graph_root) == []
        assert not any(is_mounted(p) for p in held)


class DifferSuite:
    """Diff behaviour, through the driver's own Differ or the naive one."""

    def _two_layers(self, driver: GraphDriver) -> tuple[str, str]:
        parent, child = new_id(), new_id()
        driver.create(parent)
        write_layer(driver, parent, {"keep": "k", "mod": "old", "gone": "g", "d/x": "x"})
        driver.create(child, parent)
        root = driver.get(child)
        try:
            (root / "mod").write_text("new content")
            (root / "gone").unlink()
            (root / "add").write_text("a" * 1000)
            (root / "d/y").write_text("y")
        finally:
            driver.put(child)
        return parent, child

    def test_changes(self, driver: GraphDriver) -> None:
        parent, child = self._two_layers(driver)
        changes = set(differ_for(driver).changes(child, parent))
        assert {
            Change("/mod", ChangeKind.MODIFY),
            Change("/gone", ChangeKind.DELETE),
            Change("/add", ChangeKind.ADD),
            Change("/d/y", ChangeKind.ADD),
        } <= changes
        assert not any(c.path in ("/keep", "/d/x") for c in changes)

    def test_changes_of_base_layer_are_all_adds(self, driver: GraphDriver) -> None:
        parent, _ = self._two_layers(driver)
        changes = differ_for(driver).changes(parent)
        assert {c.path for c in changes} >= {"/keep", "/mod", "/gone", "/d", "/d/x"}
        assert {c.kind for c in changes} == {ChangeKind.ADD}

    def test_diff_size(self, driver: GraphDriver) -> None:
        parent, child = self._two_layers(driver)
        assert differ_for(driver).diff_size(child, parent) == 1000 + len("new content") + len("y")

    def test_diff_and_apply_round_trip(self, driver: GraphDriver) -> None:
        parent, child = self._two_layers(driver)
        differ = differ_for(driver)
        with differ.diff(child, parent) as stream:
            data = stream.read()
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            names = tf.getnames()
        assert {"mod", "add", "d/y", ".wh.gone"} <= set(names)
        assert "keep" not in names
        copy = new_id()
        driver.create(copy, parent)
        applied = differ.apply_diff(copy, parent, io.BytesIO(data))
        assert applied.diff_id.startswith("sha256:")
        root = driver.get(copy)
        try:
            assert (root / "mod").read_text() == "new content"
            assert (root / "add").read_text() == "a" * 1000
            assert (root / "d/x").exists() and (root / "d/y").exists()
            assert not (root / "gone").exists() and (root / "keep").exists()
        finally:
            driver.put(copy)
        assert set(differ.changes(copy, parent)) == set(differ.changes(child, parent))

    def test_apply_diff_whiteouts_and_opaque_dirs(self, driver: GraphDriver) -> None:
        parent, child = new_id(), new_id()
        driver.create(parent)
        write_layer(driver, parent, {"gone": "g", "dir/old1": "1", "dir/old2": "2", "kept": ""})
        driver.create(child, parent)
        tar = tar_of(
            [(".wh.gone", b""), ("dir", None), ("dir/.wh..wh..opq", b""), ("dir/new", b"n")]
        )
        differ_for(driver).apply_diff(child, parent, tar)
        root = driver.get(child)
        try:
            assert not (root / "gone").exists() and (root / "kept").exists()
            assert sorted(os.listdir(root / "dir")) == ["new"]
        finally:
            driver.put(child)
        changes = set(differ_for(driver).changes(child, parent))
        assert {
            Change("/gone", ChangeKind.DELETE),
            Change("/dir/old1", ChangeKind.DELETE),
            Change("/dir/old2", ChangeKind.DELETE),
            Change("/dir/new", ChangeKind.ADD),
        } <= changes
