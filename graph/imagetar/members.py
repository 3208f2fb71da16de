"""Stream the members of an untrusted image archive into a directory under generated names.

Only names an image archive uses are kept: ``manifest.json``, ``repositories``, ``index.json``,
``oci-layout``, ``blobs/<alg>/<hex>``, and the docker-archive names ``<64hex>.json``,
``<64hex>.tar`` (what skopeo and podman write), ``<64hex>/layer.tar``, ``<64hex>/json`` and
``<64hex>/VERSION``; anything else is skipped. Absolute names, ``..``, hard links, devices and
fifos are refused. A symlink is refused too, except the one form Docker < 25, skopeo and podman
use to share a layer: ``<64hex>/layer.tar`` → ``../<64hex>.tar`` or ``../<64hex>/layer.tar``.
It is never created on disk; it only makes the first name look up the second.
"""

from __future__ import annotations

import logging
import posixpath
import re
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Final, cast

from engine.errors import InvalidArgument
from graph.archive.hashing import BackgroundSha256

from .model import JSON_MAX, ArchiveImage, LayerBlob, diff_ids_of

log = logging.getLogger(__name__)

_CHUNK: Final = 1 << 20
MAX_HEADER_SIZE: Final = 1 << 20
_HEX: Final = "[a-f0-9]{64}"
_JSON_NAMES: Final = re.compile(
    rf"manifest\.json|repositories|index\.json|oci-layout|{_HEX}\.json|{_HEX}/(?:json|VERSION)"
)
_LAYER_NAMES: Final = re.compile(rf"{_HEX}\.tar|{_HEX}/layer\.tar")
# OCI image-layout: blobs/<algorithm>/<encoded>, the grammar of the image-spec descriptor digest.
_BLOB: Final = re.compile(r"blobs/([a-z0-9]+(?:[+._-][a-z0-9]+)*)/([a-zA-Z0-9=_-]+)")
_HEADER_TYPES: Final = frozenset(
    {tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE}
    | {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK}
)


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses oversized extended headers before tarfile buffers them."""

    def _proc_member(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _HEADER_TYPES and self.size > MAX_HEADER_SIZE:
            raise InvalidArgument(f"invalid archive: extended header of {self.size} bytes")
        # _proc_member is tarfile's hook for subclasses but missing from the stubs.
        return cast(tarfile.TarInfo, super()._proc_member(tf))  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Stored:
    """One archive member kept on disk: where it is and how many bytes it has."""

    path: Path
    size: int


@dataclass
class Members:
    """The kept members of an archive by archive name; aliases map a name to another name."""

    root: Path
    files: dict[str, Stored] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, what: str) -> Stored:
        """Return the member *name* (``./`` and aliases resolved); InvalidArgument if absent."""
        key = _normal(name)
        key = self.aliases.get(key, key)
        found = self.files.get(key)
        if found is None:
            raise InvalidArgument(f"{what}: {name!r} is not in the archive")
        return found

    def has(self, name: str) -> bool:
        """Tell whether a member *name* was kept."""
        return name in self.files

    def read_json(self, name: str, what: str) -> bytes:
        """Return the bytes of the member *name*, refusing one over the JSON size cap."""
        return json_bytes(self.get(name, what), what)


def json_bytes(stored: Stored, what: str) -> bytes:
    """Return the bytes of a kept member, refusing one over the JSON size cap."""
    if stored.size > JSON_MAX:
        raise InvalidArgument(f"{what} is too large: {stored.size} bytes, at most {JSON_MAX}")
    return stored.path.read_bytes()


def _normal(name: str) -> str:
    """Drop leading ``./`` (``tar -C dir -c .`` writes them) and a directory's trailing ``/``."""
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/") or name


def _check_name(info: tarfile.TarInfo) -> str:
    name = _normal(info.name)
    if name.startswith("/"):
        raise InvalidArgument(f"invalid archive member {info.name!r}: absolute name")
    if ".." in name.split("/") or "\x00" in name:
        raise InvalidArgument(f"invalid archive member {info.name!r}: name leaves the archive")
    return name


