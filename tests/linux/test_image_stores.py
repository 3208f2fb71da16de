"""LayerStore and ImageStore on a real GraphDB and a real graph driver (vfs and overlay).

Each test gets a fresh data root in ``tmp_path``: ``graph.db``, the driver's home and the layer
tars. Layers are small tars built here with tarfile; the driver's mounts are released at
teardown.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from drivers.graph import GraphDriver, select
from engine import Engine
from engine.errors import FailedPrecondition, InvalidArgument, NotSupported
from graph.db import GraphDB
from graph.imageconfig import encode, new_config
from graph.images import Image, ImageNotFound, ImageStore, image_id
from graph.layers import Layer, LayerStore, chain_id
from graph.reference import parse
from jobs import imagegraph
from jobs import images as jobs_images
from jobs.services import IMAGES, LAYERS
from tests.linux.graphdriver_suite import mounts_under

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: overlay mounts, ownership of layer files"
)

HEX64 = re.compile(r"[0-9a-f]{64}")
MTIME = 1_700_000_000


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(params=["vfs", "overlay"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphDriver]:
    """The graph driver under test, in ``tmp_path``; skipped where it cannot run."""
    try:
        drv = select(tmp_path, (), {}, name=request.param)
    except NotSupported as exc:
        pytest.skip(f"{request.param}: {exc}")
    yield drv
    drv.cleanup()
    assert not mounts_under(tmp_path), "the driver left mounts behind"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[GraphDB]:
    graph = GraphDB(tmp_path / "graph.db")
    yield graph
    graph.close()


@pytest.fixture
def layers(db: GraphDB, driver: GraphDriver, tmp_path: Path) -> LayerStore:
    return LayerStore(db, driver, tmp_path / "layertars")


@pytest.fixture
def images(db: GraphDB) -> ImageStore:
    return ImageStore(db)


# --- helpers --------------------------------------------------------------------------------


def tar_bytes(files: dict[str, bytes | None]) -> bytes:
    """A layer tar: name → content, or None for a directory; fixed mtime, root-owned."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Unreadable(io.RawIOBase):
    """A stream that fails the test if anything reads it."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> int:
        raise AssertionError("the layer was read although its diff_id is already stored")


def rows(db: GraphDB, table: str) -> list[dict[str, object]]:
    return db.query(f"SELECT * FROM {table}")


def driver_layer_dirs(driver: GraphDriver, tmp_path: Path) -> list[str]:
    """Every layer directory the driver keeps (64-hex names), wherever its layout puts them."""
    home = tmp_path / driver.name
    found = []
    for sub in (home, home / "dir", home / "subvolumes"):
        if sub.is_dir():
            found += [p.name for p in sub.iterdir() if HEX64.fullmatch(p.name)]
    return sorted(found)


def config_for(diff_ids: list[str], comment: str = "") -> bytes:
    return encode(new_config(diff_ids, "test", comment))


def add_image(images: ImageStore, chain: list[Layer], comment: str, parent: str = "") -> Image:
    return images.add(config_for([layer.diff_id for layer in chain], comment), chain, parent)


BASE = tar_bytes({"etc/": None, "etc/hostname": b"base\n", "bin/": None, "bin/sh": b"#!sh\n"})
CHILD = tar_bytes({"etc/": None, "etc/motd": b"hello\n"})


# --- LayerStore -----------------------------------------------------------------------------


def test_plain_gzip_and_zstd_tars_are_one_layer(layers: LayerStore, db: GraphDB) -> None:
    diff_id = digest(BASE)
    plain = layers.register(io.BytesIO(BASE))
    assert plain.diff_id == diff_id and plain.chain_id == diff_id and plain.parent == ""

    # Same content, compressed: applied, found to be the same chain, stored once.
    gz = layers.register(io.BytesIO(gzip.compress(BASE, mtime=0)))
    assert gz == plain
    zst = layers.register(io.BytesIO(zstandard.ZstdCompressor().compress(BASE)))
    assert zst == plain

    # With the diff_id known beforehand nothing is read at all.
    again = layers.register(Unreadable(), diff_id=diff_id)  # type: ignore[arg-type]
    assert again == plain

    assert [r["id"] for r in rows(db, "layers")] == [plain.id]
    assert layers.all() == [plain]
    assert sorted(p.name for p in layers.tars.iterdir()) == [f"{plain.id}.tar"]


@pytest.mark.parametrize("compress", ["plain", "gzip", "zstd"])
def test_kept_tar_is_the_uncompressed_diff(layers: LayerStore, compress: str) -> None:
    blob = {
        "plain": BASE,
        "gzip": gzip.compress(BASE, mtime=0),
        "zstd": zstandard.ZstdCompressor().compress(BASE),
    }[compress]
    layer = layers.register(io.BytesIO(blob), diff_id=digest(BASE))
    kept = layers.tar_path(layer.id).read_bytes()
    assert digest(kept) == layer.diff_id == digest(BASE)
    assert kept == BASE


def test_chain_ids_follow_the_oci_spec(layers: LayerStore) -> None:
    base = layers.register(io.BytesIO(BASE))
    child = layers.register(io.BytesIO(CHILD), parent=base.id)
    grandchild_tar = tar_bytes({"srv/": None})
    grandchild = layers.register(io.BytesIO(grandchild_tar), parent=child.id)

    assert base.chain_id == base.diff_id == digest(BASE)
    expected = "sha256:" + hashlib.sha256(f"{base.chain_id} {digest(CHILD)}".encode()).hexdigest()
    assert child.chain_id == expected == chain_id(base.chain_id, child.diff_id)
    assert child.parent == base.id and child.diff_id == digest(CHILD)
    expected = hashlib.sha256(f"{child.chain_id} {digest(grandchild_tar)}".encode()).hexdigest()
    assert grandchild.chain_id == "sha256:" + expected
    assert layers.chain(grandchild.id) == [base, child, grandchild]

    # The same diff on another parent is another layer.
    alone = layers.register(io.BytesIO(CHILD))
    assert alone.id != child.id and alone.chain_id == digest(CHILD)
    assert layers.by_chain(child.chain_id) == child


def test_wrong_diff_id_leaves_nothing(
    layers: LayerStore, db: GraphDB, driver: GraphDriver, tmp_path: Path
) -> None:
    wrong = "sha256:" + "0" * 64
    with pytest.raises(InvalidArgument, match="does not match"):
        layers.register(io.BytesIO(BASE), diff_id=wrong)
    assert rows(db, "layers") == []
    assert driver_layer_dirs(driver, tmp_path) == []
    assert list(layers.tars.iterdir()) == []


def test_not_a_tar_leaves_nothing(
    layers: LayerStore, db: GraphDB, driver: GraphDriver, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArgument):
        layers.register(io.BytesIO(b"this is not a tar archive at all" * 40))
    assert rows(db, "layers") == []
    assert driver_layer_dirs(driver, tmp_path) == []
    assert list(layers.tars.iterdir()) == []


def _snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Path → (type, mode, uid, gid, content or link target, link count) for a tree."""
    found: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                what: object = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what = path.read_bytes()
            else:
                what = None
            found[str(path.relative_to(root))] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                what,
                st.st_nlink if stat.S_ISREG(st.st_mode) else 0,
            )
    return found


