"""Interoperation with other image tools: skopeo reads what dockyard pushed, dockyard pulls what
skopeo and umoci made (gzip and zstd layers), and multi-platform indexes resolve per platform.

skopeo verifies every blob against its digest while it copies, so a successful copy already
proves the pushed bytes; the tests also check the layout's blobs and diff_ids themselves.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import secrets
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.linux.containerkit import busybox_tar
from tests.registry.conftest import needs_skopeo, needs_umoci
from tests.registry.daemonkit import PullDaemon, needs_root, pulld, store_stays_consistent
from tests.registry.images import (
    OCI_INDEX,
    busybox_rootfs_tar,
    layer,
    make_image,
    make_index,
    push_image,
    push_with_skopeo,
    skopeo,
    umoci_layout,
)
from tests.registry.registries import Registry

pytestmark = [needs_root, pytest.mark.slow, pytest.mark.usefixtures("store_stays_consistent")]
__all__ = ["pulld", "store_stays_consistent"]


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def layout_blob(layout: Path, digest: str) -> Path:
    """The path of blob *digest* in an OCI layout."""
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def layout_json(layout: Path, digest: str) -> dict[str, Any]:
    """Blob *digest* of an OCI layout, decoded as JSON."""
    doc: dict[str, Any] = json.loads(layout_blob(layout, digest).read_bytes())
    return doc


@needs_skopeo
def test_skopeo_copies_what_dockyard_pushed(
    pulld: PullDaemon, registry: Registry, tmp_path: Path
) -> None:
    """skopeo copies a dockyard push to an OCI layout: same layers, same diff_ids, same digest."""
    src = tmp_path / "src.tar"
    shutil.copyfile(busybox_tar(tmp_path.parent), src)
    with tarfile.open(src, "a") as archive:
        data = f"interop {secrets.token_hex(8)}\n".encode()
        info = tarfile.TarInfo("etc/interop")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    local = f"interop-{secrets.token_hex(3)}:src"
    ref = f"{registry.host}/bb:v1"
    pulld.ok("import", str(src), local)
    pulld.ok("tag", local, ref)
    try:
        pulld.ok("push", ref)
        rootfs = pulld.image(ref)["RootFS"]["Layers"]
        resp = registry.client().manifest("bb", "v1")
        assert resp.status == 200
        pushed = json.loads(resp.body)
        pushed_layers = [d["digest"] for d in pushed["layers"]]

        layout = tmp_path / "layout"
        skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:v1")
        index = json.loads((layout / "index.json").read_text())
        manifest = layout_json(layout, index["manifests"][0]["digest"])
        assert [d["digest"] for d in manifest["layers"]] == pushed_layers
        config = layout_json(layout, manifest["config"]["digest"])
        assert config["rootfs"]["diff_ids"] == rootfs
        assert pushed["config"]["digest"] == pulld.image(ref)["Id"], "the image id is kept"
        for desc, diff_id in zip(manifest["layers"], rootfs, strict=True):
            blob = layout_blob(layout, desc["digest"])
            assert sha256_file(blob) == desc["digest"]
            assert blob.stat().st_size == desc["size"]
            assert "sha256:" + hashlib.sha256(gzip.decompress(blob.read_bytes())).hexdigest() == (
                diff_id
            )

        out = skopeo("inspect", "--tls-verify=false", f"docker://{ref}")
        inspected = json.loads(out.stdout)
        assert inspected["Digest"] == resp.headers["docker-content-digest"]
        assert inspected["Layers"] == pushed_layers
        assert inspected["Architecture"] == pulld.image(ref)["Architecture"]
        assert inspected["Os"] == "linux"
    finally:
        pulld.rmi(local, ref)


@needs_skopeo
@needs_umoci
@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_pull_umoci_image_pushed_by_skopeo(
    pulld: PullDaemon, registry: Registry, tmp_path: Path, compression: str
) -> None:
    """An umoci-made image pushed by skopeo (gzip or zstd layers) pulls and runs."""
    content = f"made by umoci, {compression} {secrets.token_hex(6)}\n"
    layout = umoci_layout(tmp_path / "oci", "v1", {"somefile": content.encode()})
    name = f"umoci-{compression}"
    push_with_skopeo(layout, registry, name, "v1", src_tag="v1", compress_format=compression)
    resp = registry.client().manifest(name, "v1")
    assert resp.status == 200
    pushed = json.loads(resp.body)
    types = {d["mediaType"] for d in pushed["layers"]}
    assert all(t.endswith("+" + compression) or t.endswith("." + compression) for t in types), types
    ref = f"{registry.host}/{name}:v1"
    try:
        out = pulld.ok("pull", ref)
        assert "Pull complete" in out, out
        assert pulld.ok("run", "--rm", ref, "cat", "/somefile") == content
        config = pulld.image(ref)
        assert config["Id"] == pushed["config"]["digest"]
        assert len(config["RootFS"]["Layers"]) == len(pushed["layers"])
    finally:
        pulld.rmi(ref)


@pytest.fixture
def multiarch(registry: Registry) -> Iterator[tuple[str, Any, str]]:
    """A two-platform index (linux/amd64, linux/arm64) pushed as NAME:v1: (reference, index,
    the mark that follows the platform name in each image's ``/platform``)."""
    mark = secrets.token_hex(4).encode()
    base = busybox_rootfs_tar(("sh", "echo", "cat"))
    images = {
        plat: make_image(
            [base, layer({"platform": plat.encode() + mark})], media="oci", platform=plat
        )
        for plat in ("linux/amd64", "linux/arm64")
    }
    index = make_index(images, media="oci")
    name = f"multi{secrets.token_hex(3)}"
    push_image(index, registry, name, "v1")
    yield f"{registry.host}/{name}:v1", index, mark.decode()


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the default platform must be amd64")
def test_index_pulls_host_platform_by_default(
    pulld: PullDaemon, multiarch: tuple[str, Any, str]
) -> None:
    """Pulling an index picks linux/amd64 on this host; --platform picks another one."""
    ref, index, mark = multiarch
    amd64, arm64 = index.images["linux/amd64"], index.images["linux/arm64"]
    try:
        out = pulld.ok("pull", ref)
        assert f"Digest: {index.digest}" in out, out
        info = pulld.image(ref)
        assert info["Architecture"] == "amd64" and info["Os"] == "linux"
        assert info["Id"] == amd64.config_digest
        assert pulld.ok("run", "--rm", ref, "cat", "/platform") == "linux/amd64" + mark

        pulld.ok("pull", "--platform", "linux/arm64", ref)
        info = pulld.image(ref)
        assert info["Architecture"] == "arm64" and info["Os"] == "linux"
        assert info["Id"] == arm64.config_digest
        assert pulld.has_image(amd64.config_digest), "the amd64 image stays, untagged"
    finally:
        pulld.rmi(ref, amd64.config_digest, arm64.config_digest)


def test_distribution_inspect_lists_platforms(
    pulld: PullDaemon, multiarch: tuple[str, Any, str]
) -> None:
    """``GET /distribution/NAME/json`` gives the index descriptor and both platforms."""
    ref, index, _ = multiarch
    status, _, body = pulld.api("GET", f"/distribution/{ref}/json")
    assert status == 200, body
    doc = json.loads(body)
    assert doc["Descriptor"]["digest"] == index.digest
    assert doc["Descriptor"]["mediaType"] == OCI_INDEX
    assert doc["Descriptor"]["size"] == len(index.manifest)
    platforms = sorted((p["os"], p["architecture"]) for p in doc["Platforms"])
    assert platforms == [("linux", "amd64"), ("linux", "arm64")]
    assert not pulld.has_image(ref), "distribution inspect must not pull"
