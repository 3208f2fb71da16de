"""The ``pull`` job: an image from a registry into the store, verified before it is visible.

Flow: resolve the reference (``registry.remote.resolve``: tag or digest, the index entry for the
platform), fetch and verify the config, then pull the layers the store lacks. Up to
``max_downloads`` blobs download at once into spool files under ``tmp/pull-<job id>/``; one
worker thread applies them in chain order, each while it is still arriving
(``registry.download``), so the last byte downloaded is close to the last byte applied. A
layer becomes ready only when its blob matched its digest and its tar matched the config's
diff_id; the image, its tag and its repo digest are written in one transaction at the end. On
any failure the layers this pull made are released and the spools removed: nothing half-made is
left, and ``LayerStore.recover`` clears what a killed daemon left.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import ArgSpec, Engine, Job
from engine.crashpoint import reach
from engine.errors import InvalidArgument, NotFound, Unauthenticated
from graph.blobs import BlobRecord
from graph.images import ImageNotFound, ImageStore, diff_ids_of, image_id
from graph.layers import Layer, LayerStore, chain_id
from graph.reference import Reference, parse, with_default_tag
from jobs.events import image_event
from jobs.layerpull import LayerPull
from jobs.progress import short, status
from jobs.services import BLOBS, DAEMON, IMAGES, LAYERS, REGISTRY
from registry.client import Repository
from registry.download import fetch_small
from registry.manifest import MAX_CONFIG, Platform, parse_platform
from registry.remote import Resolved, resolve, tags


@dataclass(frozen=True, slots=True)
class PullParams:
    tag: str = field(default="", metadata={"doc": "a tag or sha256 digest (overrides the name's)"})
    platform: str = field(default="", metadata={"doc": "os[/arch[/variant]]; default this host"})
    all_tags: bool = field(default=False, metadata={"doc": "pull every tag of the repository"})
    auth: str = field(
        default="", metadata={"secret": True, "doc": "X-Registry-Auth: base64url JSON credentials"}
    )


def reference_of(name: str, tag: str) -> Reference:
    """The reference to pull: *name*, with *tag* (a tag or a digest) when given."""
    ref = parse(name)
    if not tag:
        return ref
    if tag.startswith("sha256:") or ":" in tag:
        return parse(f"{ref.name}@{tag}")
    return parse(f"{ref.name}:{tag}")


async def pull(job: Job[PullParams]) -> None:
    """Pull an image (or every tag of a repository) from its registry."""
    p = job.params
    ref = reference_of(job.args[0], p.tag)
    want = parse_platform(p.platform)
    service = job.engine[REGISTRY]
    auth = service.auth(ref.domain, p.auth)
    work = job.engine[DAEMON].data_root / "tmp" / f"pull-{job.id}"
    async with service.session() as http:
        try:
            repo = await Repository.open(service.config, http, ref.domain, ref.path, auth)
            if p.all_tags and not ref.tag and not ref.digest:
                names = [parse(f"{ref.name}:{t}") for t in await tags(repo)]
                job.emit(status(f"Pulling from {ref.path}", "all tags"))
            else:
                names = [ref if ref.digest else with_default_tag(ref)]
            for one in names:
                await _pull_one(job, repo, one, want, work)
        except Unauthenticated as exc:
            raise Unauthenticated(
                f"pull access denied for {parse(ref.name).familiar}, repository does not exist "
                f"or may require 'docker login': {exc}"
            ) from None
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)


async def _pull_one(
    job: Job[Any], repo: Repository, ref: Reference, want: Platform, work: Path
) -> None:
    images, layers = job.engine[IMAGES], job.engine[LAYERS]
    resolved = await resolve(repo, ref.digest or ref.tag, want)
    reach("pull.after_manifest")
    job.emit(status(f"Pulling from {ref.path}", ref.tag or ref.digest))
    config, chain, fresh = await _content(job, repo, resolved, work)
    reach("pull.after_extract_before_db")
    digest_ref = parse(f"{ref.name}@{resolved.digest}")
    names = [digest_ref] if ref.digest else [ref, digest_ref]
    before = await asyncio.to_thread(_tagged, images, ref)
    try:
        image = await asyncio.to_thread(images.add, config, chain, "", names)
    except BaseException:
        await asyncio.to_thread(layers.release, [layer.id for layer in fresh])
        raise
    reach("pull.after_db_before_tag")
    job.emit(status(f"Digest: {resolved.digest}"))
    newer = before != image.id
    word = "Downloaded newer image" if newer else "Image is up to date"
    job.emit(status(f"Status: {word} for {ref.familiar}"))
    image_event(job.engine, "pull", image, ref.familiar)


def _tagged(images: ImageStore, ref: Reference) -> str:
    try:
        return str(images.resolve(str(ref)).id)
    except (ImageNotFound, InvalidArgument):
        return ""


async def _content(
    job: Job[Any], repo: Repository, resolved: Resolved, work: Path
) -> tuple[bytes, list[Layer], list[Layer]]:
    """The config and layer chain of *resolved*, pulling what is missing; and the new layers."""
    images, layers = job.engine[IMAGES], job.engine[LAYERS]
    manifest = resolved.manifest
    try:
        config = (await asyncio.to_thread(images.get, manifest.config.digest)).config
    except ImageNotFound:
        config = await fetch_small(repo, manifest.config, MAX_CONFIG, "image config")
    if image_id(config) != manifest.config.digest:  # a stored image is its config's digest
        raise InvalidArgument(f"image config verification failed for {manifest.config.digest}")
    try:
        diff_ids = diff_ids_of(config)
    except InvalidArgument:
        raise InvalidArgument(
            f"{repo.endpoint.registry}: invalid rootfs in image configuration"
        ) from None
    if len(diff_ids) != len(manifest.layers):
        raise InvalidArgument(
            f"{repo.endpoint.registry}: layers from manifest don't match image configuration "
            f"({len(manifest.layers)} layers, {len(diff_ids)} diff_ids)"
        )
    have = await asyncio.to_thread(_present, layers, diff_ids)
    for i, blob in enumerate(manifest.layers):
        text = "Already exists" if i < len(have) else "Pulling fs layer"
        job.emit(status(text, short(blob.digest)))
    if len(have) == len(diff_ids):
        return config, have, []
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    fresh = await _pull_layers(job, repo, resolved, diff_ids, have, work)
    return config, have + fresh, fresh


def _present(layers: LayerStore, diff_ids: list[str]) -> list[Layer]:
    """The layers of the chain already stored, base first, up to the first missing one."""
    out: list[Layer] = []
    chain = ""
    for diff_id in diff_ids:
        chain = chain_id(chain, diff_id)
        try:
            out.append(layers.by_chain(chain))
        except NotFound:
            break
    return out


async def _pull_layers(
    job: Job[Any],
    repo: Repository,
    resolved: Resolved,
    diff_ids: list[str],
    have: list[Layer],
    work: Path,
) -> list[Layer]:
    service, layers = job.engine[REGISTRY], job.engine[LAYERS]
    slots = asyncio.Semaphore(service.max_downloads)
    blobs = resolved.manifest.layers
    pulls = [
        LayerPull(repo, blobs[i], diff_ids[i], work / str(i), slots, service.retry, job.emit)
        for i in range(len(have), len(blobs))
    ]
    for one in pulls:
        one.start()
    fresh: list[Layer] = []
    parent = have[-1].id if have else ""
    try:
        for one in pulls:
            layer = await one.apply(layers, parent)
            fresh.append(layer)
            parent = layer.id
            await asyncio.to_thread(_remember, job, repo, one, layer)
    except BaseException:
        for one in pulls:
            await one.stop()
        await asyncio.to_thread(layers.release, [layer.id for layer in reversed(fresh)])
        raise
    return fresh


def _remember(job: Job[Any], repo: Repository, one: LayerPull, layer: Layer) -> None:
    blob, where = one.blob, repo.endpoint.registry
    record = BlobRecord(layer.diff_id, blob.digest, blob.media_type, blob.size, where, repo.path)
    job.engine[BLOBS].remember(record)


def install(engine: Engine) -> None:
    """Register pull."""
    engine.register("pull", pull, params=PullParams, args=ArgSpec(("reference",)))
