"""Builders shared by the image archive tests: layer tars, configs, images and raw archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

from graph.imagetar import ArchiveImage, LayerBlob

Member = tuple[tarfile.TarInfo, bytes | None]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def digest(data: bytes) -> str:
    """Return ``sha256:<hex>`` of *data*."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    """Return an uncompressed layer tar holding *files*."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def config_for(diff_ids: list[str], arch: str = "amd64", **extra: object) -> bytes:
    """Return an image config JSON whose rootfs lists *diff_ids*."""
    doc = {
        "architecture": arch,
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        **extra,
    }
    return json.dumps(doc).encode()


def blob_of(data: bytes, known_size: bool = True) -> LayerBlob:
    """Return a LayerBlob serving *data*, with or without its size."""
    return LayerBlob(digest(data), lambda: io.BytesIO(data), len(data) if known_size else -1)


def image(layers: list[bytes], *tags: str, known_size: bool = True) -> ArchiveImage:
    """Return an image made of uncompressed layer tars *layers*."""
    config = config_for([digest(layer) for layer in layers])
    blobs = tuple(blob_of(layer, known_size) for layer in layers)
    return ArchiveImage(config, blobs, tags)


def reg(name: str, data: bytes) -> Member:
    """A regular file member."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Member:
    """A symlink (or, with *kind*, hard link) member."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def blob(data: bytes) -> Member:
    """A ``blobs/sha256/<hex>`` member holding *data*."""
    return reg("blobs/sha256/" + digest(data)[7:], data)


def descriptor(media_type: str, data: bytes, **extra: object) -> dict[str, object]:
    """Return an OCI descriptor of *data*."""
    return {"mediaType": media_type, "digest": digest(data), "size": len(data), **extra}


def archive(*members: Member) -> bytes:
    """Return a tar of *members*, in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def oci_image(
    layers: list[bytes], layer_type: str, arch: str = "amd64"
) -> tuple[bytes, list[Member]]:
    """Return an OCI manifest for *layers* (stored as given) and the blob members it needs.

    *layers* are the stored blobs; their diff_ids are those of their gzip-decompressed content
    when *layer_type* ends in ``+gzip``.
    """
    diff_ids = [
        digest(gzip.decompress(data) if layer_type.endswith("+gzip") else data) for data in layers
    ]
    config = config_for(diff_ids, arch)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [descriptor(layer_type, data) for data in layers],
        }
    ).encode()
    return manifest, [blob(data) for data in layers] + [blob(config), blob(manifest)]


def index_json(*entries: dict[str, object]) -> Member:
    """An ``index.json`` member listing *entries*."""
    return reg("index.json", json.dumps({"schemaVersion": 2, "manifests": list(entries)}).encode())
