"""The volume store and the volume jobs, on a GraphDB in a temp dir (no root needed).

A container "uses" a volume when a ``container_volumes`` row names it; the tests write such rows
(and the image and container rows they need) straight into the database.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Engine
from engine.errors import AlreadyExists, InvalidArgument, NotFound, NotSupported
from graph.db import GraphDB
from graph.volumes import (
    ANONYMOUS_LABEL,
    VolumeInUse,
    VolumeNotFound,
    VolumeStore,
)
from jobs import volumes as volume_jobs
from jobs.services import VOLUMES

HEX64 = re.compile(r"[0-9a-f]{64}")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[GraphDB]:
    graph = GraphDB(tmp_path / "graph.db")
    try:
        yield graph
    finally:
        graph.close()


@pytest.fixture
def store(db: GraphDB, tmp_path: Path) -> VolumeStore:
    return VolumeStore(db, tmp_path / "volumes")


def use(db: GraphDB, container: str, volume: str, destination: str = "/data") -> None:
    """Record that *container* mounts *volume* (making the image and container rows needed)."""
    with db.write() as tx:
        tx.execute(
            "INSERT OR IGNORE INTO images (id, config, created, size, added)"
            " VALUES ('sha256:img', x'7b7d', '', 0, 0)"
        )
        tx.execute(
            "INSERT OR IGNORE INTO containers (id, image_id, created) VALUES (?, 'sha256:img', 0)",
            (container,),
        )
        tx.execute(
            "INSERT INTO container_volumes (container_id, volume, destination) VALUES (?, ?, ?)",
            (container, volume, destination),
        )


def forget(db: GraphDB, container: str) -> None:
    with db.write() as tx:
        tx.execute("DELETE FROM containers WHERE id = ?", (container,))


# --- create, get ---------------------------------------------------------------------------


def test_create_makes_the_directory_and_docker_record(store: VolumeStore) -> None:
    v = store.create("pgdata", labels={"app": "db"})
    assert v.mountpoint == str(store.root / "pgdata" / "_data")
    assert Path(v.mountpoint).is_dir()
    assert not v.anonymous
    record = v.record()
    assert set(record) == {
        "CreatedAt",
        "Driver",
        "Labels",
        "Mountpoint",
        "Name",
        "Options",
        "Scope",
    }
    assert record["Name"] == "pgdata" and record["Driver"] == "local"
    assert record["Labels"] == {"app": "db"} and record["Options"] == {}
    assert record["Scope"] == "local" and RFC3339.fullmatch(str(record["CreatedAt"]))
    assert v.record((12, 1))["UsageData"] == {"Size": 12, "RefCount": 1}
    assert store.get("pgdata") == v


def test_create_without_a_name_is_anonymous(store: VolumeStore) -> None:
    v = store.create()
    assert HEX64.fullmatch(v.name)
    assert v.anonymous and v.labels == {ANONYMOUS_LABEL: ""}
    assert store.get(v.name).anonymous


@pytest.mark.parametrize("name", ["a", "0"])
def test_one_character_names_are_too_short(store: VolumeStore, name: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        store.create(name)
    assert str(err.value) == (
        f"create {name}: volume name is too short, names should be at least two alphanumeric "
        "characters"
    )


@pytest.mark.parametrize("name", ["bad name", "-x", "/abs/path", "_x", ".tmp-1", "x/y", "ü1"])
def test_invalid_characters(store: VolumeStore, name: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        store.create(name)
    assert str(err.value).startswith(f"create {name}: ")
    assert 'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed' in str(err.value)
    assert os.listdir(store.root) == []


def test_create_is_idempotent_and_keeps_the_first(store: VolumeStore) -> None:
    first = store.create("v1", labels={"a": "1"})
    again = store.create("v1", labels={"b": "2"})
    assert again == first
    assert len(store.all()) == 1


def test_create_refuses_other_drivers_and_options(store: VolumeStore) -> None:
    store.create("v1")
    with pytest.raises(AlreadyExists, match="driver 'local' already has volume 'v1'"):
        store.create("v1", driver="nfs")
    with pytest.raises(NotFound, match='plugin "nfs" not found'):
        store.create("v2", driver="nfs")
    with pytest.raises(NotSupported, match="device, o, type"):
        store.create("v2", options={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    with pytest.raises(InvalidArgument, match='invalid option: "bogus"'):
        store.create("v2", options={"bogus": "1"})
    assert [v.name for v in store.all()] == ["v1"]
    assert os.listdir(store.root) == ["v1"]


def test_get_absent(store: VolumeStore) -> None:
    with pytest.raises(VolumeNotFound) as err:
        store.get("nope")
    assert str(err.value) == "get nope: no such volume"


def test_concurrent_creates_of_one_name_make_one_volume(store: VolumeStore) -> None:
    results: list[Any] = []

    def create() -> None:
        results.append(store.create("shared"))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.created for r in results}) == 1
    assert os.listdir(store.root) == ["shared"]


# --- list ----------------------------------------------------------------------------------


def test_list_filters(store: VolumeStore, db: GraphDB) -> None:
    store.create("web-data", labels={"app": "web", "tier": "front"})
    store.create("db-data", labels={"app": "db"})
    anon = store.create()
    use(db, "c1", "db-data")

    def names(**filters: list[str]) -> list[str]:
        return [v.name for v in store.list(filters)]

    assert names() == sorted(["web-data", "db-data", anon.name])
    assert names(name=["data$"]) == ["db-data", "web-data"]
    assert names(name=["^web"]) == ["web-data"]
    assert names(label=["app"]) == ["db-data", "web-data"]
    assert names(label=["app=web"]) == ["web-data"]
    assert names(label=["app=web", "tier=back"]) == []
    assert names(label=[ANONYMOUS_LABEL]) == [anon.name]
    assert names(dangling=["true"]) == sorted(["web-data", anon.name])
    assert names(dangling=["0"]) == ["db-data"]
    assert names(driver=["local"], name=["^db-"]) == ["db-data"]
    assert names(driver=["other"]) == []


@pytest.mark.parametrize(
    ("filters", "message"),
    [({"size": ["1"]}, "invalid filter 'size'"), ({"dangling": ["maybe"]}, "dangling=maybe")],
)
def test_list_refuses_bad_filters(
    store: VolumeStore, filters: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        store.list(filters)


# --- remove --------------------------------------------------------------------------------


def test_remove_deletes_row_and_files(store: VolumeStore) -> None:
    v = store.create("gone")
    (Path(v.mountpoint) / "f").write_text("x")
    store.remove("gone")
    assert not (store.root / "gone").exists()
    with pytest.raises(VolumeNotFound):
        store.get("gone")
    with pytest.raises(VolumeNotFound, match="get gone: no such volume"):
        store.remove("gone")
    store.remove("gone", force=True)  # absent and forced: no error


def test_a_volume_in_use_is_never_removed(store: VolumeStore, db: GraphDB) -> None:
    store.create("busy")
    use(db, "b" * 64, "busy", "/a")
    use(db, "a" * 64, "busy", "/b")
    assert store.in_use("busy") == ["a" * 64, "b" * 64]
    for force in (False, True):
        with pytest.raises(VolumeInUse) as err:
            store.remove("busy", force=force)
        assert str(err.value) == f"remove busy: volume is in use - [{'a' * 64}, {'b' * 64}]"
    assert (store.root / "busy" / "_data").is_dir()
    # The schema refuses it too, whatever code tries.
    with pytest.raises(sqlite3.IntegrityError), db.write() as tx:
        tx.execute("DELETE FROM volumes WHERE name = 'busy'")
    forget(db, "a" * 64)
    forget(db, "b" * 64)
    assert store.in_use("busy") == []
    store.remove("busy")
    assert store.all() == []


# --- prune, size ---------------------------------------------------------------------------


def test_prune_removes_unused_anonymous_volumes_unless_all(store: VolumeStore, db: GraphDB) -> None:
    named = store.create("named")
    anon = store.create()
    busy = store.create()
    use(db, "c1", busy.name)
    (Path(anon.mountpoint) / "blob").write_bytes(b"x" * 1000)
    (Path(named.mountpoint) / "blob").write_bytes(b"y" * 300)

    assert store.prune() == ([anon.name], 1000)
    assert sorted(v.name for v in store.all()) == sorted(["named", busy.name])
    assert store.prune({"all": ["true"]}) == (["named"], 300)
    assert [v.name for v in store.all()] == [busy.name]
    assert store.prune({"all": ["1"]}) == ([], 0)


def test_prune_label_filters(store: VolumeStore) -> None:
    store.create("keep", labels={"keep": ""})
    store.create("env-dev", labels={"env": "dev"})
    store.create("env-prod", labels={"env": "prod"})
    assert store.prune({"all": ["true"], "label": ["env=dev"]}) == (["env-dev"], 0)
    assert store.prune({"all": ["true"], "label!": ["keep"]}) == (["env-prod"], 0)
    assert [v.name for v in store.all()] == ["keep"]
    with pytest.raises(InvalidArgument, match="invalid filter 'dangling'"):
        store.prune({"dangling": ["true"]})
    with pytest.raises(InvalidArgument, match="all=sometimes"):
        store.prune({"all": ["sometimes"]})


def test_size_counts_hard_links_once(store: VolumeStore) -> None:
    v = store.create("sized")
    data = Path(v.mountpoint)
    (data / "sub").mkdir()
    (data / "sub" / "a").write_bytes(b"a" * 4096)
    os.link(data / "sub" / "a", data / "hardlink")
    (data / "b").write_bytes(b"b" * 10)
    os.symlink("/etc/passwd", data / "link")  # its own size, never the target's
    assert store.size("sized") == 4096 + 10 + len("/etc/passwd")


# --- crash safety --------------------------------------------------------------------------


def test_recover_removes_directories_without_rows(store: VolumeStore) -> None:
    kept = store.create("kept")
    (store.root / ".tmp-0123").mkdir()  # a create that died before its rename
    (store.root / "orphan" / "_data").mkdir(parents=True)  # died before its row
    (store.root / "stray-file").write_text("")
    os.rmdir(kept.mountpoint)  # a row whose directory went missing
    assert store.recover() == [".tmp-0123", "orphan", "stray-file"]
    assert os.listdir(store.root) == ["kept"]
    assert Path(kept.mountpoint).is_dir()
    assert store.recover() == []


def test_a_failed_insert_leaves_no_directory(
    store: VolumeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_write() -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store.db, "write", broken_write)
    with pytest.raises(sqlite3.OperationalError):
        store.create("doomed")
    assert os.listdir(store.root) == []


def test_create_replaces_a_leftover_directory(store: VolumeStore) -> None:
    (store.root / "again" / "_data").mkdir(parents=True)
    (store.root / "again" / "_data" / "old").write_text("stale")
    v = store.create("again")
    assert os.listdir(v.mountpoint) == []


# --- jobs ----------------------------------------------------------------------------------


def engine_with(store: VolumeStore) -> Engine:
    engine = Engine()
    engine.provide(VOLUMES, store)
    volume_jobs.install(engine)
    return engine


def test_jobs_emit_docker_shapes(store: VolumeStore, db: GraphDB) -> None:
    engine = engine_with(store)

    async def scenario() -> None:
        [created] = await engine.call(
            "volume_create", name="v1", labels={"a": "b"}, driver_opts={}, driver="local"
        )
        assert created["Name"] == "v1" and created["Labels"] == {"a": "b"}
        [anon] = await engine.call("volume_create")
        assert anon["Labels"] == {ANONYMOUS_LABEL: ""}
        [listed] = await engine.call("volumes", filters={"name": ["v1"]})
        assert listed == {"Volumes": [created], "Warnings": None}
        assert await engine.call("volume_inspect", "v1") == [created]
        use(db, "c1", "v1")
        with pytest.raises(VolumeInUse):
            await engine.call("volume_rm", "v1", force=True)
        forget(db, "c1")
        assert await engine.call("volume_rm", "v1") == []
        assert await engine.call("volume_rm", "v1", force="true") == []
        with pytest.raises(VolumeNotFound):
            await engine.call("volume_inspect", "v1")
        [pruned] = await engine.call("volume_prune")
        assert pruned == {"VolumesDeleted": [anon["Name"]], "SpaceReclaimed": 0}
        [pruned] = await engine.call("volume_prune", filters={"all": ["true"]})
        assert pruned == {"VolumesDeleted": None, "SpaceReclaimed": 0}

    asyncio.run(scenario())


def test_job_params_are_checked(store: VolumeStore) -> None:
    engine = engine_with(store)
    with pytest.raises(InvalidArgument, match="unknown param"):
        engine.job("volume_create", Name="x")
    with pytest.raises(InvalidArgument, match="labels.a: expected string"):
        engine.job("volume_create", labels={"a": 1})
    with pytest.raises(InvalidArgument, match="takes NAME"):
        engine.job("volume_rm")
    with pytest.raises(InvalidArgument, match="invalid filter 'bogus'"):
        asyncio.run(engine.call("volumes", filters={"bogus": ["1"]}))
