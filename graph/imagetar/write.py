"""Write images as one tar that is both a docker-archive and an OCI image layout (docker save ≥ 25).

Layout (members in this order, all mtime 0, uid/gid 0, no user names, so two saves of the same
images are byte-identical)::

    blobs/  blobs/sha256/                     directories
    blobs/sha256/<hex>                        per image: new layers (base first), config, manifest
    index.json                                one entry per repo tag, one plain entry if untagged
    manifest.json                             [{"Config", "RepoTags", "Layers"}] (docker-archive)
    oci-layout                                {"imageLayoutVersion":"1.0.0"}
    repositories                              {familiar name: {tag: top layer diff_id hex}}

Layers are stored uncompressed, so a layer blob's digest is its diff_id. Docker ≥ 25 also writes
a legacy v1 JSON blob per layer; no reader needs it and its name is not its digest, so it is left
out. The ``repositories`` value is the top layer's diff_id hex, which is what Docker ≥ 25 writes.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
from collections.abc import Sequence
from typing import BinaryIO, Final

from engine.errors import InvalidArgument

from .model import (
    IMAGE_NAME,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYOUT,
    OCI_MANIFEST,
    REF_NAME,
    ArchiveImage,
    LayerBlob,
    diff_ids_of,
    dumps,
    familiar_name,
    hex_of,
    loads,
    tagged,
)

_CHUNK: Final = 1 << 20
Descriptor = dict[str, object]


class _Counter(io.RawIOBase):
    """Write-only view of *out* that counts the bytes passed through."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__()
        self._out = out
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._out.write(data)
        self.count += len(data)
        return len(data)


class _Verifier:
    """Read-only view of a layer stream that fills every read and hashes what it returns."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            data = self._stream.read()
        else:  # tarfile treats a short read as the end of the data, so keep reading
            data = b""
            while len(data) < size and (more := self._stream.read(size - len(data))):
                data += more
        self.sha.update(data)
        return data


def _info(name: str, size: int = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    info.mtime = 0
    return info


class _Writer:
    """Adds blobs and files to the tar once each, remembering layer sizes for the manifests."""

    def __init__(self, tf: tarfile.TarFile) -> None:
        self.tf = tf
        self.written: dict[str, int] = {}  # digest → size of every blob in the tar

    def file(self, name: str, data: bytes) -> None:
        """Add a small in-memory member."""
        self.tf.addfile(_info(name, len(data)), io.BytesIO(data))

    def blob(self, data: bytes) -> Descriptor:
        """Add *data* as ``blobs/sha256/<hex>`` unless there already; return digest and size."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest not in self.written:
            self.file("blobs/sha256/" + digest[7:], data)
            self.written[digest] = len(data)
        return {"digest": digest, "size": len(data)}

    def layer(self, layer: LayerBlob) -> Descriptor:
        """Stream a layer blob into the tar once, checking its sha256 against its diff_id."""
        name = "blobs/sha256/" + hex_of(layer.diff_id, "layer diff_id")
        if layer.diff_id not in self.written:
            with layer.open() as stream:
                if layer.size < 0:
                    self.written[layer.diff_id] = self._spooled(name, layer, stream)
                else:
                    self._direct(name, layer, stream)
                    self.written[layer.diff_id] = layer.size
        size = self.written[layer.diff_id]
        return {"mediaType": OCI_LAYER, "digest": layer.diff_id, "size": size}

    def _spooled(self, name: str, layer: LayerBlob, stream: BinaryIO) -> int:
        with tempfile.TemporaryFile() as spool:
            reader = _Verifier(stream)
            while data := reader.read(_CHUNK):
                spool.write(data)
            _check(layer, reader)
            size = spool.tell()
            spool.seek(0)
            self.tf.addfile(_info(name, size), spool)
        return size

    def _direct(self, name: str, layer: LayerBlob, stream: BinaryIO) -> None:
        reader = _Verifier(stream)
        try:
            self.tf.addfile(_info(name, layer.size), reader)
        except OSError as exc:  # tarfile's "unexpected end of data"
            raise InvalidArgument(
                f"layer {layer.diff_id}: stream is shorter than its size {layer.size}"
            ) from exc
        if stream.read(1):
            raise InvalidArgument(
                f"layer {layer.diff_id}: stream is longer than its size {layer.size}"
            )
        _check(layer, reader)


