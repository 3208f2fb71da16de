"""The ``push`` job: an image's layers, config and a schema 2 manifest to a registry.

Per layer, cheapest first: a blob the registry is known to hold in this repository (asked with
``HEAD``: "Layer already exists"); one it holds in another repository of the same registry
(mounted: "Mounted from …"); else the layer's gzip blob, from the daemon's cache or compressed
now into it (so the next push does not compress again), asked for with ``HEAD`` and uploaded if
missing. Up to ``max_uploads`` layers are pushed at once. Then the config, then the manifest;
the manifest's digest is reported, recorded as the image's repo digest, and returned in an
``aux`` message as dockerd does.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from engine import ArgSpec, Engine, Job
from engine.errors import InvalidArgument, NotFound
from engine.streams import in_thread
from graph.blobs import BlobRecord, BlobStore
from graph.images import Image, ImageStore
from graph.layers import LayerStore
from graph.reference import Reference, parse
from jobs.events import image_event
from jobs.progress import Throttle, short, status
from jobs.services import BLOBS, DAEMON, IMAGES, LAYERS, REGISTRY
from registry.client import Repository
from registry.manifest import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, Descriptor
from registry.manifest import image_manifest as make_manifest
from registry.remote import exists, mount, put_manifest, upload

GZIP_LEVEL: Final = 1  # fast: layers are mostly already-compressed binaries
_GZIP_TYPES: Final = frozenset({DOCKER_LAYER, "application/vnd.oci.image.layer.v1.tar+gzip"})
_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class PushParams:
    tag: str = field(default="", metadata={"doc": "the tag to push; '' = every tag of the repo"})
    auth: str = field(
        default="", metadata={"secret": True, "doc": "X-Registry-Auth: base64url JSON credentials"}
    )


async def push(job: Job[PushParams]) -> None:
    """Push an image (one tag, or every tag of the repository) to its registry."""
    p = job.params
    ref = parse(job.args[0])
    if ref.digest:
        raise InvalidArgument(f"name: {job.args[0]}: cannot push a digest reference")
    if p.tag:
        ref = parse(f"{ref.name}:{p.tag}")
    targets = await asyncio.to_thread(_targets, job.engine[IMAGES], ref)
    service = job.engine[REGISTRY]
    job.emit(status(f"The push refers to repository [{ref.name}]"))
    auth = service.auth(ref.domain, p.auth)
    try:
        async with service.session() as http:
            repo = await Repository.open(
                service.config, http, ref.domain, ref.path, auth, "pull,push"
            )
            for tag, image in targets:
                await _push_one(job, repo, tag, image)
    finally:
        work = job.engine[DAEMON].data_root / "tmp" / f"push-{job.id}"
        await asyncio.to_thread(shutil.rmtree, work, True)


def _targets(images: ImageStore, ref: Reference) -> list[tuple[Reference, Image]]:
    if ref.tag:
        try:
            return [(ref, images.resolve(str(ref)))]
        except NotFound:
            raise NotFound(f"tag does not exist: {ref.familiar}") from None
    out = []
    for image in images.all():
        for name in image.tags:
            tagged = parse(name)
            if tagged.name == ref.name:
                out.append((tagged, image))
    if not out:
        raise NotFound(f"An image does not exist locally with the tag: {ref.familiar}")
    return sorted(out, key=lambda item: item[0].tag)


async def _push_one(job: Job[Any], repo: Repository, ref: Reference, image: Image) -> None:
    layers, service = job.engine[LAYERS], job.engine[REGISTRY]
    chain = [await asyncio.to_thread(layers.get, id) for id in image.layers]
    for layer in reversed(chain):
        job.emit(status("Preparing", short(layer.diff_id)))
    slots = asyncio.Semaphore(service.max_uploads)
    pushes = [_push_layer(job, repo, layer.id, layer.diff_id, slots) for layer in chain]
    descriptors = list(await asyncio.gather(*pushes))
    config = Descriptor(DOCKER_CONFIG, image.id, len(image.config))
    if not await exists(repo, image.id):
        staged = _staging(job) / f"config-{image.id[7:19]}"
        await asyncio.to_thread(staged.write_bytes, image.config)
        try:
            await upload(repo, config, staged, lambda n: None)
        finally:
            staged.unlink(missing_ok=True)
    manifest = make_manifest(config, descriptors)
    digest = await put_manifest(repo, ref.tag, manifest, DOCKER_MANIFEST)
    await asyncio.to_thread(job.engine[IMAGES].name, image.id, [parse(f"{ref.name}@{digest}")])
    job.emit(status(f"{ref.tag}: digest: {digest} size: {len(manifest)}"))
    job.emit({"progressDetail": {}, "aux": {"Tag": ref.tag, "Digest": digest,
                                             "Size": len(manifest)}})  # fmt: skip
    image_event(job.engine, "push", image, ref.familiar)


def _staging(job: Job[Any]) -> Path:
    path: Path = job.engine[DAEMON].data_root / "tmp" / f"push-{job.id}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


async def _push_layer(
    job: Job[Any], repo: Repository, layer_id: str, diff_id: str, slots: asyncio.Semaphore
) -> Descriptor:
    blobs, id = job.engine[BLOBS], short(diff_id)
    registry, path = repo.endpoint.registry, repo.path
    if slots.locked():
        job.emit(status("Waiting", id))
    async with slots:
        known = await asyncio.to_thread(blobs.known, diff_id, registry)
        for record in (r for r in known if r.media_type in _GZIP_TYPES):
            desc = Descriptor(DOCKER_LAYER, record.digest, record.size)
            if record.repository == path:
                if await exists(repo, record.digest):
                    job.emit(status("Layer already exists", id))
                    return desc
                await asyncio.to_thread(blobs.forget, record.digest, registry, path)
            elif await mount(repo, record.digest, record.repository):
                job.emit(status(f"Mounted from {record.repository}", id))
                await asyncio.to_thread(blobs.remember, _at(record, registry, path))
                return desc
        cached = await asyncio.to_thread(blobs.cached, diff_id)
        if cached is None:
            staged = _staging(job) / f"layer-{layer_id}"
            layers = job.engine[LAYERS]
            cached = await in_thread(lambda stop: _compress(layers, blobs, layer_id, diff_id,
                                                            staged, stop))  # fmt: skip
        desc = Descriptor(DOCKER_LAYER, cached.digest, cached.size)
        if await exists(repo, cached.digest):
            job.emit(status("Layer already exists", id))
        else:
            shown = Throttle(job.emit, "Pushing", id, cached.size)
            await upload(repo, desc, blobs.path(cached.digest), shown)
            job.emit(status("Pushed", id))
        await asyncio.to_thread(blobs.remember, _at(cached, registry, path))
        return desc


def _at(record: BlobRecord, registry: str, repository: str) -> BlobRecord:
    return BlobRecord(record.diff_id, record.digest, DOCKER_LAYER, record.size, registry,
                      repository)  # fmt: skip


def _compress(
    layers: LayerStore,
    blobs: BlobStore,
    layer_id: str,
    diff_id: str,
    staged: Path,
    stop: threading.Event,
) -> BlobRecord:
    """Gzip layer *layer_id*'s tar into the blob cache (checking it is *diff_id* on the way)."""
    raw, packed = hashlib.sha256(), hashlib.sha256()
    gzip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    size = 0
    try:
        with open(layers.tar_path(layer_id), "rb") as src, open(staged, "wb") as out:
            while chunk := src.read(_CHUNK):
                if stop.is_set():
                    raise InvalidArgument("push cancelled")
                raw.update(chunk)
                data = gzip.compress(chunk)
                packed.update(data)
                out.write(data)
                size += len(data)
            data = gzip.flush()
            packed.update(data)
            out.write(data)
            size += len(data)
        if "sha256:" + raw.hexdigest() != diff_id:
            raise InvalidArgument(f"layer {diff_id}: its stored tar no longer matches its digest")
        record = BlobRecord(diff_id, "sha256:" + packed.hexdigest(), DOCKER_LAYER, size, "", "")
        blobs.keep(staged, record)
        return record
    finally:
        if staged.exists():
            os.unlink(staged)


def install(engine: Engine) -> None:
    """Register push."""
    engine.register("push", push, params=PushParams, args=ArgSpec(("name",)))
