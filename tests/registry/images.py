"""Image builders for registry tests: layers, images, indexes, bombs, OCI layouts and pushes.

Vocabulary: a *layer* is an uncompressed tar; a *blob* is what a registry stores (a compressed
layer or a config) under its *digest* ``sha256:<hex of the blob's bytes>``; a layer's *diff_id*
is the digest of the uncompressed tar. ``make_image`` returns an ``Image`` holding the manifest
bytes, config and blobs; ``make_index`` wraps images per platform in an OCI index or a Docker
manifest list. Both offer ``manifests()`` and ``blobs`` so a test can hand them to the hostile
registry, write them as an OCI layout, or push them over HTTP (``push_image``) or with skopeo.
Everything is deterministic: the same input gives the same digests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
import urllib.parse
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from tests.registry.registries import Registry, RegistryClient

MTIME = 1_700_000_000
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
SUFFIX = {"gzip": "+gzip", "zstd": "+zstd", "none": ""}


def digest_of(data: bytes) -> str:
    """``sha256:<hex>`` of *data*."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(entries: Sequence[tarfile.TarInfo], contents: Mapping[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info in entries:
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = MTIME
            data = contents.get(info.name)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def layer(files: Mapping[str, bytes], mode: int = 0o644) -> bytes:
    """An uncompressed layer tar holding *files* (path → bytes) and their parent directories."""
    entries: dict[str, tarfile.TarInfo] = {}
    for path in sorted(files):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in entries:
                entries[d] = tarfile.TarInfo(d)
                entries[d].type, entries[d].mode = tarfile.DIRTYPE, 0o755
        info = tarfile.TarInfo("/".join(parts))
        info.size, info.mode = len(files[path]), mode
        entries[info.name] = info
    return _tar(list(entries.values()), {k.strip("/"): v for k, v in files.items()})


def busybox_rootfs_tar(applets: Sequence[str] = ("sh", "echo", "cat", "ls", "true")) -> bytes:
    """A layer with /bin/busybox (from the host's static busybox) and *applets* linked to it."""
    data = Path("/bin/busybox").read_bytes()
    entries = []
    for name in ("bin", "etc", "tmp"):
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
        entries.append(info)
    info = tarfile.TarInfo("bin/busybox")
    info.size, info.mode = len(data), 0o755
    entries.append(info)
    for applet in applets:
        link = tarfile.TarInfo(f"bin/{applet}")
        link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
        entries.append(link)
    return _tar(entries, {"bin/busybox": data})


def gzip_blob(data: bytes, level: int = 6) -> bytes:
    """*data* gzip-compressed with a zero mtime (deterministic)."""
    return gzip.compress(data, compresslevel=level, mtime=0)


def zstd_blob(data: bytes, level: int = 3) -> bytes:
    """*data* as a zstd frame that records its content size."""
    return zstandard.ZstdCompressor(level=level).compress(data)


def compress(data: bytes, compression: str) -> bytes:
    """*data* compressed with ``gzip``, ``zstd`` or ``none``."""
    if compression not in SUFFIX:
        raise ValueError(f"compression must be one of {list(SUFFIX)}, not {compression!r}")
    return {"gzip": gzip_blob, "zstd": zstd_blob}.get(compression, bytes)(data)


@dataclass
class PrebuiltLayer:
    """A layer blob built elsewhere (e.g. a bomb), with its media type and diff_id."""

    blob: bytes
    media_type: str
    diff_id: str


