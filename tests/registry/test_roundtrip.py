"""Push and pull round trips against a real registry, and what the local store keeps.

A *fresh* image here is the busybox rootfs plus a marker file, imported under a test's own name,
so its layer exists nowhere else in the store and a pull after ``rmi`` really downloads it. Every
test leaves the store consistent: the module's autouse fixture runs a deep fsck after each one.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import tarfile
from pathlib import Path

import pytest

from cli.exits import ExitStatus
from tests.linux.containerkit import busybox_tar
from tests.registry.daemonkit import PullDaemon, needs_root, pulld, store_stays_consistent
from tests.registry.hostile import HostileRegistry
from tests.registry.images import busybox_rootfs_tar, layer, make_image, push_image
from tests.registry.registries import Registry

pytestmark = [needs_root, pytest.mark.slow, pytest.mark.usefixtures("store_stays_consistent")]
__all__ = ["pulld", "store_stays_consistent"]


def fresh_image(pulld: PullDaemon, tmp_path: Path, name: str) -> str:
    """Import busybox plus a unique /marker as *name*; return the image id."""
    src = busybox_tar(tmp_path.parent)
    tar = tmp_path / f"{secrets.token_hex(4)}.tar"
    shutil.copyfile(src, tar)
    marker = f"marker {name} {secrets.token_hex(8)}\n".encode()
    with tarfile.open(tar, "a") as archive:
        info = tarfile.TarInfo("marker")
        info.size, info.mode = len(marker), 0o644
        archive.addfile(info, io.BytesIO(marker))
    pulld.ok("import", str(tar), name, "-c", 'CMD ["sh"]')
    return str(pulld.image(name)["Id"])


def registry_tags(registry: Registry, name: str) -> list[str]:
    """The tags the registry lists for repository *name*."""
    resp = registry.client().request("GET", f"/v2/{name}/tags/list")
    assert resp.status == 200, resp.body
    doc = resp.json()
    assert isinstance(doc, dict)
    return sorted(doc.get("tags") or [])


def manifest_digest(registry: Registry, name: str, ref: str) -> str:
    """The Docker-Content-Digest the registry gives for NAME:REF."""
    resp = registry.client().manifest(name, ref)
    assert resp.status == 200, resp.body
    return resp.headers["docker-content-digest"]


def test_push_rmi_pull_run(pulld: PullDaemon, registry: Registry, tmp_path: Path) -> None:
    """A pushed image comes back with the same id, plain progress output, and runs."""
    local = f"rt-{secrets.token_hex(3)}:src"
    image_id = fresh_image(pulld, tmp_path, local)
    ref = f"{registry.host}/bb:v1"
    pulld.ok("tag", local, ref)
    pushed = pulld.ok("push", ref)
    assert f"The push refers to repository [{registry.host}/bb]" in pushed
    assert "Pushed" in pushed, pushed
    digest = manifest_digest(registry, "bb", "v1")
    assert f"v1: digest: {digest} size: " in pushed

    pulld.ok("rmi", local, ref)
    assert not pulld.has_image(image_id)
    out = pulld.ok("pull", ref)
    assert out.startswith("v1: Pulling from bb\n"), out
    assert "Pull complete" in out and "Pulling fs layer" in out, out
    assert f"Digest: {digest}" in out
    assert f"Status: Downloaded newer image for {ref}" in out
    assert "\x1b[" not in out and "\r" not in out, "progress must be plain lines off a tty"
    lines = [line for line in out.splitlines() if ": Downloading" in line]
    assert len(lines) <= 2, f"one line per status change, not per byte count: {lines}"

    info = pulld.image(ref)
    assert info["Id"] == image_id
    assert info["RepoDigests"] == [f"{registry.host}/bb@{digest}"]
    summary = [i for i in pulld.images() if i["Id"] == image_id]
    assert summary and summary[0]["RepoDigests"] == [f"{registry.host}/bb@{digest}"]
    assert pulld.ok("run", "--rm", ref, "echo", "round trip") == "round trip\n"

    again = pulld.ok("pull", ref)
    assert f"Status: Image is up to date for {ref}" in again
    pulld.ok("rmi", ref)


def test_images_digests_column(pulld: PullDaemon, registry: Registry) -> None:
    """``images --digests`` shows the manifest digest of a pushed repository's row."""
    ref = f"{registry.host}/digests:v1"
    pulld.ok("tag", "busybox:latest", ref)
    try:
        pulld.ok("push", ref)
        digest = manifest_digest(registry, "digests", "v1")
        assert f"{registry.host}/digests@{digest}" in pulld.image(ref)["RepoDigests"]
        out = pulld.ok("images", "--digests")
        header, *rows = out.splitlines()
        assert header.split()[:3] == ["REPOSITORY", "TAG", "DIGEST"], header
        assert any(r.split()[:3] == [f"{registry.host}/digests", "v1", digest] for r in rows), out
    finally:
        pulld.rmi(ref)


