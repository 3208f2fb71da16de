"""The store checker on a real data root with the overlay driver: layers registered from tar files
(a busybox base, a child on it), an image and a container's layers check clean, also while the
image's top layer is mounted; damage to the driver's files is found."""

from __future__ import annotations

import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.graph import select
from drivers.graph.overlay import OverlayDriver
from engine.errors import NotSupported
from graph.containers import ContainerStore
from graph.db import GraphDB
from graph.fsck import check, driver_layers
from graph.imageconfig import encode, new_config
from graph.images import Image, ImageStore
from graph.layers import Layer, LayerStore
from graph.reference import parse
from tests.linux.graphdriver_suite import mounts_under

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: overlay mounts, ownership of layer files"
)

BUSYBOX = Path("/bin/busybox")
CID = "c" * 64


@dataclass
class Root:
    path: Path
    db: GraphDB
    driver: OverlayDriver
    layers: LayerStore
    base: Layer
    child: Layer
    image: Image


def tar_file(path: Path, tree: Path) -> Path:
    """Write the tree at *tree* as a layer tar at *path* (entries relative to the tree)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for entry in sorted(tree.rglob("*")):
            tf.add(entry, arcname=str(entry.relative_to(tree)), recursive=False)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Root]:
    """A data root as the daemon lays it out, holding one image and one container's layers."""
    if not BUSYBOX.exists():
        pytest.skip("needs /bin/busybox (package busybox-static)")
    data = tmp_path / "root"
    (data / "tmp").mkdir(parents=True)
    try:
        driver = select(data, (), {}, name="overlay")
    except NotSupported as exc:
        pytest.skip(f"overlay: {exc}")
    assert isinstance(driver, OverlayDriver)
    db = GraphDB(data / "graph.db")
    try:
        layers = LayerStore(db, driver, data / "layertars")
        tree = tmp_path / "busybox"
        (tree / "bin").mkdir(parents=True)
        shutil.copy2(BUSYBOX, tree / "bin" / "busybox")
        for applet in ("sh", "ls", "cat"):
            (tree / "bin" / applet).symlink_to("busybox")
        # As a pull does: the tar is a file in tmp/ and is linked into the store.
        base = layers.register_file(tar_file(data / "tmp" / "base.tar", tree))
        (data / "tmp" / "base.tar").unlink()
        extra = tmp_path / "extra"
        (extra / "etc").mkdir(parents=True)
        (extra / "etc" / "motd").write_text("hello\n")
        child = layers.register_file(tar_file(data / "tmp" / "child.tar", extra), base.id)
        (data / "tmp" / "child.tar").unlink()
        images = ImageStore(db)
        image = images.add(encode(new_config([base.diff_id, child.diff_id], "test")), [base, child])
        images.tag(image.id, parse("busybox:fsck"))
        ContainerStore(db, data / "containers").reserve(CID, "box", image.id, time.time())
        driver.create(f"{CID}-init", child.id)
        driver.create(CID, f"{CID}-init")
        yield Root(data, db, driver, layers, base, child, image)
    finally:
        db.close()
        driver.cleanup()
        assert not mounts_under(tmp_path), "the driver left mounts behind"


def test_real_store_checks_clean_also_while_mounted(root: Root) -> None:
    assert driver_layers(root.driver) == {root.base.id, root.child.id, CID, f"{CID}-init"}
    assert check(root.db, root.layers, root.path, deep=True) == []
    merged = root.driver.get(root.child.id)
    try:
        assert (merged / "bin" / "busybox").is_file() and (merged / "etc" / "motd").is_file()
        assert check(root.db, root.layers, root.path, deep=True) == []
    finally:
        root.driver.put(root.child.id)


def test_removed_overlay_dir_is_reported(root: Root) -> None:
    shutil.rmtree(root.path / "overlay" / root.child.id)
    problems = check(root.db, root.layers, root.path)
    assert {(p.code, p.subject) for p in problems} == {("I3", root.child.id)}
    assert "overlay" in problems[0].detail


def test_stray_overlay_layer_is_reported(root: Root) -> None:
    orphan = "a" * 64
    root.driver.create(orphan, root.base.id)
    problems = check(root.db, root.layers, root.path)
    assert {(p.code, p.subject) for p in problems} == {("I3", orphan)}