def _alias(info: tarfile.TarInfo, name: str) -> str:
    """Return the archive name a legacy layer symlink points to; InvalidArgument otherwise."""
    target = info.linkname
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    if (
        _LAYER_NAMES.fullmatch(name) is None
        or not name.endswith("/layer.tar")
        or target.startswith("/")
        or _LAYER_NAMES.fullmatch(resolved) is None
    ):
        raise InvalidArgument(f"invalid archive member {info.name!r}: symlink to {target!r}")
    return resolved


def _keep(name: str) -> bool:
    blob = _BLOB.fullmatch(name)
    if blob is not None and blob.group(1) != "sha256":
        log.debug("archive member %r: skipping blob of unsupported algorithm", name)
        return False
    return bool(blob or _JSON_NAMES.fullmatch(name) or _LAYER_NAMES.fullmatch(name))


def _store(tf: tarfile.TarFile, info: tarfile.TarInfo, name: str, members: Members) -> None:
    if _JSON_NAMES.fullmatch(name) and info.size > JSON_MAX:
        raise InvalidArgument(f"{name} is too large: {info.size} bytes, at most {JSON_MAX}")
    source = tf.extractfile(info)
    assert source is not None  # a regular file always has a reader
    path = members.root / f"m{len(members.files):06d}"
    sha = BackgroundSha256()
    with path.open("xb") as out:
        while data := source.read(_CHUNK):
            sha.update(data)
            out.write(data)
    blob = _BLOB.fullmatch(name)
    if blob is not None and sha.hexdigest() != blob.group(2):
        raise InvalidArgument(f"blob {name!r}: content has digest sha256:{sha.hexdigest()}")
    members.files[name] = Stored(path, info.size)


def _member(tf: tarfile.TarFile, info: tarfile.TarInfo, members: Members) -> None:
    name = _check_name(info)
    if info.islnk():
        raise InvalidArgument(f"invalid archive member {info.name!r}: hard link")
    if (info.isreg() or info.issym()) and (name in members.files or name in members.aliases):
        raise InvalidArgument(f"invalid archive member {info.name!r}: appears twice")
    if info.issym():
        members.aliases[name] = _alias(info, name)
    elif info.isdir():
        return
    elif not info.isreg():
        raise InvalidArgument(f"invalid archive member {info.name!r}: unsupported type")
    elif not _keep(name):
        log.debug("archive member %r: not part of an image archive, skipped", info.name)
    else:
        _store(tf, info, name, members)


def unpack(stream: BinaryIO, root: Path) -> Members:
    """Read the tar (plain or compressed) in *stream*, keeping its image members under *root*."""
    members = Members(root)
    try:
        with tarfile.open(fileobj=stream, mode="r|*", tarinfo=_BoundedTarInfo) as tf:
            while (info := tf.next()) is not None:
                _member(tf, info, members)
                tf.members.clear()  # type: ignore[attr-defined]  # stream mode keeps them all
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidArgument(f"invalid archive: {exc}") from exc
    for alias, target in members.aliases.items():
        if target not in members.files:
            raise InvalidArgument(f"invalid archive member {alias!r}: symlink to a missing file")
    return members


def _opener(path: Path) -> Callable[[], BinaryIO]:
    def open_blob() -> BinaryIO:
        return path.open("rb")

    return open_blob


def image_of(
    config: bytes, blobs: Sequence[Stored], tags: Sequence[str], what: str
) -> ArchiveImage:
    """Build an image from its config and layer blobs, checking the config's rootfs against them."""
    diff_ids = diff_ids_of(config, f"{what}: config")
    if len(diff_ids) != len(blobs):
        raise InvalidArgument(
            f"{what}: layers from manifest don't match image configuration: "
            f"{len(diff_ids)} diff_ids, {len(blobs)} layers"
        )
    layers = (
        LayerBlob(d, _opener(b.path), b.size, b.path) for d, b in zip(diff_ids, blobs, strict=True)
    )
    return ArchiveImage(config, tuple(layers), tuple(dict.fromkeys(tags)))
