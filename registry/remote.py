"""The registry operations a pull and a push are made of: manifests in, blobs and manifests out.

Pull: ``resolve`` fetches a manifest by tag or digest (at most ``MAX_MANIFEST`` bytes, read
before parsing), checks its digest — the one asked for, and ``Docker-Content-Digest`` if the
registry sent it — and, for an index, fetches the entry for the wanted platform the same way.

Push: ``exists`` (HEAD), ``mount`` (a blob from another repository of the same registry),
``upload`` (monolithic PUT for small blobs, PATCH chunks then PUT for large ones) and
``put_manifest``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final
from urllib.parse import quote, urljoin

from engine.errors import InvalidArgument, NotFound, Unavailable
from registry.body import read_capped
from registry.client import Repository
from registry.manifest import (
    ACCEPT,
    MAX_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    Platform,
    check_digest,
    choose,
    decode,
    parse,
)

CHUNK: Final = 32 << 20  # blobs larger than this are sent in PATCH chunks of this size
_READ: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a reference names: the manifest to pull and the digest to record for it."""

    digest: str  # of the document the reference named (the index, for a multi-platform image)
    manifest: Manifest
    manifest_digest: str
    media_type: str
    size: int
    platforms: tuple[Platform, ...]


async def fetch_manifest(repo: Repository, reference: str) -> tuple[bytes, str, str]:
    """Fetch the manifest *reference* (a tag or digest) names; return (bytes, type, digest)."""
    where = f"{repo.endpoint.registry}: {repo.path}:{reference}"
    headers = {"Accept": ACCEPT}
    url = repo.url(f"manifests/{quote(reference, safe=':')}")
    try:
        async with repo.request("GET", url, headers) as response:
            if (response.content_length or 0) > MAX_MANIFEST:
                raise InvalidArgument(f"{where}: manifest too large ({response.content_length})")
            data = await read_capped(response, MAX_MANIFEST)
            content_type = response.headers.get("Content-Type", "")
            claimed = response.headers.get("Docker-Content-Digest", "")
    except NotFound as exc:
        raise NotFound(f"manifest for {repo.name}:{reference} not found: {exc}") from None
    if len(data) > MAX_MANIFEST:
        raise InvalidArgument(f"{where}: manifest too large (more than {MAX_MANIFEST} bytes)")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    expected = reference if reference.startswith("sha256:") else claimed
    if expected and expected != digest:
        raise InvalidArgument(
            f"{repo.endpoint.registry}: manifest verification failed for digest "
            f"{expected} (the bytes served hash to {digest})"
        )
    return data, content_type, digest


async def resolve(repo: Repository, reference: str, want: Platform) -> Resolved:
    """The manifest *reference* names for platform *want*, checked."""
    data, content_type, digest = await fetch_manifest(repo, reference)
    where = f"{repo.endpoint.registry}: {repo.path}@{digest}"
    doc = parse(data, content_type, where)
    if isinstance(doc, Manifest):
        return Resolved(digest, doc, digest, doc.media_type, len(data), ())
    entry = choose(doc, want, f"{repo.endpoint.registry}: {repo.path}:{reference}")
    inner, inner_type, inner_digest = await fetch_manifest(repo, entry.digest)
    manifest = parse(inner, inner_type, f"{repo.endpoint.registry}: {repo.path}@{entry.digest}")
    if not isinstance(manifest, Manifest):
        raise InvalidArgument(f"{where}: an index entry {entry.digest} is itself an index")
    return Resolved(digest, manifest, inner_digest, doc.media_type, len(data), _platforms(doc))


async def tags(repo: Repository) -> list[str]:
    """Every tag of the repository (``GET /v2/<name>/tags/list``, following ``Link`` pages)."""
    out: list[str] = []
    url = repo.url("tags/list?n=1000")
    for _ in range(100):
        async with repo.request("GET", url) as response:
            body = await read_capped(response, MAX_MANIFEST)
            link = response.headers.get("Link", "")
        doc = decode(body[:MAX_MANIFEST], f"{repo.name}: tags")
        names = doc.get("tags") or []
        if not isinstance(names, list) or not all(isinstance(t, str) for t in names):
            raise InvalidArgument(f"{repo.name}: tags: expected a list of strings")
        out += names
        if not link.startswith("<") or ">" not in link:
            break
        url = urljoin(url, link[1 : link.index(">")])
    return sorted(set(out))


