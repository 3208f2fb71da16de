"""btrfs beyond the shared suite: layers are subvolumes, nested subvolumes are removed too."""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

import pytest

from drivers.graph.btrfs import (
    FIRST_FREE_OBJECTID,
    IOC_SUBVOL_CREATE,
    VOL_ARGS,
    BtrfsDriver,
)
from engine.errors import NotSupported
from tests.linux import graphdriver_suite as suite
from tests.linux.graphdriver_suite import new_id, write_layer

# The suite's fixtures, used here by name.
btrfs_mount, driver, graph_root = suite.btrfs_mount, suite.driver, suite.graph_root


@pytest.fixture
def driver_name() -> str:
    """This module tests btrfs only."""
    return "btrfs"


def make_subvolume(parent: Path, name: str) -> None:
    """Create subvolume *name* in *parent* (as a container with CAP_SYS_ADMIN could)."""
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, IOC_SUBVOL_CREATE, bytearray(VOL_ARGS.pack(0, name.encode())))
    finally:
        os.close(fd)


def test_layers_are_subvolumes_and_children_snapshots(driver: BtrfsDriver) -> None:
    parent, child = new_id(), new_id()
    driver.create(parent)
    write_layer(driver, parent, {"f": "x"})
    driver.create(child, parent)
    for layer in (parent, child):
        assert os.stat(driver.get(layer)).st_ino == FIRST_FREE_OBJECTID
        driver.put(layer)
    assert (driver.get(child) / "f").read_text() == "x"
    driver.put(child)


def test_remove_destroys_nested_subvolumes(driver: BtrfsDriver) -> None:
    layer = new_id()
    driver.create(layer)
    root = driver.get(layer)
    (root / "a").mkdir()
    make_subvolume(root / "a", "inner")
    make_subvolume(root / "a" / "inner", "innermost")
    (root / "a" / "inner" / "innermost" / "f").write_text("x")
    driver.put(layer)
    driver.remove(layer)
    assert not driver.exists(layer) and not root.exists()


def test_not_supported_off_btrfs() -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.raises(NotSupported, match="not on btrfs"):
        BtrfsDriver(Path(tmp) / "btrfs", [])
