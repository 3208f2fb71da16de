"""Images in and out as files: ``import`` (a root file system), ``load`` and ``image_export``.

Data streams through: a job's stdin is read by the thread that applies layers, and a saved tar
is written to the job's raw output as it is produced, both with the event loop's backpressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import aiohttp

from engine import ArgSpec, Engine, Job
from engine.errors import Cancelled, InvalidArgument, Unavailable
from engine.streams import Read, in_thread, reader, writer
from graph.imageconfig import apply_changes, encode, new_config
from graph.images import Image, ImageStore, image_id
from graph.imagetar import ArchiveImage, LayerBlob, read_archive, write_archive
from graph.layers import Layer, LayerStore
from graph.reference import Reference, parse, with_default_tag
from jobs.events import image_event
from jobs.images import named_by_id
from jobs.services import DAEMON, IMAGES, LAYERS


@dataclass(frozen=True, slots=True)
class ImportParams:
    changes: tuple[str, ...] = field(
        default=(), metadata={"doc": "Dockerfile instructions: CMD, ENV, WORKDIR, ENTRYPOINT, …"}
    )
    message: str = field(default="", metadata={"doc": "a comment for the image's history"})


async def import_(job: Job[ImportParams]) -> None:
    """Import a root file system tar ('-' = stdin, or an http(s) URL) as an image; emit its id."""
    source, p = job.args[0], job.params
    ref = with_default_tag(parse(job.args[1])) if len(job.args) > 1 else None
    if ref and ref.digest:
        raise InvalidArgument(f"reference: {job.args[1]}: an image is tagged, not given a digest")
    run_config = apply_changes({}, p.changes)  # refuse bad changes before reading anything
    layers, images = job.engine[LAYERS], job.engine[IMAGES]
    loop = asyncio.get_running_loop()

    def work(read: Read, stop: threading.Event) -> Image:
        layer = layers.register(reader(read, stop, loop))
        try:
            if stop.is_set():
                raise Cancelled("the job was cancelled")
            config = new_config([layer.diff_id], f"dockyard import {source}", p.message)
            config["config"] = run_config
            image = images.add(encode(config), [layer])
            if ref:
                images.tag(image.id, ref)
            return image
        except BaseException:
            layers.release([layer.id])
            raise

    async with _source(job, source) as read:
        image = await in_thread(lambda stop: work(read, stop))
    if ref:
        image_event(job.engine, "tag", image, ref.familiar)
    image_event(job.engine, "import", image)
    job.emit({"status": image.id})


@contextlib.asynccontextmanager
async def _source(job: Job[Any], source: str) -> AsyncIterator[Read]:
    if source == "-":
        yield job.stdin.read
    elif source.startswith(("http://", "https://")):
        try:
            async with aiohttp.ClientSession() as session, session.get(source) as response:
                if response.status != 200:
                    raise Unavailable(f"{source}: HTTP {response.status} {response.reason}")
                yield response.content.read
        except aiohttp.ClientError as exc:
            raise Unavailable(f"{source}: {exc}") from None
    else:
        raise InvalidArgument(f"source: {source!r}: give '-' (the request body) or an http(s) URL")


@dataclass(frozen=True, slots=True)
class LoadParams:
    quiet: bool = field(
        default=False, metadata={"doc": "no progress; the 'Loaded image' lines come regardless"}
    )


async def load(job: Job[LoadParams]) -> None:
    """Load a docker-archive or OCI layout tar from stdin; emit {"stream": "Loaded image: …"}."""
    loop = asyncio.get_running_loop()
    work = job.engine[DAEMON].data_root / "tmp" / f"load-{job.id}"
    store, layers = job.engine[IMAGES], job.engine[LAYERS]

    def say(text: str) -> None:
        loop.call_soon_threadsafe(job.emit, {"stream": text + "\n"})

    def loaded(image: Image, name: str) -> None:  # in the worker thread: the log allows it
        image_event(job.engine, "load", image, name)

    def run(stop: threading.Event) -> None:
        _load(store, layers, reader(job.stdin.read, stop, loop), work, say, stop, loaded)

    try:
        await in_thread(run)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)


def _load(
    store: ImageStore,
    layers: LayerStore,
    stream: BinaryIO,
    work: Path,
    say: Callable[[str], None],
    stop: threading.Event,
    loaded: Callable[[Image, str], None] = lambda image, name: None,
) -> None:
    work.mkdir(parents=True, exist_ok=True)
    registered: list[str] = []  # released again if the load fails: no image, no stray layers
    try:
        with read_archive(stream, work) as archive:
            for item in archive:
                chain: list[Layer] = []
                for blob in item.layers:
                    _check(stop)
                    parent = chain[-1].id if chain else ""
                    if blob.path is not None:
                        chain.append(layers.register_file(blob.path, parent, blob.diff_id))
                    else:
                        with blob.open() as f:
                            chain.append(layers.register(f, parent, blob.diff_id))
                    registered.append(chain[-1].id)
                _check(stop)
                image = store.add(item.config, chain)
                registered.clear()  # from here on, the image holds them
                for name in item.repo_tags:
                    old = store.tag(image.id, parse(name))
                    if old:
                        say(f"The image {name} already exists, renaming the old one with ID {old} "
                            "to empty string")  # fmt: skip
                    say(f"Loaded image: {name}")
                    loaded(image, name)
                if not item.repo_tags:
                    say(f"Loaded image ID: {image.id}")
                    loaded(image, image.id)
    except BaseException:
        layers.release(registered)
        raise


def _check(stop: threading.Event) -> None:
    if stop.is_set():
        raise Cancelled("the job was cancelled")


async def image_export(job: Job[Any]) -> None:
    """Write one tar of the named images (docker-archive and OCI layout) to the raw output."""
    store, layers = job.engine[IMAGES], job.engine[LAYERS]
    images = await asyncio.to_thread(lambda: [_archived(store, layers, n) for n in job.args])
    loop = asyncio.get_running_loop()

    def save(stop: threading.Event) -> None:
        out = writer(job.stdout.write, stop, loop)
        write_archive(cast(BinaryIO, out), images)
        out.flush()

    await in_thread(save)
    for item in images:
        image_event(job.engine, "save", image_id(item.config), (*item.repo_tags, "")[0])


def _archived(store: ImageStore, layers: LayerStore, name: str) -> ArchiveImage:
    image = store.resolve(name)
    ref = None if named_by_id(image, name) else parse(name)
    return ArchiveImage(
        config=image.config,
        layers=tuple(_blob(layers, layer_id) for layer_id in image.layers),
        repo_tags=(_tag_name(ref),) if ref else (),
    )


def _tag_name(ref: Reference) -> str:
    return (ref if ref.digest else with_default_tag(ref)).familiar


def _blob(layers: LayerStore, layer_id: str) -> LayerBlob:
    path = layers.tar_path(layer_id)
    return LayerBlob(
        diff_id=layers.get(layer_id).diff_id,
        open=lambda: cast(BinaryIO, open(path, "rb")),
        size=path.stat().st_size,
    )


def install(engine: Engine) -> None:
    """Register import, load and image_export."""
    engine.register(
        "import", import_, params=ImportParams, args=ArgSpec(("source",), optional=("reference",))
    )
    engine.register("load", load, params=LoadParams)
    engine.register("image_export", image_export, args=ArgSpec(("name",), "name"))