def _descriptor(media_type: str, data: bytes, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


def _platform(platform: str) -> dict[str, str]:
    os_, arch, *variant = platform.split("/")
    return {"architecture": arch, "os": os_, **({"variant": variant[0]} if variant else {})}


@dataclass
class Image:
    """One image manifest with its config and layer blobs."""

    manifest: bytes
    media_type: str
    config: bytes
    layers: list[dict[str, object]]
    diff_ids: list[str]
    platform: str
    blobs: dict[str, bytes] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """The manifest's digest."""
        return digest_of(self.manifest)

    @property
    def config_digest(self) -> str:
        """The config blob's digest (the image ID)."""
        return digest_of(self.config)

    def descriptor(self) -> dict[str, object]:
        """A descriptor of the manifest (mediaType, digest, size)."""
        return _descriptor(self.media_type, self.manifest)

    def manifests(self) -> dict[str, tuple[bytes, str]]:
        """Every manifest to store, digest → (bytes, media type)."""
        return {self.digest: (self.manifest, self.media_type)}


def make_image(
    layers: Sequence[bytes | PrebuiltLayer],
    compression: str | Sequence[str] = "gzip",
    media: str = "docker",
    config_extra: Mapping[str, object] | None = None,
    platform: str = "linux/amd64",
) -> Image:
    """An image of *layers* (uncompressed tars or prebuilt blobs), compressed per layer."""
    if media not in ("docker", "oci"):
        raise ValueError(f"media must be docker or oci, not {media!r}")
    kinds = [compression] * len(layers) if isinstance(compression, str) else list(compression)
    blobs: dict[str, bytes] = {}
    descs, diff_ids = [], []
    for item, kind in zip(layers, kinds, strict=True):
        if isinstance(item, PrebuiltLayer):
            blob, media_type, diff_id = item.blob, item.media_type, item.diff_id
        else:
            blob, diff_id = compress(item, kind), digest_of(item)
            docker_ok = media == "docker" and kind in ("gzip", "none")
            base = DOCKER_LAYER if docker_ok else OCI_LAYER
            media_type = base + ({"gzip": ".gzip"} if docker_ok else SUFFIX).get(kind, "")
        blobs[digest_of(blob)] = blob
        descs.append(_descriptor(media_type, blob))
        diff_ids.append(diff_id)
    cfg: dict[str, object] = {
        **_platform(platform),
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"}
            for i in range(len(diff_ids))
        ],
    }
    for key, value in (config_extra or {}).items():
        old = cfg.get(key)
        cfg[key] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
    config = json.dumps(cfg, sort_keys=True).encode()
    blobs[digest_of(config)] = config
    mtype, ctype = (
        (DOCKER_MANIFEST, DOCKER_CONFIG) if media == "docker" else (OCI_MANIFEST, OCI_CONFIG)
    )
    doc = {"schemaVersion": 2, "mediaType": mtype, "config": _descriptor(ctype, config)}
    doc["layers"] = descs
    manifest = json.dumps(doc, indent=3).encode()
    return Image(manifest, mtype, config, descs, diff_ids, platform, blobs)


@dataclass
class Index:
    """A multi-platform index (OCI) or manifest list (Docker) and the images it names."""

    manifest: bytes
    media_type: str
    images: dict[str, Image]

    @property
    def digest(self) -> str:
        """The index's digest."""
        return digest_of(self.manifest)

    @property
    def blobs(self) -> dict[str, bytes]:
        """Every blob of every image."""
        return {d: b for image in self.images.values() for d, b in image.blobs.items()}

    def manifests(self) -> dict[str, tuple[bytes, str]]:
        """Every manifest to store (the images' and the index's), digest → (bytes, type)."""
        out = {i.digest: (i.manifest, i.media_type) for i in self.images.values()}
        return {**out, self.digest: (self.manifest, self.media_type)}


def make_index(images_by_platform: Mapping[str, Image], media: str = "oci") -> Index:
    """An index over *images_by_platform* (``os/arch[/variant]`` → Image)."""
    mtype = OCI_INDEX if media == "oci" else DOCKER_LIST
    entries = [
        {**image.descriptor(), "platform": _platform(platform)}
        for platform, image in images_by_platform.items()
    ]
    doc = {"schemaVersion": 2, "mediaType": mtype, "manifests": entries}
    return Index(json.dumps(doc, indent=3).encode(), mtype, dict(images_by_platform))


