"""Values exchanged by the image archive code, media types, and the checks both sides share."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from engine.errors import InvalidArgument
from graph.reference import Reference, parse, validate_digest

JSON_MAX: Final = 8 << 20  # manifest.json, index.json, manifests and configs; like containerd's cap

OCI_LAYOUT: Final = b'{"imageLayoutVersion":"1.0.0"}'
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
LAYER_TYPES: Final = frozenset(
    {
        OCI_LAYER,
        OCI_LAYER + "+gzip",
        OCI_LAYER + "+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)
IMAGE_NAME: Final = "io.containerd.image.name"
REF_NAME: Final = "org.opencontainers.image.ref.name"


@dataclass(frozen=True, slots=True)
class LayerBlob:
    """One layer of an image: its diff_id and a way to open the stored (maybe compressed) blob."""

    diff_id: str  # "sha256:<64hex>" of the UNCOMPRESSED layer tar
    open: Callable[[], BinaryIO]  # returns a fresh readable stream of the layer blob
    size: int = -1  # bytes of that stream if known
    path: Path | None = None  # the file holding the blob, when read_archive stored one


@dataclass(frozen=True, slots=True)
class ArchiveImage:
    """An image as stored in an archive: config bytes (sha256 = image id), layers, familiar tags."""

    config: bytes  # image config JSON exactly as stored; sha256(config) is the image id
    layers: tuple[LayerBlob, ...]  # base first; len == len(config rootfs.diff_ids)
    repo_tags: tuple[str, ...] = ()  # familiar form, e.g. "busybox:latest", "localhost:5000/x:1"


def hex_of(digest: object, what: str) -> str:
    """Return the hex part of a ``sha256:<64hex>`` digest; InvalidArgument naming *what* if not."""
    if not isinstance(digest, str):
        raise InvalidArgument(f"{what}: digest {digest!r} is not a string")
    try:
        validate_digest(digest)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{what}: {exc}") from exc
    return digest.partition(":")[2]


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def loads(data: bytes, what: str) -> object:
    """Parse strict JSON (UTF-8, no NaN, size-capped); InvalidArgument naming *what* if bad."""
    if len(data) > JSON_MAX:
        raise InvalidArgument(f"{what} is too large: {len(data)} bytes, at most {JSON_MAX}")
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidArgument(f"{what}: invalid JSON: {exc}") from exc


def dumps(value: object) -> bytes:
    """Serialise *value* compactly, keeping key order, so the same input gives the same bytes."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def diff_ids_of(config: bytes, what: str) -> tuple[str, ...]:
    """Return the checked ``rootfs.diff_ids`` of an image config; InvalidArgument if malformed."""
    doc = loads(config, what)
    rootfs = doc.get("rootfs") if isinstance(doc, dict) else None
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise InvalidArgument(f"{what}: invalid rootfs in image configuration")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list):
        raise InvalidArgument(f"{what}: rootfs.diff_ids is not a list")
    for diff_id in diff_ids:
        hex_of(diff_id, f"{what}: rootfs.diff_ids")
    return tuple(diff_ids)


def tagged(text: str, what: str) -> Reference:
    """Parse a ``name:tag`` reference; InvalidArgument naming *what* if bad, untagged, digested."""
    try:
        ref = parse(text)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{what}: invalid tag {text!r}: {exc}") from exc
    if not ref.tag or ref.digest:
        raise InvalidArgument(f"{what}: invalid tag {text!r}: must be name:tag")
    return ref


def familiar_name(ref: Reference) -> str:
    """Return the familiar repository name of *ref* without tag, e.g. ``busybox``."""
    return Reference(ref.domain, ref.path).familiar