def _platforms(index: Index) -> tuple[Platform, ...]:
    return tuple(e.platform for e in index.manifests if e.platform is not None)


async def exists(repo: Repository, digest: str) -> bool:
    """Whether the repository has blob *digest* (``HEAD``)."""
    check_digest(digest)
    try:
        async with repo.request("HEAD", repo.url(f"blobs/{digest}")):
            return True
    except NotFound:
        return False


async def mount(repo: Repository, digest: str, source: str) -> bool:
    """Mount blob *digest* from repository *source* of the same registry; False if refused."""
    check_digest(digest)
    url = repo.url(f"blobs/uploads/?mount={digest}&from={quote(source, safe='/')}")
    async with repo.request("POST", url, ok=(201, 202)) as response:
        if response.status == 202:  # the registry started an upload instead: cancel it
            location = response.headers.get("Location", "")
            if location:
                await _cancel(repo, urljoin(url, location))
            return False
        return True


async def _cancel(repo: Repository, url: str) -> None:
    try:
        async with repo.request("DELETE", url, ok=(200, 202, 204)):
            pass
    except (NotFound, Unavailable, InvalidArgument):
        pass  # the registry will expire it


async def upload(
    repo: Repository, blob: Descriptor, path: Path, progress: Callable[[int], None]
) -> None:
    """Upload blob *blob* from file *path*: one PUT, or PATCH chunks and a final PUT."""
    start = repo.url("blobs/uploads/")
    async with repo.request("POST", start, ok=(202,)) as response:
        location = urljoin(start, response.headers.get("Location", ""))
    if location == start:
        raise Unavailable(f"{repo.endpoint.registry}: the upload has no Location")
    with open(path, "rb") as f:
        sent = 0
        if blob.size > CHUNK:
            while sent < blob.size:
                n = min(CHUNK, blob.size - sent)
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{sent}-{sent + n - 1}",
                    "Content-Length": str(n),
                }
                body = _Body(f, n, functools.partial(_offset, progress, sent))
                async with repo.request("PATCH", location, headers, body, ok=(202,)) as r:
                    location = urljoin(location, r.headers.get("Location", location))
                sent += n
            body_put: object = b""
            length = 0
        else:
            body_put, length = _Body(f, blob.size, progress), blob.size
        sep = "&" if "?" in location else "?"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        url = f"{location}{sep}digest={blob.digest}"
        async with repo.request("PUT", url, headers, body_put, ok=(201, 204)):
            pass


def _offset(progress: Callable[[int], None], base: int, sent: int) -> None:
    progress(base + sent)


class _Body:
    """An async iterable of *size* bytes of an open file, reporting progress."""

    def __init__(self, f: BinaryIO, size: int, progress: Callable[[int], None]) -> None:
        self._f, self._left, self._progress, self._sent = f, size, progress, 0

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        if self._left <= 0:
            raise StopAsyncIteration
        data = self._f.read(min(_READ, self._left))
        if not data:
            raise Unavailable("the blob file ended early")
        self._left -= len(data)
        self._sent += len(data)
        self._progress(self._sent)
        return data


async def put_manifest(repo: Repository, tag: str, data: bytes, media_type: str) -> str:
    """Upload manifest *data* under *tag*; return its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    headers = {"Content-Type": media_type}
    async with repo.request(
        "PUT", repo.url(f"manifests/{quote(tag, safe='')}"), headers, data, ok=(201, 202)
    ) as response:
        claimed = response.headers.get("Docker-Content-Digest", "")
    if claimed and claimed != digest:
        raise Unavailable(
            f"{repo.endpoint.registry}: the registry stored the manifest as {claimed}, "
            f"expected {digest}"
        )
    return digest