def oversized_manifest(image: Image, size: int = 4 * 1024 * 1024 + 1) -> bytes:
    """*image*'s manifest as valid JSON padded (an annotation) to at least *size* bytes."""
    doc = json.loads(image.manifest)
    doc["annotations"] = {"org.dockyard.padding": "x" * size}
    return json.dumps(doc).encode()


def _gf2_times(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec, i = vec >> 1, i + 1
    return out


def _zeros_operator(nbytes: int) -> list[int]:
    """The GF(2) matrix that advances a CRC-32 register over *nbytes* zero bytes (power of 2)."""
    op = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    bits = nbytes * 8
    while bits > 1:
        op = [_gf2_times(op, op[n]) for n in range(32)]
        bits //= 2
    return op


def gzip_bomb(size: int = 10 * 1024**3, chunk: int = 1 << 20) -> PrebuiltLayer:
    """A gzip layer whose tar holds one file of *size* zero bytes (10 GiB → about 10 MB).

    Built from one deflate block of *chunk* zeros repeated after full flushes, with a correct
    CRC and length, so decompression only fails on size limits. The diff_id is not computed
    (hashing 10 GiB takes too long): it is a placeholder that cannot match.
    """
    if size % chunk or chunk & (chunk - 1):
        raise ValueError("size must be a multiple of chunk, chunk a power of two")
    info = tarfile.TarInfo("zeros")
    info.size, info.mtime, info.mode = size, MTIME, 0o644
    header = info.tobuf(format=tarfile.GNU_FORMAT)  # base-256 size past 8 GiB
    tail = bytes(1024)  # end-of-archive blocks
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(header) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(bytes(chunk)) + comp.flush(zlib.Z_FULL_FLUSH)
    assert comp.compress(bytes(chunk)) + comp.flush(zlib.Z_FULL_FLUSH) == block
    end = comp.compress(tail) + comp.flush(zlib.Z_FINISH)
    crc, op = zlib.crc32(header), _zeros_operator(chunk)
    for _ in range(size // chunk):
        crc = _gf2_times(op, crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF  # crc32 over one more chunk
    crc = zlib.crc32(tail, crc)
    total = len(header) + size + len(tail)
    trailer = crc.to_bytes(4, "little") + (total & 0xFFFFFFFF).to_bytes(4, "little")
    gz_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    blob = gz_header + head + block * (size // chunk) + end + trailer
    return PrebuiltLayer(blob, DOCKER_LAYER + ".gzip", "sha256:" + "0" * 64)


def write_oci_layout(obj: Image | Index, directory: Path, tag: str = "latest") -> Path:
    """Write *obj* as an OCI image layout in *directory* with *tag*; return the directory."""
    blobs_dir = directory / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    for data in [*obj.blobs.values(), *(m for m, _ in obj.manifests().values())]:
        (blobs_dir / digest_of(data).split(":", 1)[1]).write_bytes(data)
    ref = {"org.opencontainers.image.ref.name": tag}
    index = {
        "schemaVersion": 2,
        "manifests": [_descriptor(obj.media_type, obj.manifest, annotations=ref)],
    }
    (directory / "index.json").write_text(json.dumps(index))
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return directory


def _run(argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a tool; raise with its output when it fails."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def umoci_layout(
    directory: Path, tag: str = "latest", files: Mapping[str, bytes] | None = None
) -> Path:
    """Make an OCI layout in *directory* with umoci: a busybox rootfs (+ *files*) as *tag*."""
    _run(["umoci", "init", "--layout", str(directory)])
    image = f"{directory}:{tag}"
    _run(["umoci", "new", "--image", image])
    with tempfile.TemporaryDirectory(prefix="umoci-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        with tarfile.open(fileobj=io.BytesIO(busybox_rootfs_tar()), mode="r") as tar:
            tar.extractall(rootfs, filter="tar")
        for path, data in (files or {}).items():
            target = rootfs / path.strip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        rootless = [] if os.geteuid() == 0 else ["--rootless"]
        _run(["umoci", "insert", *rootless, "--image", image, str(rootfs), "/"])
    _run(["umoci", "config", "--image", image, "--config.cmd", "/bin/sh"])
    return directory


def skopeo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``skopeo --insecure-policy ARGS``; raise with stderr when it fails."""
    return _run(["skopeo", "--insecure-policy", *args], timeout=timeout)


def _creds(flag: str, target: Registry | str, creds: str | None) -> list[str]:
    if creds is None and isinstance(target, Registry) and target.user:
        creds = f"{target.user}:{target.password}"
    return [f"--{flag}-creds", creds] if creds else [f"--{flag}-no-creds"]


def push_with_skopeo(
    src: Path | Image | Index,
    registry: Registry | str,
    name: str,
    tag: str = "latest",
    *,
    src_tag: str = "latest",
    compress_format: str | None = None,
    creds: str | None = None,
) -> None:
    """Copy an OCI layout dir (or an Image/Index) to HOST/NAME:TAG with skopeo over HTTP."""
    host = registry.host if isinstance(registry, Registry) else registry
    with tempfile.TemporaryDirectory(prefix="skopeo-src-") as tmp:
        if not isinstance(src, Path):
            src = write_oci_layout(src, Path(tmp) / "layout", src_tag)
        extra = ["--dest-compress-format", compress_format] if compress_format else []
        if isinstance(src, Path) and compress_format is None:
            extra.append("--preserve-digests")
        skopeo(
            "copy", "--all", "--dest-tls-verify=false", *_creds("dest", registry, creds), *extra,
            f"oci:{src}:{src_tag}", f"docker://{host}/{name}:{tag}",
        )  # fmt: skip


def pull_with_skopeo(
    registry: Registry | str, name: str, ref: str, dest: Path, *, creds: str | None = None
) -> Path:
    """Copy HOST/NAME:REF (tag or digest) into an OCI layout at *dest* with skopeo."""
    host = registry.host if isinstance(registry, Registry) else registry
    sep = "@" if ref.startswith("sha256:") else ":"
    skopeo(
        "copy", "--src-tls-verify=false", *_creds("src", registry, creds),
        f"docker://{host}/{name}{sep}{ref}", f"oci:{dest}:latest",
    )  # fmt: skip
    return dest


def push_image(
    obj: Image | Index, target: Registry | RegistryClient, name: str, tag: str = "latest"
) -> str:
    """Upload *obj*'s blobs and manifests over the v2 API as NAME:TAG; return its digest."""
    client = target.client() if isinstance(target, Registry) else target
    scope = f"repository:{name}:pull,push"
    for digest, data in obj.blobs.items():
        if client.request("HEAD", f"/v2/{name}/blobs/{digest}", scope=scope).status == 200:
            continue
        start = client.request("POST", f"/v2/{name}/blobs/uploads/", scope=scope)
        if start.status != 202:
            raise RuntimeError(f"upload start: {start.status} {start.body!r}")
        location = urllib.parse.urljoin(client.url, start.headers["location"])
        location += ("&" if "?" in location else "?") + "digest=" + digest
        headers = {"Content-Type": "application/octet-stream"}
        done = client.request("PUT", location, data, headers, scope=scope)
        if done.status != 201:
            raise RuntimeError(f"blob {digest}: {done.status} {done.body!r}")
    for digest, (data, media_type) in obj.manifests().items():
        ref = tag if digest == obj.digest else digest
        resp = client.request(
            "PUT", f"/v2/{name}/manifests/{ref}", data, {"Content-Type": media_type}, scope=scope
        )
        if resp.status != 201:
            raise RuntimeError(f"manifest {ref}: {resp.status} {resp.body!r}")
    return obj.digest
