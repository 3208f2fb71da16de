"""vfs beyond the shared suite: the Python tree copy and atomic layer creation."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from drivers.graph import vfs
from drivers.graph.vfs import VfsDriver
from tests.linux import graphdriver_suite as suite
from tests.linux.graphdriver_suite import new_id, write_layer

# The suite's fixtures, used here by name.
driver, graph_root = suite.driver, suite.graph_root


@pytest.fixture
def driver_name() -> str:
    """This module tests vfs only."""
    return "vfs"


def test_copy_keeps_hardlinks_across_directories_sockets_and_deep_trees(
    driver: VfsDriver,
) -> None:
    parent, child = new_id(), new_id()
    driver.create(parent)
    root = driver.get(parent)
    (root / "a").mkdir()
    (root / "b/c").mkdir(parents=True)
    (root / "a/one").write_text("1")
    os.link(root / "a/one", root / "b/c/two")
    os.link(root / "a/one", root / "three")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "sock"))
    deep = root
    for _ in range(150):
        deep = deep / "d"
    deep.mkdir(parents=True)
    (deep / "leaf").write_text("leaf")
    os.chmod(root / "b", 0o500)  # read-only directory: its children are copied anyway
    driver.create(child, parent)
    copy = driver.get(child)
    inodes = {os.stat(copy / p).st_ino for p in ("a/one", "b/c/two", "three")}
    assert len(inodes) == 1 and os.stat(copy / "three").st_nlink == 3
    assert inodes.isdisjoint({os.stat(root / "a/one").st_ino})  # a copy, not a link
    assert stat.S_ISSOCK(os.lstat(copy / "sock").st_mode)
    assert (copy / deep.relative_to(root) / "leaf").read_text() == "leaf"
    assert stat.S_IMODE(os.stat(copy / "b").st_mode) == 0o500


def test_failed_copy_leaves_no_layer(driver: VfsDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    parent, child = new_id(), new_id()
    driver.create(parent)
    write_layer(driver, parent, {"f": "x"})

    def broken(src: Path, dst: Path) -> None:
        (dst / "partial").write_text("half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vfs, "copy_tree", broken)
    with pytest.raises(OSError):
        driver.create(child, parent)
    assert not driver.exists(child)
    assert sorted(p.name for p in driver.dir.iterdir()) == [parent]
    driver.remove(parent)  # the failed child left no marker that would block this


def test_leftovers_are_collected_at_start(driver: VfsDriver) -> None:
    layer = new_id()
    (driver.dir / f"{layer}.tmp-abc" / "x").mkdir(parents=True)
    (driver.dir / f"{layer}.removing-abc").mkdir()
    again = VfsDriver(driver.home)
    assert list(again.dir.iterdir()) == []