def _source_tree(src: Path) -> None:
    (src / "bin").mkdir(mode=0o755)
    (src / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    (src / "bin" / "tool").chmod(0o755)
    (src / "bin" / "su").write_bytes(b"setuid")
    (src / "bin" / "su").chmod(0o4755)
    (src / "etc").mkdir()
    (src / "etc" / "secret").write_bytes(b"s3cret")
    (src / "etc" / "secret").chmod(0o600)
    (src / "etc" / "empty").touch()
    (src / "home" / "user").mkdir(parents=True)
    (src / "home" / "user").chmod(0o700)
    (src / "home" / "user" / "notes").write_bytes(os.urandom(70_000))
    os.chown(src / "home" / "user", 1000, 1000)
    os.chown(src / "home" / "user" / "notes", 1000, 1001)
    (src / "tmp").mkdir()
    (src / "tmp").chmod(0o1777)
    os.symlink("bin/tool", src / "relative")
    os.symlink("/etc/passwd", src / "absolute")
    os.symlink("nowhere", src / "dangling")
    os.link(src / "bin" / "tool", src / "bin" / "tool-again")


def _tar_of_tree(src: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(os.listdir(src)):
            tf.add(src / name, arcname=name)
    return buf.getvalue()


def test_applied_files_equal_the_source_tree(
    layers: LayerStore, driver: GraphDriver, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _source_tree(src)
    layer = layers.register(io.BytesIO(_tar_of_tree(src)))
    root = driver.get(layer.id)
    try:
        assert _snapshot(root) == _snapshot(src)
    finally:
        driver.put(layer.id)

    # A child layer on top: the driver's view of it is the source plus the child's changes.
    (src / "etc" / "motd").write_bytes(b"hello\n")
    child = layers.register(io.BytesIO(tar_bytes({"etc/motd": b"hello\n"})), parent=layer.id)
    root = driver.get(child.id)
    try:
        got, want = _snapshot(root), _snapshot(src)
        # The child tar does not carry etc/ itself, so only the new file is compared by content.
        assert got.keys() == want.keys()
        assert got["etc/motd"] == (stat.S_IFREG, 0o644, 0, 0, b"hello\n", 1)
        assert {k: v for k, v in got.items() if k != "etc/motd"} == {
            k: v for k, v in want.items() if k != "etc/motd"
        }
    finally:
        driver.put(child.id)


def test_recover_removes_half_made_and_unused_layers(
    layers: LayerStore, images: ImageStore, db: GraphDB, driver: GraphDriver, tmp_path: Path
) -> None:
    used = layers.register(io.BytesIO(BASE))
    image = add_image(images, [used], "kept")
    unused_base = layers.register(io.BytesIO(tar_bytes({"a": b"a"})))
    unused_child = layers.register(io.BytesIO(tar_bytes({"b": b"b"})), parent=unused_base.id)

    # What a daemon killed in the middle of register leaves: a 'creating' row, the driver's
    # directory with some files, and the tar being copied.
    half = "ab" * 32
    with db.write() as tx:
        tx.table("layers").insert(
            {"id": half, "parent": used.id, "state": "creating", "created": time.time()}
        )
    driver.create(half, used.id)
    root = driver.get(half)
    (root / "partial").write_bytes(b"half a file")
    driver.put(half)
    (layers.tars / f".{half}.tar.tmp").write_bytes(b"half a tar")

    assert layers.recover() == 3
    assert [r["id"] for r in rows(db, "layers")] == [used.id]
    assert not driver.exists(half)
    assert not driver.exists(unused_child.id) and not driver.exists(unused_base.id)
    assert driver_layer_dirs(driver, tmp_path) == [used.id]
    assert sorted(p.name for p in layers.tars.iterdir()) == [f"{used.id}.tar"]
    assert images.get(image.id).layers == (used.id,)
    assert layers.recover() == 0


# --- ImageStore -----------------------------------------------------------------------------


def test_add_checks_diff_ids(layers: LayerStore, images: ImageStore, db: GraphDB) -> None:
    base = layers.register(io.BytesIO(BASE))
    child = layers.register(io.BytesIO(CHILD), parent=base.id)
    config = config_for([base.diff_id, child.diff_id], "two")
    image = images.add(config, [base, child])
    assert image.id == image_id(config) == digest(config)
    assert image.config == config and image.layers == (base.id, child.id)
    assert image.size == base.size + child.size and image.parent == ""
    assert images.add(config, [base, child]) == image  # stored once
    assert images.count() == 1

    for wrong in ([child.diff_id, base.diff_id], [base.diff_id], []):
        bad = config_for(wrong, "wrong")
        with pytest.raises(InvalidArgument, match="do not match"):
            images.add(bad, [base, child])
        with pytest.raises(ImageNotFound):
            images.get(image_id(bad))
    with pytest.raises(InvalidArgument, match="not an image config"):
        images.add(b'{"rootfs": {}}', [base])
    assert [r["id"] for r in rows(db, "images")] == [image.id]
    assert len(rows(db, "image_layers")) == 2


def test_resolve_by_id_prefix_and_reference(layers: LayerStore, images: ImageStore) -> None:
    layer = layers.register(io.BytesIO(BASE))
    image = add_image(images, [layer], "one")
    hex_id = image.id.removeprefix("sha256:")
    assert images.tag(image.id, parse("busybox")) is None
    assert image.short_id == hex_id[:12]

    for text in (
        hex_id,
        image.id,
        hex_id[:12],
        f"sha256:{hex_id[:12]}",
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        "library/busybox",
    ):
        assert images.resolve(text).id == image.id, text
    assert images.get(image.id).tags == ("docker.io/library/busybox:latest",)

    other = next(c for c in "0123456789abcdef" if c != hex_id[0])
    for missing in ("busybox:1.0", "nosuch", other * 12, "sha256:" + other * 64):
        with pytest.raises(ImageNotFound):
            images.resolve(missing)


def test_ambiguous_prefix_is_invalid(layers: LayerStore, images: ImageStore) -> None:
    layer = layers.register(io.BytesIO(BASE))
    seen: dict[str, str] = {}
    n = 0
    while True:
        image = add_image(images, [layer], f"image {n}")
        n += 1
        first = image.id.removeprefix("sha256:")[0]
        if first in seen:
            break
        seen[first] = image.id
    with pytest.raises(InvalidArgument, match="more than one image"):
        images.resolve(first)
    with pytest.raises(InvalidArgument, match="more than one image"):
        images.resolve(f"sha256:{first}")
    assert images.resolve(image.id.removeprefix("sha256:")[:12]).id == image.id


def test_tag_untag_and_moving_tags(layers: LayerStore, images: ImageStore) -> None:
    layer = layers.register(io.BytesIO(BASE))
    a, b = add_image(images, [layer], "a"), add_image(images, [layer], "b")
    ref = parse("example.com/team/app:1.0")
    assert images.tag(a.id, ref) is None
    assert images.tag(a.id, ref) is None  # the same image again: nothing moved
    assert images.resolve("example.com/team/app:1.0").id == a.id
    assert images.tag(b.id, ref) == a.id  # moved: the old image is returned
    assert images.get(a.id).tags == () and images.get(b.id).tags == (str(ref),)
    assert images.tag(b.id, parse("app")) is None
    assert images.get(b.id).tags == ("example.com/team/app:1.0", "docker.io/library/app:latest")

    assert images.untag(parse("app")) == b.id  # the default tag is latest
    assert images.get(b.id).tags == ("example.com/team/app:1.0",)
    with pytest.raises(ImageNotFound):
        images.untag(parse("app"))
    with pytest.raises(ImageNotFound):
        images.resolve("app")
    with pytest.raises(InvalidArgument):
        images.tag(b.id, parse("app@sha256:" + "1" * 64))


def test_parents_children_and_ancestors(layers: LayerStore, images: ImageStore) -> None:
    base = layers.register(io.BytesIO(BASE))
    child = layers.register(io.BytesIO(CHILD), parent=base.id)
    top = add_image(images, [base], "grandparent")
    middle = add_image(images, [base, child], "parent", parent=top.id)
    leaf = add_image(images, [base, child], "child", parent=middle.id)
    sibling = add_image(images, [base, child], "sibling", parent=middle.id)

    assert images.children(top.id) == [middle.id]
    assert sorted(images.children(middle.id)) == sorted([leaf.id, sibling.id])
    assert images.children(leaf.id) == []
    assert images.ancestors(leaf.id) == [middle.id, top.id]
    assert images.ancestors(top.id) == []
    assert images.descendants(top.id) == [middle.id, *sorted([leaf.id, sibling.id])]
    assert images.descendants(leaf.id) == []
    assert images.get(leaf.id).parent == middle.id

    engine = Engine()
    engine.provide(IMAGES, images)
    imagegraph.install(engine)
    (lineage,) = asyncio.run(engine.call("image_lineage", middle.short_id))
    assert lineage == {
        "id": middle.id,
        "ancestors": [top.id],
        "descendants": sorted([leaf.id, sibling.id]),
    }

    with pytest.raises(FailedPrecondition, match=middle.short_id):
        images.delete(top.id)
    with pytest.raises(FailedPrecondition) as info:
        images.delete(middle.id)
    assert leaf.short_id in str(info.value) and sibling.short_id in str(info.value)
    assert images.count() == 4  # nothing was deleted

    assert images.delete(leaf.id) == [base.id, child.id]
    with pytest.raises(ImageNotFound):
        images.delete(leaf.id)


def test_layers_are_released_when_no_image_uses_them(
    layers: LayerStore, images: ImageStore, db: GraphDB, driver: GraphDriver, tmp_path: Path
) -> None:
    base = layers.register(io.BytesIO(BASE))
    child = layers.register(io.BytesIO(CHILD), parent=base.id)
    small = add_image(images, [base], "base only")
    big = add_image(images, [base, child], "base and child")
    images.tag(small.id, parse("small"))

    # Deleting the image on the base alone keeps the base: the other image uses it.
    assert layers.release(images.delete(small.id)) == []
    assert {r["id"] for r in rows(db, "layers")} == {base.id, child.id}
    assert driver_layer_dirs(driver, tmp_path) == sorted([base.id, child.id])
    assert rows(db, "tags") == []

    removed = layers.release(images.delete(big.id))
    assert [layer.id for layer in removed] == [child.id, base.id]
    assert rows(db, "layers") == [] and rows(db, "images") == []
    assert rows(db, "image_layers") == []
    assert driver_layer_dirs(driver, tmp_path) == []
    assert list(layers.tars.iterdir()) == []
    assert not driver.exists(base.id) and not driver.exists(child.id)


def test_release_keeps_a_layer_another_image_builds_on(
    layers: LayerStore, images: ImageStore, db: GraphDB
) -> None:
    base = layers.register(io.BytesIO(BASE))
    child = layers.register(io.BytesIO(CHILD), parent=base.id)
    upper = add_image(images, [base, child], "upper")
    lower = add_image(images, [base], "lower")
    assert layers.release(images.delete(lower.id)) == []
    assert layers.get(base.id) == base
    assert json.loads(images.get(upper.id).config)["rootfs"]["diff_ids"] == [
        base.diff_id,
        child.diff_id,
    ]


def test_a_tag_wins_over_an_id_prefix(layers: LayerStore, images: ImageStore) -> None:
    layer = layers.register(io.BytesIO(BASE))
    a, b = add_image(images, [layer], "a"), add_image(images, [layer], "b")
    prefix = a.id.removeprefix("sha256:")[:12]
    assert images.resolve(prefix).id == a.id
    images.tag(b.id, parse(prefix))  # a repository named like a's short id, as Docker allows
    assert images.resolve(prefix).id == b.id
    assert images.resolve(f"sha256:{prefix}").id == a.id  # an explicit id is never a name


def test_cached_graph_queries_follow_every_change(
    layers: LayerStore, images: ImageStore, db: GraphDB, driver: GraphDriver, tmp_path: Path
) -> None:
    def fresh() -> tuple[object, object]:  # what a store reading the database anew sees
        return LayerStore(db, driver, tmp_path / "fresh").tree(), ImageStore(db).heads()

    def check() -> None:
        assert (layers.tree(), images.heads()) == fresh()

    base = layers.register(io.BytesIO(BASE))
    image = add_image(images, [base], "cached")
    tree, heads = layers.tree(), images.heads()
    assert layers.tree() is tree and images.heads() is heads  # served from the cache
    with db.write() as tx:  # a write elsewhere (the job history) keeps the caches
        tx.execute("UPDATE jobs SET name = name")
    assert layers.tree() is tree and images.heads() is heads
    check()

    images.tag(image.id, parse("cached:1"))
    assert images.heads()[base.id] == [(image.id, ("cached:1",))]
    check()
    child = layers.register(io.BytesIO(CHILD), parent=base.id)
    assert [(d, i) for d, i, _, _ in layers.tree()] == [(0, base.id), (1, child.id)]
    other = add_image(images, [base, child], "other")
    images.tag(other.id, parse("cached:2"))
    check()
    assert images.tag(other.id, parse("cached:1")) == image.id  # the tag moves
    check()
    assert images.tag(other.id, parse("cached:1")) is None  # already so: nothing changes
    images.untag(parse("cached:2"))
    check()
    layers.release(images.delete(other.id))
    assert [i for _, i, _, _ in layers.tree()] == [base.id]
    check()


def test_rmi_of_a_parent_by_id_changes_nothing(layers: LayerStore, images: ImageStore) -> None:
    base = layers.register(io.BytesIO(BASE))
    top = add_image(images, [base], "top")
    add_image(images, [base], "built on top", parent=top.id)
    images.tag(top.id, parse("a:1"))
    images.tag(top.id, parse("b:1"))
    engine = Engine()
    engine.provide(IMAGES, images)
    engine.provide(LAYERS, layers)
    jobs_images.install(engine)
    with pytest.raises(FailedPrecondition, match="image has dependent child images"):
        asyncio.run(engine.call("image_delete", top.id, force=True))
    assert sorted(images.get(top.id).tags) == ["docker.io/library/a:1", "docker.io/library/b:1"]
    # By tag it only untags: the image stays while another image builds on it.
    assert asyncio.run(engine.call("image_delete", "a:1")) == [{"Untagged": "a:1"}]
    assert images.get(top.id).tags == ("docker.io/library/b:1",)