def test_pull_by_digest(pulld: PullDaemon, registry: Registry, tmp_path: Path) -> None:
    """NAME@sha256:… pulls the same image as its tag, and records the digest."""
    local = f"rt-{secrets.token_hex(3)}:src"
    image_id = fresh_image(pulld, tmp_path, local)
    ref = f"{registry.host}/bydigest:v1"
    pulld.ok("tag", local, ref)
    pulld.ok("push", ref)
    digest = manifest_digest(registry, "bydigest", "v1")
    pulld.ok("rmi", local, ref)

    by_digest = f"{registry.host}/bydigest@{digest}"
    out = pulld.ok("pull", by_digest)
    assert f"Digest: {digest}" in out, out
    info = pulld.image(by_digest)
    assert info["Id"] == image_id
    assert by_digest in info["RepoDigests"]
    assert pulld.ok("run", "--rm", by_digest, "cat", "/marker").startswith("marker ")
    pulld.ok("rmi", by_digest)
    assert not pulld.has_image(image_id)


def test_shared_base_layer_stored_once(pulld: PullDaemon, registry: Registry) -> None:
    """Two images with a common first layer share one layer directory in the store."""
    base = busybox_rootfs_tar()
    mark = secrets.token_hex(4).encode()
    one = make_image([base, layer({"one": b"1" + mark})])
    two = make_image([base, layer({"two": b"2" + mark})])
    push_image(one, registry, "shared/one", "v1")
    push_image(two, registry, "shared/two", "v1")
    before = set(pulld.layer_dirs())

    pulld.ok("pull", f"{registry.host}/shared/one:v1")
    after_one = set(pulld.layer_dirs())
    assert len(after_one - before) == 2, "both layers of the first image are new"
    out = pulld.ok("pull", f"{registry.host}/shared/two:v1")
    after_two = set(pulld.layer_dirs())
    assert len(after_two - after_one) == 1, "only the top layer of the second image is new"
    assert "Already exists" in out, out

    a = pulld.image(f"{registry.host}/shared/one:v1")
    b = pulld.image(f"{registry.host}/shared/two:v1")
    assert a["RootFS"]["Layers"] == one.diff_ids
    assert b["RootFS"]["Layers"] == two.diff_ids
    assert a["RootFS"]["Layers"][0] == b["RootFS"]["Layers"][0]
    assert a["Id"] == one.config_digest and b["Id"] == two.config_digest
    assert pulld.ok("run", "--rm", f"{registry.host}/shared/two:v1", "cat", "/two") == (
        "2" + mark.decode()
    )

    tree = pulld.ok("images", "--tree")
    assert f"{registry.host}/shared/one:v1" in tree and f"{registry.host}/shared/two:v1" in tree
    pulld.ok("rmi", f"{registry.host}/shared/one:v1", f"{registry.host}/shared/two:v1")
    assert set(pulld.layer_dirs()) == before


def blob_gets(hostile: HostileRegistry) -> list[str]:
    """Paths of the blob GETs the hostile registry answered so far."""
    return [r.path for r in hostile.requests_for("/blobs/", "GET")]


