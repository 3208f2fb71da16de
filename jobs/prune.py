"""Prune jobs: ``container_prune`` and ``image_prune`` (Docker's ``POST /containers/prune`` and
``POST /images/prune``), and the filter rules every prune shares.

Vocabulary: a *prune* removes what nothing needs: stopped containers (``created``, ``exited``,
``dead``; never ``running``, ``paused`` or ``restarting``), and images no container uses (only
*dangling* ones, untagged and without children, unless ``dangling=false``). Docker's prune
filters pick among them: ``until`` (created before a time: RFC 3339, unix seconds or a duration
ago such as ``10m``), ``label`` (``k`` or ``k=v``; every one must match) and ``label!`` (left out
when every one matches). Each removal is the job that removes one object (``container_delete``,
``image_delete``), so a prune cleans up exactly as ``rm`` and ``rmi`` do; a removal that fails
(the container was started meanwhile, the image was taken) is logged and skipped, as dockerd
does. The response lists what was removed and the bytes reclaimed: a container's writable layer,
an image's layers that no other image keeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from drivers.logging.jsonfile import parse_time
from engine import Engine, Job
from engine.errors import EngineError, InvalidArgument, Unavailable
from graph.containers import Container
from graph.images import Image, ImageStore
from graph.layers import LayerStore
from jobs.containerinfo import rw_size
from jobs.events import log_event
from jobs.runtime import Runtime
from jobs.services import IMAGES, LAYERS, RUNTIME

log = logging.getLogger(__name__)

Filters = Mapping[str, Sequence[str]]
CONTAINER_FILTERS: Final = frozenset({"label", "label!", "until"})
IMAGE_FILTERS: Final = frozenset({"dangling", "label", "label!", "until"})
_TRUE: Final = frozenset({"1", "true"})
_FALSE: Final = frozenset({"0", "false"})


# -- the filters every prune shares --------------------------------------------------------------


def check_filters(filters: Filters, accepted: frozenset[str]) -> None:
    """Raise InvalidArgument (dockerd's ``invalid filter 'x'``) for a filter not in *accepted*."""
    unknown = sorted(set(filters) - accepted)
    if unknown:
        raise InvalidArgument(f"invalid filter '{unknown[0]}'")


def until_of(filters: Filters) -> float | None:
    """The ``until`` filter as unix seconds (None when absent); InvalidArgument if malformed."""
    values = list(filters.get("until", []))
    if not values:
        return None
    if len(values) > 1:
        raise InvalidArgument("more than one until filter specified")
    return parse_time(values[0], field="until")


def created_at(stamp: str) -> float | None:
    """Unix seconds of an RFC 3339 creation time; None when it is missing or malformed."""
    try:
        return parse_time(stamp, field="created") if stamp else None
    except InvalidArgument:
        return None


def bool_filter(filters: Filters, key: str, default: bool) -> bool:
    """A boolean filter (``true``/``1`` or ``false``/``0``), *default* when absent."""
    if key not in filters:
        return default
    values = {v.lower() for v in filters[key]}
    yes, no = bool(values & _TRUE), bool(values & _FALSE)
    if yes == no:
        raise InvalidArgument(f"invalid filter '{key}={','.join(sorted(values))}'")
    return yes


def _all_match(wanted: Sequence[str], labels: Mapping[str, str]) -> bool:
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def labels_match(filters: Filters, labels: Mapping[str, str]) -> bool:
    """Docker's prune label rule: every ``label`` matches, and not every ``label!`` does."""
    if not _all_match(filters.get("label", []), labels):
        return False
    excluded = filters.get("label!", [])
    return not (excluded and _all_match(excluded, labels))


def chosen(filters: Filters, until: float | None, created: str, labels: Mapping[str, str]) -> bool:
    """Whether an object created at *created* with *labels* passes ``until`` and the labels."""
    if until is not None:
        when = created_at(created)
        if when is None or when > until:
            return False
    return labels_match(filters, labels)


@dataclass(frozen=True, slots=True)
class PruneParams:
    filters: dict[str, list[str]] = field(
        default_factory=dict,
        metadata={"doc": "until, label, label! (and dangling for images): Docker's prune filters"},
    )


# -- containers ----------------------------------------------------------------------------------


def stopped(rt: Runtime, filters: Filters, until: float | None) -> list[Container]:
    """The stopped containers that pass *filters*, oldest first."""
    every = sorted(rt.containers.values(), key=lambda c: c.created)
    return [
        c
        for c in every
        if not c.state.running
        and c.state.status != "removing"
        and chosen(filters, until, c.created, c.config.get("Labels") or {})
    ]


async def container_prune(job: Job[PruneParams]) -> None:
    """Remove every stopped container that matches the filters; emit
    ``{"ContainersDeleted", "SpaceReclaimed"}``."""
    filters = job.params.filters
    check_filters(filters, CONTAINER_FILTERS)
    until = until_of(filters)
    rt, differ = job.engine[RUNTIME], job.engine[LAYERS].differ
    deleted: list[str] = []
    reclaimed = 0
    for c in stopped(rt, filters, until):
        size = await asyncio.to_thread(rw_size, differ, c.id)
        try:
            await job.engine.call("container_delete", c.id)
        except EngineError as exc:  # started or removed meanwhile: dockerd skips it too
            log.warning("prune: kept container %s: %s", c.short_id, exc)
            continue
        deleted.append(c.id)
        reclaimed += size
    log_event(job.engine, "container", "prune", "", {"reclaimed": str(reclaimed)})
    job.emit({"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed})


# -- images --------------------------------------------------------------------------------------


def image_labels(image: Image) -> dict[str, str]:
    """The image config's ``Labels``."""
    config = image.json().get("config")
    labels = config.get("Labels") if isinstance(config, dict) else None
    return dict(labels) if isinstance(labels, dict) else {}


def prunable(
    store: ImageStore,
    users_of: Callable[[str], list[str]],
    filters: Filters,
    dangling_only: bool,
    until: float | None,
) -> list[Image]:
    """The images a prune removes, newest first: dangling heads (or, with *dangling_only* off,
    every image but intermediate ones, which go with their child), none a container uses."""
    every = store.all()
    parents = {i.parent for i in every if i.parent}
    out = []
    for image in every:
        has_children = image.id in parents
        if dangling_only and (has_children or image.tags):
            continue
        if has_children and not image.tags and not image.digests:
            continue  # an intermediate image: removed with the image built on it
        if not chosen(filters, until, image.created, image_labels(image)):
            continue
        if users_of(image.id):
            continue
        out.append(image)
    return out


def names_to_delete(image: Image, dangling_only: bool) -> list[str]:
    """What to hand ``image_delete``: the id of an untagged image, else each of its references
    (the last one removed deletes the image)."""
    if dangling_only or not image.tags:
        return [image.id]
    return [*image.tags, *image.digests]


def layer_sizes(layers: LayerStore) -> dict[str, int]:
    """Every ready layer's size, by layer id."""
    return {layer.id: layer.size for layer in layers.all()}


def _users(engine: Engine) -> Callable[[str], list[str]]:
    try:
        return engine[RUNTIME].store.users_of
    except Unavailable:  # an engine without containers (a tool, a test): no image is in use
        return lambda image: []


async def _delete_image(engine: Engine, name: str) -> list[dict[str, Any]]:
    """Run ``image_delete`` on *name*; its records, also those emitted before a failure."""
    job = engine.job("image_delete", name)
    records: list[dict[str, Any]] = []
    job.stdout.attach(lambda record: records.append(dict(record)))
    try:
        await job.run()
    except EngineError as exc:  # taken or removed meanwhile: dockerd skips it too
        log.info("prune: kept image %s: %s", name, exc)
    return records


async def image_prune(job: Job[PruneParams]) -> None:
    """Remove images no container uses (only dangling ones unless ``dangling=false``); emit
    ``{"ImagesDeleted", "SpaceReclaimed"}``."""
    filters = job.params.filters
    check_filters(filters, IMAGE_FILTERS)
    dangling_only = bool_filter(filters, "dangling", True)
    until = until_of(filters)
    engine = job.engine
    store, layers = engine[IMAGES], engine[LAYERS]
    before = await asyncio.to_thread(layer_sizes, layers)
    images = await asyncio.to_thread(prunable, store, _users(engine), filters, dangling_only, until)
    deleted: list[dict[str, Any]] = []
    for image in images:
        for name in names_to_delete(image, dangling_only):
            deleted += await _delete_image(engine, name)
    after = await asyncio.to_thread(layer_sizes, layers)
    reclaimed = sum(size for id, size in before.items() if id not in after)
    log_event(engine, "image", "prune", "", {"reclaimed": str(reclaimed)})
    job.emit({"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed})


def install(engine: Engine) -> None:
    """Register container_prune and image_prune."""
    engine.register("container_prune", container_prune, params=PruneParams)
    engine.register("image_prune", image_prune, params=PruneParams)
