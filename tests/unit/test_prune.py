"""Prune filters, the choice of what a prune removes, and ``image_prune`` on images without
layers (a GraphDB in a temp dir and the vfs driver: no root needed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from drivers.graph.vfs import VfsDriver
from engine import Engine
from engine.errors import InvalidArgument
from graph.containers import Container, State
from graph.db import GraphDB
from graph.imageconfig import encode, new_config
from graph.images import Image, ImageStore
from graph.layers import LayerStore
from graph.reference import parse
from jobs import images as image_jobs
from jobs import prune
from jobs.runtime import Runtime, now_rfc3339
from jobs.services import IMAGES, LAYERS

# --- filters --------------------------------------------------------------------------------


def test_unknown_filters_are_refused_with_dockerd_s_message() -> None:
    prune.check_filters({"label": ["a"], "until": ["1h"]}, prune.CONTAINER_FILTERS)
    with pytest.raises(InvalidArgument, match=r"^invalid filter 'dangling'$"):
        prune.check_filters({"dangling": ["true"]}, prune.CONTAINER_FILTERS)
    with pytest.raises(InvalidArgument, match=r"^invalid filter 'name'$"):
        prune.check_filters({"name": ["x"]}, prune.IMAGE_FILTERS)


def test_until_takes_durations_unix_times_and_rfc3339() -> None:
    assert prune.until_of({}) is None
    ago = prune.until_of({"until": ["10m"]})
    assert ago is not None and abs(ago - (time.time() - 600)) < 5
    assert prune.until_of({"until": ["1700000000"]}) == 1_700_000_000
    assert prune.until_of({"until": ["1700000000.5"]}) == 1_700_000_000.5
    assert prune.until_of({"until": ["2023-11-14T22:13:20Z"]}) == 1_700_000_000
    with pytest.raises(InvalidArgument, match="more than one until filter"):
        prune.until_of({"until": ["1h", "2h"]})
    with pytest.raises(InvalidArgument, match="until"):
        prune.until_of({"until": ["yesterday"]})


def test_created_at_is_none_for_missing_or_malformed_times() -> None:
    assert prune.created_at("2023-11-14T22:13:20.5Z") == 1_700_000_000.5
    assert prune.created_at("") is None
    assert prune.created_at("not a time") is None


def test_bool_filter() -> None:
    assert prune.bool_filter({}, "dangling", True) is True
    assert prune.bool_filter({"dangling": ["false"]}, "dangling", True) is False
    assert prune.bool_filter({"dangling": ["0"]}, "dangling", True) is False
    assert prune.bool_filter({"dangling": ["1"]}, "dangling", False) is True
    assert prune.bool_filter({"dangling": ["TRUE", "1"]}, "dangling", False) is True
    for bad in (["yes"], ["true", "false"], []):
        with pytest.raises(InvalidArgument, match="invalid filter 'dangling="):
            prune.bool_filter({"dangling": bad}, "dangling", True)


def test_labels_every_label_must_match_and_label_not_excludes_when_all_match() -> None:
    labels = {"a": "1", "b": "2"}
    assert prune.labels_match({}, labels)
    assert prune.labels_match({}, {})
    assert prune.labels_match({"label": ["a"]}, labels)
    assert prune.labels_match({"label": ["a=1", "b"]}, labels)
    assert not prune.labels_match({"label": ["a=2"]}, labels)
    assert not prune.labels_match({"label": ["a", "c"]}, labels)
    assert not prune.labels_match({"label": ["a"]}, {})
    assert not prune.labels_match({"label!": ["a"]}, labels)
    assert not prune.labels_match({"label!": ["a=1", "b=2"]}, labels)
    assert prune.labels_match({"label!": ["a=2"]}, labels)
    assert prune.labels_match({"label!": ["a", "c"]}, labels)  # not every one matches
    assert prune.labels_match({"label!": ["a"]}, {})


def test_chosen_applies_until_to_the_creation_time() -> None:
    stamp = "2023-11-14T22:13:20Z"
    assert prune.chosen({}, None, stamp, {})
    assert prune.chosen({}, 1_700_000_000, stamp, {})
    assert not prune.chosen({}, 1_699_999_999, stamp, {})
    assert not prune.chosen({}, 1_700_000_000, "", {})  # no creation time: kept
    assert not prune.chosen({"label": ["x"]}, None, stamp, {})


# --- which containers -------------------------------------------------------------------------


def container(
    id: str, status: str, created: str, labels: dict[str, str] | None = None
) -> Container:
    state = State(status=status, running=status in ("running", "paused", "restarting"),
                  paused=status == "paused", restarting=status == "restarting")  # fmt: skip
    return Container(id=id, name=f"c-{id}", image="sha256:x", created=created,
                     config={"Labels": labels or {}}, host_config={}, state=state)  # fmt: skip


def test_only_stopped_containers_are_pruned_oldest_first() -> None:
    every = [
        container("a" * 64, "exited", "2023-11-14T22:13:22Z", {"keep": "yes"}),
        container("b" * 64, "created", "2023-11-14T22:13:21Z"),
        container("c" * 64, "dead", "2023-11-14T22:13:23Z"),
        container("d" * 64, "running", "2023-11-14T22:13:20Z"),
        container("e" * 64, "paused", "2023-11-14T22:13:20Z"),
        container("f" * 64, "restarting", "2023-11-14T22:13:20Z"),
        container("0" * 64, "removing", "2023-11-14T22:13:20Z"),
    ]
    rt = cast(Runtime, SimpleNamespace(containers={c.id: c for c in every}))
    assert [c.id[0] for c in prune.stopped(rt, {}, None)] == ["b", "a", "c"]
    assert [c.id[0] for c in prune.stopped(rt, {"label!": ["keep"]}, None)] == ["b", "c"]
    assert [c.id[0] for c in prune.stopped(rt, {"label": ["keep=yes"]}, None)] == ["a"]
    assert [c.id[0] for c in prune.stopped(rt, {}, 1_700_000_002)] == ["b", "a"]


# --- which images (images without layers) -------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    db = GraphDB(tmp_path / "graph.db")
    try:
        e = Engine()
        e.provide(IMAGES, ImageStore(db))
        e.provide(LAYERS, LayerStore(db, VfsDriver(tmp_path / "vfs"), tmp_path / "tars"))
        image_jobs.install(e)
        prune.install(e)
        yield e
    finally:
        db.close()


def add(store: ImageStore, note: str, tag: str = "", parent: str = "", **config: Any) -> Image:
    body = new_config([], "test", note)
    body["config"] = config
    image = store.add(encode(body), [], parent)
    if tag:
        store.tag(image.id, parse(tag))
    return store.get(image.id)


def run_prune(engine: Engine, **filters: list[str]) -> dict[str, Any]:
    records = asyncio.run(engine.call("image_prune", filters=filters))
    assert len(records) == 1
    return dict(records[0])


def test_dangling_images_are_untagged_heads(engine: Engine) -> None:
    store = engine[IMAGES]
    base = add(store, "base", "base:1")
    middle = add(store, "middle", parent=base.id)  # an intermediate image
    add(store, "top", "top:1", parent=middle.id)
    loose = add(store, "loose")
    old = add(store, "old", Labels={"keep": "yes"})
    none = cast(Any, lambda image: [])
    found = prune.prunable(store, none, {}, True, None)
    assert [i.id for i in found] == [old.id, loose.id]
    assert [i.id for i in prune.prunable(store, none, {"label!": ["keep"]}, True, None)] == [
        loose.id
    ]
    used = cast(Any, lambda image: ["c"] if image == loose.id else [])
    assert [i.id for i in prune.prunable(store, used, {}, True, None)] == [old.id]
    every = [i.id for i in prune.prunable(store, none, {}, False, None)]
    assert middle.id not in every and len(every) == 4


def test_names_to_delete() -> None:
    image = Image("sha256:" + "a" * 64, "", b"{}", "", 0, (), ("docker.io/library/a:1",),
                  ("docker.io/library/a@sha256:" + "b" * 64,), 0.0)  # fmt: skip
    assert prune.names_to_delete(image, True) == [image.id]
    assert prune.names_to_delete(image, False) == [*image.tags, *image.digests]


def test_image_prune_removes_dangling_then_all_unused(engine: Engine) -> None:
    store = engine[IMAGES]
    base = add(store, "base", "base:1")
    middle = add(store, "middle", parent=base.id)
    top = add(store, "top", parent=middle.id)  # untagged: dangling, and takes middle along
    kept = add(store, "kept", "kept:1", Labels={"keep": "yes"})
    result = run_prune(engine)
    assert result == {
        "ImagesDeleted": [{"Deleted": top.id}, {"Deleted": middle.id}],
        "SpaceReclaimed": 0,
    }
    assert run_prune(engine) == {"ImagesDeleted": None, "SpaceReclaimed": 0}
    result = run_prune(engine, dangling=["false"], **{"label!": ["keep"]})
    assert result["ImagesDeleted"] == [{"Untagged": "base:1"}, {"Deleted": base.id}]
    assert [i.id for i in store.all()] == [kept.id]
    with pytest.raises(InvalidArgument, match="invalid filter 'reference'"):
        run_prune(engine, reference=["x"])


def test_image_prune_until_keeps_newer_images(engine: Engine) -> None:
    store = engine[IMAGES]
    image = add(store, "new")
    assert run_prune(engine, until=["1700000000"])["ImagesDeleted"] is None
    future = now_rfc3339(time.time() + 3600)
    assert run_prune(engine, until=[future])["ImagesDeleted"] == [{"Deleted": image.id}]