def test_second_pull_downloads_nothing(pulld: PullDaemon, hostile: HostileRegistry) -> None:
    """Pulling an image already present fetches no blob; a sibling fetches only its own."""
    base = busybox_rootfs_tar(("sh", "echo", "cat"))
    mark = secrets.token_hex(4).encode()
    one = make_image([base, layer({"one": mark})], media="oci")
    two = make_image([base, layer({"two": mark})], media="oci")
    hostile.add_image("lib/one", "v1", one)
    hostile.add_image("lib/two", "v1", two)
    one_ref, two_ref = f"{hostile.host}/lib/one:v1", f"{hostile.host}/lib/two:v1"
    try:
        pulld.ok("pull", one_ref)
        first = blob_gets(hostile)
        assert sorted(p.rsplit("/", 1)[1] for p in first) == sorted(one.blobs)

        out = pulld.ok("pull", one_ref)
        assert f"Status: Image is up to date for {one_ref}" in out
        assert blob_gets(hostile) == first, "a second pull must download nothing"

        pulld.ok("pull", two_ref)
        fetched = {p.rsplit("/", 1)[1] for p in blob_gets(hostile)[len(first) :]}
        assert fetched == {two.config_digest, str(two.layers[1]["digest"])}
        assert str(two.layers[0]["digest"]) not in fetched, "the shared base layer was fetched"
        assert pulld.image(two_ref)["Id"] == two.config_digest
    finally:
        pulld.rmi(one_ref, two_ref)


def test_push_again_and_mount(pulld: PullDaemon, registry: Registry, tmp_path: Path) -> None:
    """A second push finds its layers; a push to a sibling repository mounts them."""
    local = f"rt-{secrets.token_hex(3)}:src"
    fresh_image(pulld, tmp_path, local)
    first, other = f"{registry.host}/again:v1", f"{registry.host}/mounted:v1"
    pulld.ok("tag", local, first)
    pulld.ok("tag", local, other)
    try:
        assert "Pushed" in pulld.ok("push", first)
        again = pulld.ok("push", first)
        assert "Layer already exists" in again and "Pushed" not in again, again
        mounted = pulld.ok("push", other)
        assert "Mounted from again" in mounted, mounted
        assert manifest_digest(registry, "mounted", "v1") == manifest_digest(
            registry, "again", "v1"
        )
    finally:
        pulld.rmi(local, first, other)


def test_push_all_tags(pulld: PullDaemon, registry: Registry, tmp_path: Path) -> None:
    """``push -a`` pushes every tag of the repository, and only that repository."""
    local = f"rt-{secrets.token_hex(3)}:src"
    fresh_image(pulld, tmp_path, local)
    repo = f"{registry.host}/alltags"
    for tag in ("a", "b", "c"):
        pulld.ok("tag", local if tag != "c" else "busybox:latest", f"{repo}:{tag}")
    pulld.ok("tag", local, f"{registry.host}/notthis:a")
    try:
        out = pulld.ok("push", "-a", repo)
        for tag in ("a", "b", "c"):
            assert f"{tag}: digest: {manifest_digest(registry, 'alltags', tag)} size: " in out
        assert registry_tags(registry, "alltags") == ["a", "b", "c"]
        missing = registry.client().manifest("notthis", "a")
        assert missing.status == 404, "push -a pushed another repository"
    finally:
        pulld.rmi(local, f"{repo}:a", f"{repo}:b", f"{repo}:c", f"{registry.host}/notthis:a")


def test_pull_missing_repository(pulld: PullDaemon, registry: Registry) -> None:
    """Pulling a name the registry does not have fails with NotFound naming the manifest."""
    proc = pulld.cli("pull", f"{registry.host}/nosuch")
    assert proc.returncode == ExitStatus.NOT_FOUND, (proc.returncode, proc.stderr)
    assert f"manifest for {registry.host}/nosuch:latest not found" in proc.stderr
    proc = pulld.cli("pull", f"{registry.host}/bb:nosuchtag")
    assert proc.returncode == ExitStatus.NOT_FOUND, (proc.returncode, proc.stderr)
    assert f"manifest for {registry.host}/bb:nosuchtag not found" in proc.stderr
    status, _, body = pulld.api("GET", f"/images/{registry.host}/nosuch:latest/json")
    assert status == 404, body


def test_pull_via_api_missing_manifest_is_404(pulld: PullDaemon, registry: Registry) -> None:
    """``POST /images/create`` for a missing manifest answers 404 before any progress."""
    status, _, body = pulld.api(
        "POST", f"/images/create?fromImage={registry.host}/nosuch&tag=latest"
    )
    assert status == 404, (status, body)
    message = json.loads(body)["message"]
    assert f"manifest for {registry.host}/nosuch:latest not found" in message
