"""Volume jobs: ``volume_create``, ``volumes``, ``volume_inspect``, ``volume_rm``, ``volume_prune``.

Records use the Docker Engine API's shapes (``Volume``, ``VolumeListResponse``,
``VolumePruneResponse``) so the Docker routes and ``POST /jobs/{name}`` return the same data.
The store (``job.engine[VOLUMES]``) does the work; these handlers decode, call it off the event
loop and emit.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from engine import ArgSpec, Engine, Job
from engine.errors import NotFound
from graph.volumes import DRIVER
from jobs.events import log_event, volume_event
from jobs.services import VOLUMES


@dataclass(frozen=True, slots=True)
class CreateParams:
    name: str = field(default="", metadata={"doc": "volume name; empty: a random, anonymous one"})
    driver: str = field(default="local", metadata={"doc": "volume driver (only local)"})
    labels: dict[str, str] = field(default_factory=dict, metadata={"doc": "labels to set"})
    driver_opts: dict[str, str] = field(
        default_factory=dict, metadata={"doc": "driver options (none supported yet)"}
    )


async def volume_create(job: Job[CreateParams]) -> None:
    """Create a volume (or find the one of that name); emit it."""
    p = job.params
    store = job.engine[VOLUMES]
    volume = await asyncio.to_thread(store.create, p.name, p.driver, p.labels, p.driver_opts)
    volume_event(job.engine, "create", volume)
    job.emit(volume.record())


@dataclass(frozen=True, slots=True)
class ListParams:
    filters: dict[str, list[str]] = field(
        default_factory=dict, metadata={"doc": "name, label, dangling, driver (Docker's filters)"}
    )


async def volumes(job: Job[ListParams]) -> None:
    """Emit one record ``{"Volumes": [...], "Warnings": null}`` (Docker's ``GET /volumes``)."""
    chosen = await asyncio.to_thread(job.engine[VOLUMES].list, job.params.filters)
    job.emit({"Volumes": [v.record() for v in chosen], "Warnings": None})


async def volume_inspect(job: Job[Any]) -> None:
    """Emit one volume in Docker's ``/volumes/{name}`` shape."""
    volume = await asyncio.to_thread(job.engine[VOLUMES].get, job.args[0])
    job.emit(volume.record())


@dataclass(frozen=True, slots=True)
class RemoveParams:
    force: bool = field(default=False, metadata={"doc": "no error if the volume is absent"})


async def volume_rm(job: Job[RemoveParams]) -> None:
    """Remove a volume no container uses; emit nothing."""
    store, volume = job.engine[VOLUMES], None
    with contextlib.suppress(NotFound):  # for the event: forced removal of nothing logs none
        volume = await asyncio.to_thread(store.get, job.args[0])
    await asyncio.to_thread(store.remove, job.args[0], job.params.force)
    if volume is not None:
        volume_event(job.engine, "destroy", volume)


@dataclass(frozen=True, slots=True)
class PruneParams:
    filters: dict[str, list[str]] = field(
        default_factory=dict,
        metadata={"doc": "label, label!, all (all=true: named volumes too, not only anonymous)"},
    )


async def volume_prune(job: Job[PruneParams]) -> None:
    """Remove unused volumes; emit ``{"VolumesDeleted": [...], "SpaceReclaimed": n}``."""
    names, reclaimed = await asyncio.to_thread(job.engine[VOLUMES].prune, job.params.filters)
    for name in names:  # only the local driver exists
        log_event(job.engine, "volume", "destroy", name, {"driver": DRIVER})
    log_event(job.engine, "volume", "prune", "", {"reclaimed": str(reclaimed)})
    job.emit({"VolumesDeleted": names or None, "SpaceReclaimed": reclaimed})


def install(engine: Engine) -> None:
    """Register volume_create, volumes, volume_inspect, volume_rm and volume_prune."""
    engine.register("volume_create", volume_create, params=CreateParams)
    engine.register("volumes", volumes, params=ListParams)
    engine.register("volume_inspect", volume_inspect, args=ArgSpec(("name",)))
    engine.register("volume_rm", volume_rm, params=RemoveParams, args=ArgSpec(("name",)))
    engine.register("volume_prune", volume_prune, params=PruneParams)
