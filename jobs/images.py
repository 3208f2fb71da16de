"""Image jobs: ``images``, ``image_inspect``, ``history``, ``tag`` and ``image_delete``.

Records use the Docker Engine API's shapes (``/images/json``, ``/images/{name}/json``, …) so the
Docker routes and ``POST /jobs/{name}`` return the same data.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from engine import ArgSpec, Engine, Job
from engine.errors import FailedPrecondition, InvalidArgument, Unavailable
from graph.images import Image, ImageStore
from graph.layers import LayerStore
from graph.reference import familiar_name, is_full_id, parse, with_default_tag
from jobs.events import image_event
from jobs.services import GRAPH_DRIVER, IMAGES, LAYERS, RUNTIME

_RFC3339: Final = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)")
FILTERS: Final = frozenset({"dangling", "reference", "label", "before", "since"})
CONFIG_DEFAULTS: Final[dict[str, object]] = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None,
    "Cmd": None, "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None,
    "OnBuild": None, "Labels": None,
}  # fmt: skip


@functools.lru_cache(maxsize=8192)  # every list call converts the same few thousand strings
def unix_time(created: str) -> int:
    """Seconds since the epoch of an RFC 3339 time with up to nanoseconds (0 if malformed)."""
    m = _RFC3339.fullmatch(created)
    if not m:
        return 0
    zone = "+00:00" if m[3] == "Z" else m[3]
    return int(datetime.fromisoformat(m[1] + (m[2] or "")[:7] + zone).timestamp())


def named_by_id(image: Image, name: str) -> bool:
    """Whether *name* found *image* as its id or an id prefix, rather than as a reference."""
    return is_full_id(name) or image.id.removeprefix("sha256:").startswith(
        name.removeprefix("sha256:")
    )


def summary(image: Image) -> dict[str, object]:
    """An image as ``GET /images/json`` lists it."""
    config = image.json().get("config") or {}
    assert isinstance(config, dict)
    return {
        "Id": image.id,
        "ParentId": image.parent,
        "RepoTags": [familiar_name(t) for t in image.tags],
        "RepoDigests": [familiar_name(d) for d in image.digests],
        "Created": unix_time(image.created),
        "Size": image.size,
        "SharedSize": -1,
        "Labels": config.get("Labels") or {},
        "Containers": -1,
    }


@dataclass(frozen=True, slots=True)
class ImagesParams:
    all: bool = field(default=False, metadata={"doc": "show intermediate images too"})
    filters: dict[str, list[str]] = field(
        default_factory=dict,
        metadata={"doc": "dangling, reference, label, before, since (Docker's filters)"},
    )


async def images(job: Job[ImagesParams]) -> None:
    """Emit one summary per image, newest first (Docker's ``/images/json`` items)."""
    p = job.params
    unknown = sorted(set(p.filters) - FILTERS)
    if unknown:
        raise InvalidArgument(f"filters: invalid filter '{unknown[0]}'")
    for image in await asyncio.to_thread(_select, job.engine[IMAGES], p):
        job.emit(summary(image))


def _select(store: ImageStore, p: ImagesParams) -> list[Image]:
    every = store.all()
    parents = {i.parent for i in every if i.parent}
    f = p.filters
    dangling = {v.lower() for v in f.get("dangling", [])}
    if dangling - {"true", "false", "1", "0"}:
        raise InvalidArgument(f"filters: invalid value for dangling: {sorted(dangling)[0]}")
    bounds = {k: store.resolve(v[0]).added for k, v in f.items() if k in ("before", "since") and v}
    chosen = []
    for image in every:
        untagged = not image.tags and not image.digests
        if dangling:
            if ("true" in dangling or "1" in dangling) != (untagged and image.id not in parents):
                continue
        elif untagged and image.id in parents and not p.all:
            continue  # an intermediate image
        if "before" in bounds and image.added >= bounds["before"]:
            continue
        if "since" in bounds and image.added <= bounds["since"]:
            continue
        if f.get("reference") and not _matches(image, f["reference"]):
            continue
        if f.get("label") and not _labelled(image, f["label"]):
            continue
        chosen.append(image)
    return chosen


def _matches(image: Image, patterns: list[str]) -> bool:
    names = [familiar_name(t) for t in image.tags]
    candidates = names + [n.rsplit(":", 1)[0] for n in names]
    return any(fnmatch.fnmatchcase(c, p) for p in patterns for c in candidates)


def _labelled(image: Image, wanted: list[str]) -> bool:
    config = image.json().get("config") or {}
    labels = config.get("Labels") or {} if isinstance(config, dict) else {}
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


async def image_inspect(job: Job[Any]) -> None:
    """Emit one image in Docker's ``/images/{name}/json`` shape."""
    store, driver = job.engine[IMAGES], job.engine[GRAPH_DRIVER]
    image = await asyncio.to_thread(store.resolve, job.args[0])
    config = image.json()
    history = config.get("history") or []
    last = history[-1] if isinstance(history, list) and history else {}
    rootfs = config.get("rootfs") or {}
    assert isinstance(rootfs, dict) and isinstance(last, dict)
    job.emit(
        {
            "Id": image.id,
            "RepoTags": [familiar_name(t) for t in image.tags],
            "RepoDigests": [familiar_name(d) for d in image.digests],
            "Parent": image.parent,
            "Comment": last.get("comment", ""),
            "Created": image.created,
            "DockerVersion": config.get("docker_version", ""),
            "Author": config.get("author", ""),
            "Config": {**CONFIG_DEFAULTS, **(config.get("config") or {})},  # type: ignore[dict-item]
            "Architecture": config.get("architecture", ""),
            "Variant": config.get("variant", ""),
            "Os": config.get("os", ""),
            "Size": image.size,
            "GraphDriver": {"Name": driver.name, "Data": None},
            "RootFS": {"Type": "layers", "Layers": rootfs.get("diff_ids", [])},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        }
    )


async def history(job: Job[Any]) -> None:
    """Emit the image's history, newest first (Docker's ``/images/{name}/history`` items)."""
    store, layers = job.engine[IMAGES], job.engine[LAYERS]
    rows = await asyncio.to_thread(_history, store, layers, job.args[0])
    for row in rows:
        job.emit(row)


def _history(store: ImageStore, layers: LayerStore, name: str) -> list[dict[str, object]]:
    image = store.resolve(name)
    lineage = [image, *(store.get(i) for i in store.ancestors(image.id))]
    ids_at = {len(_entries(i)): i for i in reversed(lineage)}  # history length → image
    sizes = iter(layers.get(layer).size for layer in image.layers)
    rows = []
    for n, entry in enumerate(_entries(image), start=1):
        owner = ids_at.get(n)
        rows.append(
            {
                "Id": owner.id if owner else "<missing>",
                "Created": unix_time(str(entry.get("created", ""))),
                "CreatedBy": entry.get("created_by", ""),
                "Tags": [familiar_name(t) for t in owner.tags] if owner and owner.tags else None,
                "Size": 0 if entry.get("empty_layer") else next(sizes, 0),
                "Comment": entry.get("comment", ""),
            }
        )
    return rows[::-1]


def _entries(image: Image) -> list[dict[str, object]]:
    history = image.json().get("history")
    if isinstance(history, list) and history:
        return [h for h in history if isinstance(h, dict)]
    return [{"created": image.created}]  # an image without history still has its layers


async def tag(job: Job[Any]) -> None:
    """Tag the image SOURCE as TARGET (``repo[:tag]``, tag ``latest`` by default)."""
    store = job.engine[IMAGES]
    target = parse(job.args[1])
    image = await asyncio.to_thread(store.resolve, job.args[0])
    await asyncio.to_thread(store.tag, image.id, target)
    image_event(job.engine, "tag", image, with_default_tag(target).familiar)


@dataclass(frozen=True, slots=True)
class DeleteParams:
    force: bool = field(default=False, metadata={"doc": "remove every tag of an image given by id"})
    noprune: bool = field(default=False, metadata={"doc": "keep untagged parents"})


async def image_delete(job: Job[DeleteParams]) -> None:
    """Untag and delete an image; emit {"Untagged": name} and {"Deleted": id} records."""
    try:
        users_of = job.engine[RUNTIME].store.users_of
    except Unavailable:  # an engine without containers (a tool, a test): no image is in use
        users_of = _no_users
    image = await asyncio.to_thread(job.engine[IMAGES].resolve, job.args[0])
    rows = await asyncio.to_thread(
        _delete, job.engine[IMAGES], job.engine[LAYERS], job.args[0], job.params, users_of
    )
    for row in rows:
        job.emit(row)
        if "Untagged" in row:
            image_event(job.engine, "untag", image, row["Untagged"])
        else:
            image_event(job.engine, "delete", row["Deleted"])


def _no_users(image: str) -> list[str]:
    return []


def _delete(
    store: ImageStore,
    layers: LayerStore,
    name: str,
    p: DeleteParams,
    users_of: Callable[[str], list[str]],
) -> list[dict[str, str]]:
    image = store.resolve(name)
    out: list[dict[str, str]] = []
    users = users_of(image.id)
    last_name = len(image.tags) + len(image.digests) <= 1
    if users and (named_by_id(image, name) or last_name):
        what = "image is being used by" if named_by_id(image, name) else "container is using its"
        raise FailedPrecondition(
            f"conflict: unable to delete {image.short_id} (cannot be forced) - "
            f"{what} container {users[0][:12]}"
            if named_by_id(image, name)
            else f'conflict: unable to remove repository reference "{name}" (must force) - '
            f"container {users[0][:12]} is using its referenced image {image.short_id}"
        )
    if not named_by_id(image, name):
        ref = parse(name)
        store.untag(ref if ref.digest else with_default_tag(ref))
        out.append(
            {"Untagged": familiar_name(str(with_default_tag(ref)) if not ref.digest else str(ref))}
        )
        image = store.get(image.id)
        if not ref.digest and not any(parse(t).name == ref.name for t in image.tags):
            # The repository's last tag went: its digest references go with it, as in Docker.
            for name_ in image.digests:
                if parse(name_).name == ref.name:
                    store.untag(parse(name_))
                    out.append({"Untagged": familiar_name(name_)})
            image = store.get(image.id)
        if image.tags or image.digests or store.children(image.id):
            return out
    else:
        store.refuse_if_parent(image.id)  # before any untagging: all or nothing
        if len(image.tags) > 1 and not p.force:
            raise FailedPrecondition(
                f"conflict: unable to delete {image.short_id} (must be forced) - "
                "image is referenced in multiple repositories"
            )
        for name_ in (*image.tags, *image.digests):
            store.untag(parse(name_))
            out.append({"Untagged": familiar_name(name_)})
    while True:
        layers.release(store.delete(image.id))
        out.append({"Deleted": image.id})
        if p.noprune or not image.parent:
            return out
        image = store.get(image.parent)
        if image.tags or image.digests or store.children(image.id) or users_of(image.id):
            return out  # a parent still named, built on or used by a container stays


def install(engine: Engine) -> None:
    """Register images, image_inspect, history, tag and image_delete."""
    engine.register("images", images, params=ImagesParams)
    engine.register("image_inspect", image_inspect, args=ArgSpec(("name",)))
    engine.register("history", history, args=ArgSpec(("name",)))
    engine.register("tag", tag, args=ArgSpec(("source", "target")))
    engine.register("image_delete", image_delete, params=DeleteParams, args=ArgSpec(("name",)))