def _check(layer: LayerBlob, reader: _Verifier) -> None:
    got = "sha256:" + reader.sha.hexdigest()
    if got != layer.diff_id:
        raise InvalidArgument(f"layer {layer.diff_id}: content has digest {got}")


def _merged(images: Sequence[ArchiveImage]) -> list[ArchiveImage]:
    """Return *images* with repeated configs folded into the first one (tags joined in order)."""
    by_config: dict[bytes, ArchiveImage] = {}
    for image in images:
        seen = by_config.get(image.config)
        tags = (*seen.repo_tags, *image.repo_tags) if seen else image.repo_tags
        base = seen or image
        by_config[image.config] = ArchiveImage(base.config, base.layers, tuple(dict.fromkeys(tags)))
    return list(by_config.values())


def _platform(config: bytes) -> Descriptor:
    doc = loads(config, "image config")
    assert isinstance(doc, dict)  # diff_ids_of has checked it
    keys = ("architecture", "os", "variant")
    return {key: doc[key] for key in keys if isinstance(doc.get(key), str) and doc[key]}


def _image(w: _Writer, image: ArchiveImage) -> tuple[Descriptor, list[str]]:
    """Write one image's layers, config and manifest; return the manifest descriptor and layers."""
    config_id = "sha256:" + hashlib.sha256(image.config).hexdigest()
    diff_ids = diff_ids_of(image.config, f"image {config_id}: config")
    if diff_ids != tuple(layer.diff_id for layer in image.layers):
        raise InvalidArgument(
            f"image {config_id}: layers do not match rootfs.diff_ids of its configuration"
        )
    layers = [w.layer(layer) for layer in image.layers]
    config = {"mediaType": OCI_CONFIG, **w.blob(image.config)}
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}
    descriptor: Descriptor = {"mediaType": OCI_MANIFEST, **w.blob(dumps(manifest))}
    platform = _platform(image.config)
    if "architecture" in platform and "os" in platform:
        descriptor["platform"] = platform
    return descriptor, ["blobs/sha256/" + d[7:] for d in diff_ids]


def write_archive(out: BinaryIO, images: Sequence[ArchiveImage]) -> int:
    """Write one uncompressed tar holding both a docker-archive and an OCI image layout; return bytes written."""  # noqa: E501
    counter = _Counter(out)
    index: list[Descriptor] = []
    items: list[Descriptor] = []
    repositories: dict[str, dict[str, str]] = {}
    with tarfile.open(fileobj=counter, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        w = _Writer(tf)
        tf.addfile(_info("blobs", directory=True))
        tf.addfile(_info("blobs/sha256", directory=True))
        for image in _merged(images):
            refs = [tagged(tag, "repo tag") for tag in image.repo_tags]
            descriptor, layer_paths = _image(w, image)
            for ref in refs:
                annotations = {IMAGE_NAME: str(ref), REF_NAME: ref.tag}
                index.append({**descriptor, "annotations": annotations})
                if layer_paths:
                    top = layer_paths[-1].rpartition("/")[2]
                    repositories.setdefault(familiar_name(ref), {})[ref.tag] = top
            if not refs:
                index.append(descriptor)
            config = "blobs/sha256/" + hashlib.sha256(image.config).hexdigest()
            # Docker writes null, not [], for an untagged image.
            tags = [ref.familiar for ref in refs] or None
            items.append({"Config": config, "RepoTags": tags, "Layers": layer_paths})
        w.file(
            "index.json", dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index})
        )
        w.file("manifest.json", dumps(items) + b"\n")
        w.file("oci-layout", OCI_LAYOUT)
        if repositories:
            ordered = {
                name: dict(sorted(tags.items())) for name, tags in sorted(repositories.items())
            }
            w.file("repositories", dumps(ordered) + b"\n")
    return counter.count
