"""overlay beyond the shared suite: Docker overlay2 layout, deep chains, whiteouts on disk."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.graph.mounts import MNT_DETACH, LibcMounter
from drivers.graph.overlay import MAX_DEPTH, OverlayDriver
from engine.errors import FailedPrecondition, NotSupported
from tests.linux import graphdriver_suite as suite
from tests.linux.graphdriver_suite import is_mounted, mounts_under, new_id, tar_of, write_layer

# The suite's fixtures, used here by name.
driver, graph_root = suite.driver, suite.graph_root


@pytest.fixture
def driver_name() -> str:
    """This module tests overlay only."""
    return "overlay"


def chain(drv: OverlayDriver, depth: int) -> list[str]:
    """Create *depth* layers, each on the previous, each adding file f<i>."""
    ids: list[str] = []
    for i in range(depth):
        layer = new_id()
        drv.create(layer, ids[-1] if ids else "")
        (drv.home / layer / "diff" / f"f{i}").write_text(str(i))  # straight into the upper dir
        ids.append(layer)
    return ids


def test_layout_is_overlay2(driver: OverlayDriver) -> None:
    a, b, c = chain(driver, 3)
    home = driver.home
    for layer in (a, b, c):
        assert {p.name for p in (home / layer).iterdir()} >= {"diff", "link", "work", "merged"}
        link = (home / layer / "link").read_text()
        assert len(link) == 26
        assert os.readlink(home / "l" / link) == f"../{layer}/diff"
    assert not (home / a / "lower").exists()
    link_a, link_b = ((home / x / "link").read_text() for x in (a, b))
    assert (home / b / "lower").read_text() == f"l/{link_a}"
    assert (home / c / "lower").read_text() == f"l/{link_b}:l/{link_a}"
    assert driver.get(a) == home / a / "diff"  # a base layer has nothing to stack
    driver.put(a)


@pytest.mark.parametrize("depth", [64, MAX_DEPTH + 1])
def test_deep_chain_mounts_and_shows_every_layer(driver: OverlayDriver, depth: int) -> None:
    ids = chain(driver, depth)  # MAX_DEPTH + 1 layers: the deepest allowed
    # Layer 10 deletes layer 3's file with an overlay whiteout.
    os.mknod(driver.home / ids[10] / "diff" / "f3", stat.S_IFCHR, os.makedev(0, 0))
    root = driver.get(ids[-1])
    try:
        assert is_mounted(root)
        names = set(os.listdir(root))
        assert names == {f"f{i}" for i in range(depth)} - {"f3"}
        assert (root / f"f{depth - 1}").read_text() == str(depth - 1)
    finally:
        driver.put(ids[-1])
    assert not is_mounted(root)


def test_chain_deeper_than_the_limit_is_refused(driver: OverlayDriver) -> None:
    ids = chain(driver, MAX_DEPTH + 1)
    with pytest.raises(FailedPrecondition):
        driver.create(new_id(), ids[-1])


def test_apply_diff_writes_overlay_whiteouts(driver: OverlayDriver) -> None:
    parent, child = new_id(), new_id()
    driver.create(parent)
    write_layer(driver, parent, {"gone": "g", "dir/old": "o"})
    driver.create(child, parent)
    tar = tar_of([(".wh.gone", b""), ("dir", None), ("dir/.wh..wh..opq", b""), ("dir/n", b"n")])
    driver.apply_diff(child, parent, tar)
    diff = driver.home / child / "diff"
    whiteout = os.lstat(diff / "gone")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(diff / "dir", "trusted.overlay.opaque") == b"y"
    assert not any(name.startswith(".wh.") for _, _, files in os.walk(diff) for name in files)


def test_apply_diff_refuses_a_mounted_layer(driver: OverlayDriver) -> None:
    parent, child = new_id(), new_id()
    driver.create(parent)
    driver.create(child, parent)
    driver.get(child)
    try:
        with pytest.raises(FailedPrecondition):
            driver.apply_diff(child, parent, tar_of([("f", b"x")]))
    finally:
        driver.put(child)


def test_leftovers_are_collected_at_start(driver: OverlayDriver) -> None:
    (driver.home / "tmp-crashed" / "diff").mkdir(parents=True)
    (driver.home / "removing-crashed").mkdir()
    os.symlink("../nowhere/diff", driver.home / "l" / "DANGLING")
    again = OverlayDriver(driver.home, [])
    assert not (again.home / "tmp-crashed").exists()
    assert not (again.home / "removing-crashed").exists()
    assert not os.path.lexists(again.home / "l" / "DANGLING")


def test_a_mount_left_by_a_dead_daemon_is_reused(driver: OverlayDriver, graph_root: Path) -> None:
    _, child = chain(driver, 2)
    driver.get(child)  # never put: the "dead daemon" holds it
    successor = OverlayDriver(driver.home, [])
    root = successor.get(child)
    assert mounts_under(graph_root) == [str(root)]
    successor.put(child)
    assert not is_mounted(root)


@pytest.fixture
def overlay_mount() -> Iterator[Path]:
    """An overlay mounted in a temp dir, for testing the backing-fs check."""
    work = Path(tempfile.mkdtemp(prefix="graphtest-ovl-"))
    for sub in ("lower", "upper", "work", "merged"):
        (work / sub).mkdir()
    data = f"lowerdir={work}/lower,upperdir={work}/upper,workdir={work}/work"
    try:
        LibcMounter().mount("overlay", work / "merged", "overlay", 0, data)
    except OSError as exc:
        shutil.rmtree(work)
        pytest.skip(f"cannot mount overlay here: {exc}")
    try:
        yield work / "merged"
    finally:
        LibcMounter().unmount(work / "merged", MNT_DETACH)
        shutil.rmtree(work)


def test_refuses_to_run_on_overlay(overlay_mount: Path) -> None:
    if "overlay" not in Path("/proc/filesystems").read_text():
        pytest.skip("overlay not in /proc/filesystems")
    with pytest.raises(NotSupported, match="over overlay"):
        OverlayDriver(overlay_mount / "overlay", [])
