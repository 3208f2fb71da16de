"""Volumes and mounts: removing a volume never deletes through a file system mounted inside it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import FailedPrecondition
from graph.db import GraphDB
from graph.volumes import VolumeStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mounts a tmpfs")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VolumeStore]:
    db = GraphDB(tmp_path / "graph.db")
    try:
        yield VolumeStore(db, tmp_path / "volumes")
    finally:
        db.close()


@pytest.fixture
def tmpfs_in(store: VolumeStore) -> Iterator[Path]:
    """A tmpfs mounted inside volume ``mounted``'s data, with one file; unmounted at the end."""
    target = Path(store.create("mounted").mountpoint) / "inner dir"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)], check=True)
    try:
        (target / "precious").write_text("keep me")
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_remove_refuses_a_volume_with_a_mount_inside(store: VolumeStore, tmpfs_in: Path) -> None:
    with pytest.raises(FailedPrecondition, match="file systems are mounted in it: .*inner dir"):
        store.remove("mounted", force=True)
    assert (tmpfs_in / "precious").read_text() == "keep me"
    assert store.get("mounted").name == "mounted"
    assert store.prune({"all": ["true"]}) == ([], 0)
    assert (tmpfs_in / "precious").exists()


def test_recover_leaves_a_mounted_orphan(store: VolumeStore, tmpfs_in: Path) -> None:
    with store.db.write() as tx:  # the row gone, as if a crash came between row and files
        tx.execute("DELETE FROM volumes WHERE name = 'mounted'")
    assert store.recover() == []
    assert (tmpfs_in / "precious").read_text() == "keep me"
    subprocess.run(["umount", str(tmpfs_in)], check=True)
    assert store.recover() == ["mounted"]
    assert os.listdir(store.root) == []


def test_remove_as_root_deletes_unreadable_and_foreign_files(store: VolumeStore) -> None:
    data = Path(store.create("owned").mountpoint)
    locked = data / "locked"
    locked.mkdir()
    (locked / "f").write_bytes(b"z" * 100)
    os.chown(locked / "f", 12345, 12345)
    locked.chmod(0)
    assert store.size("owned") == 100
    store.remove("owned")
    assert os.listdir(store.root) == []
