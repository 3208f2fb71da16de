"""Manifests and image indexes as a registry serves them: parsed strictly, then trusted.

Glossary: a *descriptor* names a blob by media type, digest and size; a *manifest* names one
image's config and layers; an *index* (Docker's "manifest list") names one manifest per
platform. Kinds accepted: Docker schema 2 and OCI image manifests, Docker manifest lists and
OCI indexes. Docker schema 1 is refused.

Nothing a registry sends is trusted before it is checked here: the bytes must be UTF-8 JSON with
no duplicate keys, no NaN, a bounded depth; the media type in the body must agree with the
``Content-Type`` it came with; a document with both ``manifests`` and ``layers``/``config`` is
refused (CVE-2021-41190); digests are ``sha256:`` + 64 lowercase hex before they become a URL or a
path; sizes are non-negative integers.
"""

from __future__ import annotations

import json
import platform as host_platform
import re
from dataclasses import dataclass
from typing import Final

from engine.errors import InvalidArgument, NotFound, NotSupported

DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
SCHEMA1: Final = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
OCI_LAYERS: Final = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    }
)
LAYER_TYPES: Final = OCI_LAYERS | {DOCKER_LAYER, DOCKER_FOREIGN_LAYER}
MANIFESTS: Final = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEXES: Final = (DOCKER_LIST, OCI_INDEX)
# What a pull asks for, in Docker's order of preference.
ACCEPT: Final = ", ".join((*MANIFESTS, *INDEXES))
MAX_MANIFEST: Final = 4 * 1048 * 1048  # as containerd: about 4 MiB
MAX_CONFIG: Final = 8 << 20
MAX_SIZE: Final = (1 << 53) - 1
_DEPTH: Final = 64
_DIGEST: Final = re.compile(r"sha256:[a-f0-9]{64}")
_ARCH: Final = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A blob named by media type, digest and size (plus a platform, in an index)."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None

    def to_json(self) -> dict[str, object]:
        """The descriptor as it appears in a manifest."""
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest}


@dataclass(frozen=True, slots=True)
class Platform:
    """An OS and architecture (and variant), as an index entry names them."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_json(self) -> dict[str, str]:
        """Docker's ``{"os", "architecture", "variant"?}``."""
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """An image manifest: its config and layers, base first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True, slots=True)
class Index:
    """An image index / manifest list: one manifest per platform."""

    media_type: str
    manifests: tuple[Descriptor, ...]


def check_digest(digest: str, what: str = "digest") -> str:
    """Return *digest* if it is ``sha256:`` + 64 lowercase hex; InvalidArgument otherwise."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidArgument(f"{what}: {str(digest)[:80]!r} is not a sha256 digest")
    return digest


