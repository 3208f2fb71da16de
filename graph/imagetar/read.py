"""Read an image archive: a docker-archive (``docker save``, skopeo, podman) or an OCI layout.

The archive is streamed once into a private directory under the caller's workdir (see
``members``); nothing is extracted by tarfile and no archive name becomes a path. When both
``manifest.json`` and ``index.json`` are present (a ``docker save`` ≥ 25) the docker-archive
view is used. Layer blobs are handed back as stored (maybe compressed); their diff_ids come from
the image config and are checked by whoever applies the layer.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from engine.errors import InvalidArgument

from .members import Members, image_of, unpack
from .model import ArchiveImage, loads, tagged
from .oci import oci_images


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidArgument(f"{what} is not a list of strings")
    return value


def docker_images(members: Members) -> list[ArchiveImage]:
    """Return the images listed in a docker-archive's manifest.json."""
    doc = loads(members.read_json("manifest.json", "manifest.json"), "manifest.json")
    if not isinstance(doc, list):
        raise InvalidArgument("manifest.json is not a list")
    images = []
    for i, item in enumerate(doc):
        what = f"manifest.json[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str):
            raise InvalidArgument(f"{what} has no Config")
        config = members.read_json(item["Config"], f"{what}: Config")
        layers = _strings(item.get("Layers"), f"{what}: Layers")
        blobs = [members.get(name, f"{what}: Layers") for name in layers]
        repo_tags = item.get("RepoTags")
        names = [] if repo_tags is None else _strings(repo_tags, f"{what}: RepoTags")
        tags = [tagged(name, f"{what}: RepoTags").familiar for name in names]
        images.append(image_of(config, blobs, tags, what))
    return images


@contextmanager
def read_archive(stream: BinaryIO, workdir: Path) -> Iterator[list[ArchiveImage]]:
    """Unpack an archive (docker-archive or OCI layout; plain or gzip) into workdir and yield its images."""  # noqa: E501
    root = Path(tempfile.mkdtemp(prefix="imagetar-", dir=workdir))
    try:
        members = unpack(stream, root)
        if members.has("manifest.json"):
            images = docker_images(members)
        elif members.has("index.json"):
            images = oci_images(members)
        else:
            raise InvalidArgument("invalid archive: it has neither manifest.json nor index.json")
        yield images
    finally:
        shutil.rmtree(root)
