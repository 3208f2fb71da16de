"""Read the images of an OCI image layout: index.json → manifests (one nested index) → blobs.

Tags come from the index entry's annotations: ``io.containerd.image.name`` (a full name, as
Docker and containerd write it) or else ``org.opencontainers.image.ref.name`` when that holds a
repository (``busybox:1.36``, ``localhost:5000/x``). A bare ``ref.name`` such as ``latest`` or
``1.0`` names no repository, so such an image is loaded untagged, as ``docker load`` does.
A nested index is resolved to its one ``linux`` manifest for the host architecture.
"""

from __future__ import annotations

import logging
import platform
from typing import Final

from engine.errors import InvalidArgument
from graph.reference import parse, with_default_tag

from .members import Members, Stored, image_of, json_bytes
from .model import (
    IMAGE_NAME,
    INDEX_TYPES,
    LAYER_TYPES,
    MANIFEST_TYPES,
    REF_NAME,
    ArchiveImage,
    hex_of,
    loads,
)

log = logging.getLogger(__name__)

_ARCH: Final = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i686": "386",
    "i386": "386",
}
Object = dict[str, object]


def host_arch() -> str:
    """Return the host architecture in OCI spelling (amd64 for x86_64, arm64 for aarch64)."""
    machine = platform.machine()
    return _ARCH.get(machine, machine)


def _object(value: object, what: str) -> Object:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: expected a JSON object")
    return value


def _list(doc: Object, key: str, what: str) -> list[Object]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise InvalidArgument(f"{what}: {key} is not a list")
    return [_object(item, f"{what}: {key}[{i}]") for i, item in enumerate(value)]


def _blob(members: Members, desc: Object, what: str) -> Stored:
    """Return the blob a descriptor names, checking its digest form and size."""
    digest = desc.get("digest")
    stored = members.get("blobs/sha256/" + hex_of(digest, what), f"{what}: blob {digest}")
    size = desc.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size != stored.size:
        raise InvalidArgument(
            f"{what}: blob {digest} has {stored.size} bytes, descriptor says {size}"
        )
    return stored


def _document(members: Members, desc: Object, what: str) -> Object:
    """Return the JSON object of a manifest or index blob, refusing a media type mismatch."""
    doc = _object(loads(json_bytes(_blob(members, desc, what), what), what), what)
    kind = doc.get("mediaType")
    if kind is not None and kind != desc.get("mediaType"):
        raise InvalidArgument(
            f"{what}: mediaType {kind!r} but descriptor says {desc.get('mediaType')!r}"
        )
    if "manifests" in doc and ("layers" in doc or "config" in doc):
        raise InvalidArgument(f"{what}: both an index and a manifest")
    return doc


def _pick(members: Members, desc: Object) -> Object:
    """Return the one linux manifest for this host's architecture from a nested index."""
    what = f"index {desc.get('digest')}"
    arch = host_arch()
    found, seen = [], []
    for entry in _list(_document(members, desc, what), "manifests", what):
        plat = entry.get("platform")
        plat = plat if isinstance(plat, dict) else {}
        seen.append(f"{plat.get('os')}/{plat.get('architecture')}")
        if (
            entry.get("mediaType") in MANIFEST_TYPES
            and plat.get("os") == "linux"
            and plat.get("architecture") == arch
        ):
            found.append(entry)
    if len(found) != 1:
        raise InvalidArgument(
            f"{what}: {len(found)} manifests for linux/{arch}; it has {', '.join(seen) or 'none'}"
        )
    return found[0]


def _tag(entry: Object) -> str | None:
    """Return the familiar tag an index entry's annotations give, or None (untagged)."""
    notes = entry.get("annotations")
    notes = notes if isinstance(notes, dict) else {}
    name = notes.get(IMAGE_NAME)
    if not isinstance(name, str) or not name:
        name = notes.get(REF_NAME)
        if not isinstance(name, str) or ("/" not in name and ":" not in name):
            return None  # a bare tag names no repository
    try:
        ref = parse(name)
    except InvalidArgument as exc:
        raise InvalidArgument(f"index.json: invalid image name {name!r}: {exc}") from exc
    if ref.digest and not ref.tag:
        return None
    return with_default_tag(ref).familiar.partition("@")[0]


def _image(members: Members, desc: Object, tags: list[str]) -> ArchiveImage:
    what = f"manifest {desc.get('digest')}"
    manifest = _document(members, desc, what)
    config_desc = _object(manifest.get("config"), f"{what}: config")
    config = json_bytes(_blob(members, config_desc, f"{what}: config"), f"{what}: config")
    blobs = []
    for i, layer in enumerate(_list(manifest, "layers", what)):
        if layer.get("mediaType") not in LAYER_TYPES:
            raise InvalidArgument(
                f"{what}: layers[{i}]: unsupported media type {layer.get('mediaType')!r}"
            )
        blobs.append(_blob(members, layer, f"{what}: layers[{i}]"))
    return image_of(config, blobs, tags, what)


def oci_images(members: Members) -> list[ArchiveImage]:
    """Return the images an OCI layout's index.json lists, one per distinct manifest."""
    index = _object(
        loads(members.read_json("index.json", "index.json"), "index.json"), "index.json"
    )
    chosen: dict[str, tuple[Object, list[str]]] = {}
    for entry in _list(index, "manifests", "index.json"):
        kind = entry.get("mediaType")
        if kind in INDEX_TYPES:
            manifest = _pick(members, entry)
        elif kind in MANIFEST_TYPES:
            manifest = entry
        else:
            log.debug("index.json: skipping entry of media type %r", kind)
            continue
        digest = str(manifest.get("digest"))
        tags = chosen.setdefault(digest, (manifest, []))[1]
        tag = _tag(entry)
        if tag is not None:
            tags.append(tag)
    return [_image(members, manifest, tags) for manifest, tags in chosen.values()]
