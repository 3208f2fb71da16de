"""The ``system_df`` job: Docker's ``GET /system/df`` (what images, containers and volumes hold
on disk).

Vocabulary, as Docker's: ``LayersSize`` is the bytes of every layer some image uses, each
counted once. An image's ``Size`` counts all its layers, its ``SharedSize`` those another image
uses too, and ``Containers`` how many containers (in any state) were made from it. A container's
``SizeRw`` is its writable layer, ``SizeRootFs`` that plus its image. A volume's ``UsageData``
is the bytes in its data directory and how many containers use it. The legacy builder keeps no
build cache, so ``BuildCache`` is empty.

The records come from the list jobs and their builders (``images``, ``containers`` with sizes,
``Volume.record``); this job adds the usage figures. Sizes come from the layer store, which
recorded each layer's size when it was made; only container layers and volumes are measured.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from engine import Engine, Job
from engine.errors import InvalidArgument, Unavailable
from graph.images import ImageStore
from graph.layers import LayerStore
from graph.volumes import VolumeNotFound, VolumeStore
from jobs.services import IMAGES, LAYERS, RUNTIME, VOLUMES

TYPES: Final = ("container", "image", "volume", "build-cache")


@dataclass(frozen=True, slots=True)
class DiskUsageParams:
    type: list[str] = field(
        default_factory=list,
        metadata={"doc": "container, image, volume, build-cache (repeatable; all when empty)"},
    )


def image_usage(
    store: ImageStore,
    layers: LayerStore,
    listed: Sequence[Mapping[str, Any]],
    containers: Mapping[str, int],
) -> tuple[int, list[dict[str, Any]]]:
    """``LayersSize`` and the *listed* image summaries with ``SharedSize`` and ``Containers``
    filled in (*containers*: image id → how many containers use it)."""
    every = {image.id: image for image in store.all()}
    sizes = {layer.id: layer.size for layer in layers.all()}
    users = Counter(layer for image in every.values() for layer in set(image.layers))
    rows = []
    for summary in listed:
        image = every.get(str(summary["Id"]))
        if image is None:
            continue  # removed since it was listed
        own = set(image.layers)
        shared = sum(sizes.get(layer, 0) for layer in own if users[layer] > 1)
        rows.append({**summary, "SharedSize": shared, "Containers": containers.get(image.id, 0)})
    return sum(sizes.get(layer, 0) for layer in users), rows


def volume_usage(store: VolumeStore) -> list[dict[str, object]]:
    """Every volume in Docker's shape with ``UsageData`` (bytes, containers using it)."""
    used = store.used()
    rows = []
    for volume in store.all():
        try:
            size = store.size(volume.name)
        except VolumeNotFound:
            continue  # removed since it was listed
        rows.append(volume.record((size, used.get(volume.name, 0))))
    return rows


def _containers_per_image(engine: Engine) -> dict[str, int]:
    try:
        every = engine[RUNTIME].containers.values()
    except Unavailable:  # an engine without containers (a tool, a test)
        return {}
    return dict(Counter(c.image for c in every))


async def system_df(job: Job[DiskUsageParams]) -> None:
    """Emit Docker's disk usage record: ``LayersSize``, ``Images``, ``Containers``, ``Volumes``
    and ``BuildCache`` (a type not asked for is null)."""
    kinds = set(job.params.type) or set(TYPES)
    unknown = sorted(kinds - set(TYPES))
    if unknown:
        raise InvalidArgument(f"type: unknown object type: {unknown[0]}")
    engine = job.engine
    record: dict[str, Any] = {"LayersSize": 0, "Images": None, "Containers": None,
                              "Volumes": None, "BuildCache": None}  # fmt: skip
    if "image" in kinds:
        listed = await engine.call("images")
        record["LayersSize"], record["Images"] = await asyncio.to_thread(
            image_usage, engine[IMAGES], engine[LAYERS], listed, _containers_per_image(engine)
        )
    else:
        del record["LayersSize"]  # as dockerd, which leaves it out when it is 0
    if "container" in kinds:
        containers = await engine.call("containers", all=True, size=True)
        record["Containers"] = [dict(c) for c in containers]
    if "volume" in kinds:
        record["Volumes"] = await asyncio.to_thread(volume_usage, engine[VOLUMES])
    if "build-cache" in kinds:
        record["BuildCache"] = []
    job.emit(record)


def install(engine: Engine) -> None:
    """Register system_df."""
    engine.register("system_df", system_df, params=DiskUsageParams)