def decode(data: bytes, what: str) -> dict[str, object]:
    """Decode a JSON object strictly (UTF-8, no duplicate keys, no NaN, bounded depth)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"{what}: not UTF-8") from None
    if _too_deep(text):
        raise InvalidArgument(f"{what}: nested more than {_DEPTH} levels")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"{what}: invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: expected a JSON object")
    return value


def _too_deep(text: str) -> bool:
    depth = 0
    for match in re.finditer(r'[\[\]{}"\\]', text):
        c = match.group()
        if c in "[{":
            depth += 1
            if depth > _DEPTH:
                return True
        elif c in "]}":
            depth -= 1
    return False  # brackets inside strings only ever overcount, which errs on refusing


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse(data: bytes, content_type: str, where: str) -> Manifest | Index:
    """Parse a manifest or index served with *content_type*; *where* names it in errors."""
    if len(data) > MAX_MANIFEST:
        raise InvalidArgument(f"{where}: manifest too large ({len(data)} bytes)")
    served = content_type.split(";")[0].strip().lower()
    if served in SCHEMA1:
        raise NotSupported(f"{where}: {_SCHEMA1_MESSAGE}")
    doc = decode(data, f"{where}: manifest")
    version = doc.get("schemaVersion")
    if type(version) is int and version == 1:
        raise NotSupported(f"{where}: {_SCHEMA1_MESSAGE}")
    if type(version) is not int or version != 2:
        raise InvalidArgument(f"{where}: unsupported manifest schemaVersion {version!r}")
    media = doc.get("mediaType", "")
    if not isinstance(media, str):
        raise InvalidArgument(f"{where}: mediaType must be a string")
    if "manifests" in doc and ("layers" in doc or "config" in doc):
        raise InvalidArgument(f"{where}: ambiguous manifest: it has both manifests and layers")
    known = (*MANIFESTS, *INDEXES)
    if media and served in known and media != served:
        raise InvalidArgument(f"{where}: mediaType {media} disagrees with Content-Type {served}")
    kind = media or (served if served in known else "")
    if not kind:  # OCI allows leaving mediaType out: tell by shape
        kind = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if kind in INDEXES:
        entries = _list(doc, "manifests", where)
        return Index(kind, tuple(_descriptor(e, where, indexed=True) for e in entries))
    if kind not in MANIFESTS:
        raise NotSupported(f"{where}: unsupported manifest media type {kind}")
    config = _descriptor(doc.get("config"), where)
    if config.media_type not in (DOCKER_CONFIG, OCI_CONFIG):
        raise NotSupported(f"{where}: unsupported config media type {config.media_type}")
    layers = tuple(_descriptor(e, where) for e in _list(doc, "layers", where))
    for layer in layers:
        if layer.media_type not in LAYER_TYPES:
            raise NotSupported(f"{where}: unsupported layer media type {layer.media_type}")
    return Manifest(kind, config, layers)


_SCHEMA1_MESSAGE: Final = (
    "schema 1 manifests are not supported; push the image again with a current client "
    "(Docker schema 2 or OCI)"
)


def _list(doc: dict[str, object], key: str, where: str) -> list[object]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise InvalidArgument(f"{where}: {key} must be a list")
    return value


def _descriptor(value: object, where: str, indexed: bool = False) -> Descriptor:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where}: a descriptor must be an object")
    media, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media, str) or not media:
        raise InvalidArgument(f"{where}: descriptor without a mediaType")
    check_digest(str(digest) if isinstance(digest, str) else repr(digest), f"{where}: digest")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        raise InvalidArgument(f"{where}: descriptor {digest}: invalid size {size!r}")
    found = None
    if indexed and isinstance(value.get("platform"), dict):
        p = value["platform"]
        found = Platform(str(p.get("os", "")), str(p.get("architecture", "")),
                         str(p.get("variant", "") or ""))  # fmt: skip
    return Descriptor(media, str(digest), size, found)


def host_platform_() -> Platform:
    """linux and this machine's architecture, in Go's names."""
    machine = host_platform.machine()
    return Platform("linux", _ARCH.get(machine, machine))


def parse_platform(text: str) -> Platform:
    """Parse ``os[/arch[/variant]]`` (``linux/arm64/v8``); '' means this host's platform."""
    if not text:
        return host_platform_()
    parts = text.lower().split("/")
    if len(parts) > 3 or not all(parts) or not all(re.fullmatch(r"[a-z0-9_.-]+", p) for p in parts):
        raise InvalidArgument(f"platform: {text!r}: expected os[/arch[/variant]]")
    if len(parts) == 1:
        return Platform(parts[0], host_platform_().architecture)
    return Platform(parts[0], _ARCH.get(parts[1], parts[1]), parts[2] if len(parts) > 2 else "")


def choose(index: Index, want: Platform, where: str) -> Descriptor:
    """The index entry for platform *want* (a variant only narrows when it is given)."""
    for entry in index.manifests:
        p = entry.platform
        if p is None or entry.media_type not in MANIFESTS:
            continue
        same = p.os == want.os and p.architecture == want.architecture
        variant = _variant(p.architecture, p.variant)
        if same and (not want.variant or variant == _variant(want.architecture, want.variant)):
            return entry
    raise NotFound(f"{where}: no matching manifest for {want} in the manifest list entries")


def _variant(architecture: str, variant: str) -> str:
    """The variant, with the default of arm64 (v8) and arm (v7) made explicit, as Docker's."""
    return variant or {"arm64": "v8", "arm": "v7"}.get(architecture, "")


def image_manifest(config: Descriptor, layers: list[Descriptor]) -> bytes:
    """A Docker schema 2 manifest naming *config* and *layers*, as bytes to push."""
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return json.dumps(doc, indent=3).encode()
