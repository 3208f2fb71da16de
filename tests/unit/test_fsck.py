"""The store checker on a small store in a temp dir (GraphDB, vfs driver, layer tars, one
container, one cached blob): a sound store has no problems, and each invariant broken on purpose
is reported with its code and subject."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import sqlite3
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.graph.vfs import VfsDriver
from engine import Engine
from graph.containers import ContainerStore
from graph.db import GraphDB
from graph.fsck import Problem, check, driver_layers
from graph.imageconfig import encode, new_config
from graph.images import Image, ImageStore
from graph.layers import Layer, LayerStore
from graph.reference import parse
from jobs import fsck as fsck_job
from jobs.services import DAEMON, LAYERS, DaemonInfo

CID = "c" * 64
TAG = "docker.io/library/app:1"


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Store:
    root: Path
    db: GraphDB
    driver: VfsDriver
    layers: LayerStore
    images: ImageStore
    base: Layer
    child: Layer
    image: Image
    blob: Path

    def check(self, *, deep: bool = False, idle: bool = True) -> list[Problem]:
        return check(self.db, self.layers, self.root, deep=deep, idle=idle)

    def sql(self, statement: str, params: tuple[object, ...] = ()) -> None:
        """Write through a connection without foreign keys, as damage would."""
        conn = sqlite3.connect(self.root / "graph.db", isolation_level=None)
        try:
            conn.execute(statement, params)
        finally:
            conn.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """Two layers, an image on them with a tag and a digest, a container with its two driver
    layers, an empty tmp/, one read-only blob."""
    db = GraphDB(tmp_path / "graph.db")
    try:
        driver = VfsDriver(tmp_path / "vfs")
        layers = LayerStore(db, driver, tmp_path / "layertars")
        base = layers.register(io.BytesIO(tar_bytes({"etc/hostname": b"base\n"})))
        child = layers.register(io.BytesIO(tar_bytes({"etc/motd": b"hi\n"})), base.id)
        images = ImageStore(db)
        config = encode(new_config([base.diff_id, child.diff_id], "test"))
        image = images.add(config, [base, child])
        images.tag(image.id, parse(TAG))
        with db.write() as tx:
            tx.execute(
                "INSERT INTO digests (name, image_id, added) VALUES (?, ?, ?)",
                ("docker.io/library/app@sha256:" + "d" * 64, image.id, time.time()),
            )
        ContainerStore(db, tmp_path / "containers").reserve(CID, "web", image.id, time.time())
        driver.create(f"{CID}-init", child.id)
        driver.create(CID, f"{CID}-init")
        (tmp_path / "tmp").mkdir()
        blobs = tmp_path / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        data = b"compressed layer"
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        blob.chmod(0o444)
        yield Store(tmp_path, db, driver, layers, images, base, child, images.get(image.id), blob)
    finally:
        db.close()


def found(problems: list[Problem]) -> set[tuple[str, str]]:
    return {(p.code, p.subject) for p in problems}


def test_a_sound_store_has_no_problems(store: Store) -> None:
    assert store.check() == []
    assert store.check(deep=True) == []
    assert driver_layers(store.driver) == {store.base.id, store.child.id, CID, f"{CID}-init"}


def test_missing_tar_and_missing_driver_layer(store: Store) -> None:
    store.layers.tar_path(store.base.id).unlink()
    shutil.rmtree(store.driver.dir / store.child.id)
    problems = store.check()
    assert found(problems) == {("I3", store.base.id), ("I3", store.child.id)}
    assert any("tar" in p.detail for p in problems if p.subject == store.base.id)


def test_corrupt_tar_is_found_in_deep_mode_only(store: Store) -> None:
    tar = store.layers.tar_path(store.child.id)
    data = bytearray(tar.read_bytes())
    data[600] ^= 0xFF  # padding after the data: the tar still reads, its hash differs
    tar.write_bytes(bytes(data))
    assert store.check() == []
    assert found(store.check(deep=True)) == {("I2", store.child.id)}


def test_leftover_rows_and_staged_and_stray_tars(store: Store) -> None:
    half = "e" * 64
    with store.db.write() as tx:
        tx.execute("INSERT INTO layers (id, state, created) VALUES (?, 'creating', ?)", (half, 0.0))
    staged = store.layers.tars / f".{half}.tar.tmp"
    staged.write_bytes(b"partial")
    stray = store.layers.tars / f"{'f' * 64}.tar"
    stray.write_bytes(b"orphan")
    assert found(store.check()) == {("I3", half), ("I3", str(staged)), ("I3", str(stray))}


def test_stray_driver_layer_but_not_a_container_s(store: Store) -> None:
    orphan = "a" * 64
    store.driver.create(orphan)
    assert found(store.check()) == {("I3", orphan)}


def test_driver_that_cannot_be_listed_skips_the_stray_half(store: Store) -> None:
    class Unlisted:
        name = "unlisted"

        def exists(self, id: str) -> bool:
            return store.driver.exists(id)

    store.driver.create("a" * 64)
    layers = LayerStore(store.db, store.driver, store.layers.tars)
    layers.driver = Unlisted()  # type: ignore[assignment]
    assert driver_layers(layers.driver) is None
    assert check(store.db, layers, store.root) == []


def test_files_in_tmp_only_when_idle(store: Store) -> None:
    leftover = store.root / "tmp" / "pull-1234"
    leftover.mkdir()
    assert found(store.check()) == {("I3", str(leftover))}
    assert store.check(idle=False) == []


def test_tag_pointing_nowhere(store: Store) -> None:
    store.sql("INSERT INTO tags (name, image_id, added) VALUES ('x:1', 'sha256:nothing', 0)")
    problems = store.check()
    assert ("I2", "x:1") in found(problems)
    assert any(p.code == "I1" and p.subject.startswith("tags:") for p in problems)


def test_tampered_config(store: Store) -> None:
    with store.db.write() as tx:
        tx.execute(
            "UPDATE images SET config = ? WHERE id = ?", (store.image.config + b" ", store.image.id)
        )
    problems = store.check()
    assert found(problems) == {("I2", store.image.id)}
    assert "hash" in problems[0].detail


def test_diff_ids_that_do_not_match_the_chain(store: Store) -> None:
    other = store.layers.register(io.BytesIO(tar_bytes({"etc/other": b"x\n"})), store.base.id)
    with store.db.write() as tx:
        tx.execute(
            "UPDATE image_layers SET layer_id = ? WHERE image_id = ? AND position = 1",
            (other.id, store.image.id),
        )
        tx.execute("UPDATE images SET top_layer = ? WHERE id = ?", (other.id, store.image.id))
    problems = store.check()
    assert found(problems) == {("I2", store.image.id)}
    assert "rootfs.diff_ids[1]" in problems[0].detail


def test_broken_layer_chain_and_chain_id(store: Store) -> None:
    with store.db.write() as tx:
        tx.execute(
            "UPDATE layers SET chain_id = ? WHERE id = ?", ("sha256:" + "0" * 64, store.child.id)
        )
        tx.execute(
            "UPDATE image_layers SET position = position + 1 WHERE image_id = ? AND position = 1",
            (store.image.id,),
        )
    problems = store.check()
    assert found(problems) == {("I2", store.child.id), ("I2", store.image.id)}


def test_layer_of_an_image_not_built_on_the_one_before(store: Store) -> None:
    with store.db.write() as tx:
        tx.execute("UPDATE layers SET parent = NULL WHERE id = ?", (store.child.id,))
    problems = store.check()
    assert ("I2", store.image.id) in found(problems)
    assert any("builds on nothing" in p.detail for p in problems)


def test_containers(store: Store) -> None:
    shutil.rmtree(store.root / "containers" / CID)
    store.sql(
        "INSERT INTO containers (id, image_id, created) VALUES (?, 'sha256:gone', 0)", ("b" * 64,)
    )
    store.sql("INSERT INTO entity (id) VALUES ('loner')")
    store.sql("INSERT INTO edge (parent_id, name, entity_id) VALUES ('0', 'ghost', 'loner')")
    store.sql("INSERT INTO edge (parent_id, name, entity_id) VALUES ('0', 'web2', ?)", (CID,))
    problems = [p for p in store.check() if p.code == "I4"]
    assert found(problems) == {("I4", CID), ("I4", "b" * 64), ("I4", "/ghost")}
    details = " ".join(p.detail for p in problems)
    assert "has 2 names" in details and "has 0 names" in details and "sha256:gone" in details


def test_blobs_read_only_and_named_by_their_hash(store: Store) -> None:
    store.blob.chmod(0o644)
    wrong = store.blob.with_name("0" * 64)
    wrong.write_bytes(b"other bytes")
    wrong.chmod(0o444)
    staged = store.blob.with_name(".ingest-1")
    staged.write_bytes(b"")
    assert found(store.check()) == {("I6", str(store.blob)), ("I6", str(staged))}
    assert found(store.check(idle=False)) == {("I6", str(store.blob))}
    assert found(store.check(deep=True, idle=False)) == {
        ("I6", str(store.blob)),
        ("I6", str(wrong)),
    }


def test_fsck_job_emits_problems_then_the_count(store: Store) -> None:
    engine = Engine()
    engine.provide(LAYERS, store.layers)
    engine.provide(DAEMON, DaemonInfo("id", store.root, store.root / "exec"))
    fsck_job.install(engine)
    assert asyncio.run(engine.call("fsck")) == [{"Problems": 0}]
    (store.root / "tmp" / "pull-1").mkdir()  # in-flight work of a running daemon: not reported
    os.unlink(store.layers.tar_path(store.base.id))
    records = asyncio.run(engine.call("fsck", deep=True))
    assert records[-1] == {"Problems": 1}
    assert records[0]["Code"] == "I3" and records[0]["Subject"] == store.base.id
