"""read_archive: docker-archive and OCI layouts, gzip input, and hostile archives."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from graph.imagetar import ArchiveImage, read_archive, write_archive
from graph.imagetar import oci as oci_module
from tests.unit.test_imagetar_kit import (
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Member,
    archive,
    blob,
    config_for,
    descriptor,
    digest,
    image,
    index_json,
    layer_tar,
    link,
    oci_image,
    reg,
)

BASE = layer_tar({"bin/sh": b"#!shell"})
TOP = layer_tar({"app/run": b"run"})
HEX = "ab" * 32


def load(data: bytes, workdir: Path) -> list[ArchiveImage]:
    """Read *data* and return its images with their layer bytes checked readable."""
    with read_archive(io.BytesIO(data), workdir) as images:
        for img in images:
            for layer in img.layers:
                with layer.open() as stream:
                    assert len(stream.read()) == layer.size
    assert list(workdir.iterdir()) == []  # everything written was removed
    return images


def refused(data: bytes, workdir: Path, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        load(data, workdir)
    assert list(workdir.iterdir()) == []


def docker_archive(
    config: bytes,
    layers: list[bytes],
    tags: object,
    *extra: Member,
    paths: list[str] | None = None,
) -> bytes:
    """Return an old-style docker save: <hex>.json, <hex>/layer.tar and manifest.json."""
    members: list[Member] = [reg(digest(config)[7:] + ".json", config)]
    stored = []
    for data in layers:
        path = digest(data)[7:] + "/layer.tar"
        members.append(reg(path, data))
        stored.append(path)
    layer_paths = stored if paths is None else paths
    item = {"Config": digest(config)[7:] + ".json", "RepoTags": tags, "Layers": layer_paths}
    members.append(reg("manifest.json", json.dumps([item]).encode()))
    return archive(*members, *extra)


def saved(*images: ArchiveImage) -> bytes:
    out = io.BytesIO()
    write_archive(out, images)
    return out.getvalue()


def test_gzip_compressed_archive_loads(tmp_path: Path) -> None:
    img = image([BASE, TOP], "busybox:latest")
    (got,) = load(gzip.compress(saved(img)), tmp_path)
    assert got.config == img.config and got.repo_tags == ("busybox:latest",)


def test_legacy_docker_archive_with_shared_layer_symlink(tmp_path: Path) -> None:
    config = config_for([digest(BASE), digest(BASE)])
    # The second layer is the symlink, as Docker < 25 wrote a layer repeated in one image.
    data = docker_archive(
        config,
        [BASE],
        ["docker.io/library/busybox:latest"],
        reg(HEX + "/VERSION", b"1.0"),
        reg(HEX + "/json", b"{}"),
        link(HEX + "/layer.tar", "../" + digest(BASE)[7:] + "/layer.tar"),
        reg("manifest.json.orig", b"ignored"),
        paths=["./" + digest(BASE)[7:] + "/layer.tar", HEX + "/layer.tar"],
    )
    (got,) = load(data, tmp_path)
    assert got.repo_tags == ("busybox:latest",)
    assert [layer.diff_id for layer in got.layers] == [digest(BASE)] * 2


def test_oci_layout_with_gzip_layers_and_tags(tmp_path: Path) -> None:
    compressed = gzip.compress(BASE, mtime=0)
    manifest, blobs = oci_image([compressed], OCI_LAYER_GZIP)
    data = archive(
        reg("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        *blobs,
        index_json(
            descriptor(
                OCI_MANIFEST, manifest, annotations={"org.opencontainers.image.ref.name": "1.0"}
            ),
            descriptor(
                OCI_MANIFEST,
                manifest,
                annotations={"org.opencontainers.image.ref.name": "quay.io/a/b:2"},
            ),
            descriptor(
                OCI_MANIFEST,
                manifest,
                annotations={"io.containerd.image.name": "docker.io/library/busybox:latest"},
            ),
        ),
    )
    (got,) = load(data, tmp_path)
    assert got.repo_tags == ("quay.io/a/b:2", "busybox:latest")  # bare "1.0" names no repository
    (layer,) = got.layers
    assert layer.diff_id == digest(BASE)
    with read_archive(io.BytesIO(data), tmp_path) as images, images[0].layers[0].open() as blob:
        assert blob.read() == compressed


def test_nested_index_picks_the_host_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    amd, amd_blobs = oci_image([BASE], "application/vnd.oci.image.layer.v1.tar")
    arm, arm_blobs = oci_image([TOP], "application/vnd.oci.image.layer.v1.tar", arch="arm64")
    nested = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                descriptor(OCI_MANIFEST, amd, platform={"os": "linux", "architecture": "amd64"}),
                descriptor(OCI_MANIFEST, arm, platform={"os": "linux", "architecture": "arm64"}),
            ],
        }
    ).encode()
    data = archive(
        *amd_blobs,
        *arm_blobs,
        blob(nested),
        index_json(descriptor(OCI_INDEX, nested, annotations={"io.containerd.image.name": "x:1"})),
    )
    monkeypatch.setattr(oci_module, "host_arch", lambda: "arm64")
    (got,) = load(data, tmp_path)
    assert [layer.diff_id for layer in got.layers] == [digest(TOP)] and got.repo_tags == ("x:1",)
    monkeypatch.setattr(oci_module, "host_arch", lambda: "s390x")
    refused(data, tmp_path, r"linux/s390x; it has linux/amd64, linux/arm64")


def test_manifest_json_is_preferred_over_index(tmp_path: Path) -> None:
    data = saved(image([BASE], "a:1"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert "index.json" in tf.getnames()
    (got,) = load(data, tmp_path)
    assert got.repo_tags == ("a:1",)


# Hostile archives: each is refused with InvalidArgument naming what is wrong.


def test_symlink_member_is_refused(tmp_path: Path) -> None:
    refused(archive(link("manifest.json", "/etc/passwd")), tmp_path, "'manifest.json'.*symlink")
    refused(archive(link(HEX + "/layer.tar", "../../x.tar")), tmp_path, HEX + "/layer.tar")


def test_dotdot_member_is_refused(tmp_path: Path) -> None:
    refused(archive(reg("../x", b"x")), tmp_path, r"'\.\./x'")
    refused(archive(reg("blobs/../../x", b"x")), tmp_path, r"blobs/\.\./\.\./x")


def test_absolute_member_is_refused(tmp_path: Path) -> None:
    refused(archive(reg("/etc/x", b"x")), tmp_path, "'/etc/x': absolute")


def test_hardlink_member_is_refused(tmp_path: Path) -> None:
    data = archive(
        reg("repositories", b"{}"), link("manifest.json", "repositories", tarfile.LNKTYPE)
    )
    refused(data, tmp_path, "'manifest.json': hard link")


def test_device_member_is_refused(tmp_path: Path) -> None:
    info = tarfile.TarInfo("dev/null")
    info.type = tarfile.CHRTYPE
    refused(archive((info, None)), tmp_path, "'dev/null': unsupported type")


def test_blob_not_matching_its_name_is_refused(tmp_path: Path) -> None:
    name = "blobs/sha256/" + digest(BASE)[7:]
    refused(archive(reg(name, TOP)), tmp_path, name)


def test_huge_manifest_json_is_refused(tmp_path: Path) -> None:
    refused(archive(reg("manifest.json", b" " * (9 << 20))), tmp_path, "manifest.json is too large")


def test_huge_config_blob_is_refused(tmp_path: Path) -> None:
    config = b" " * (9 << 20)
    manifest = json.dumps(
        {"config": descriptor("application/vnd.oci.image.config.v1+json", config), "layers": []}
    ).encode()
    data = archive(blob(config), blob(manifest), index_json(descriptor(OCI_MANIFEST, manifest)))
    refused(data, tmp_path, "config is too large")


def test_config_with_more_diff_ids_than_layers_is_refused(tmp_path: Path) -> None:
    config = config_for([digest(BASE), digest(TOP)])
    refused(
        docker_archive(config, [BASE], None), tmp_path, r"manifest.json\[0\].*2 diff_ids, 1 layers"
    )


def test_manifest_pointing_to_missing_blob_is_refused(tmp_path: Path) -> None:
    manifest, blobs = oci_image([BASE], "application/vnd.oci.image.layer.v1.tar")
    data = archive(*blobs[1:], index_json(descriptor(OCI_MANIFEST, manifest)))
    refused(data, tmp_path, f"blob {digest(BASE)}.*not in the archive")
    no_layer = docker_archive(config_for([digest(BASE)]), [BASE], None, paths=[HEX + ".tar"])
    refused(no_layer, tmp_path, f"Layers: '{HEX}.tar' is not in the archive")


def test_bad_repo_tag_is_refused(tmp_path: Path) -> None:
    data = docker_archive(config_for([digest(BASE)]), [BASE], ["UPPER/case:x"])
    refused(data, tmp_path, "RepoTags: invalid tag 'UPPER/case:x'")
    untagged = docker_archive(config_for([digest(BASE)]), [BASE], ["busybox"])
    refused(untagged, tmp_path, "must be name:tag")


def test_bad_digest_in_index_is_refused(tmp_path: Path) -> None:
    entry = {"mediaType": OCI_MANIFEST, "digest": "sha256:../../etc/passwd", "size": 1}
    refused(archive(index_json(entry)), tmp_path, "invalid digest")


def test_descriptor_size_mismatch_is_refused(tmp_path: Path) -> None:
    manifest, blobs = oci_image([BASE], "application/vnd.oci.image.layer.v1.tar")
    entry = {**descriptor(OCI_MANIFEST, manifest), "size": 3}
    refused(archive(*blobs, index_json(entry)), tmp_path, "descriptor says 3")


def test_index_posing_as_manifest_is_refused(tmp_path: Path) -> None:
    both = json.dumps({"manifests": [], "layers": [], "config": {}}).encode()
    data = archive(blob(both), index_json(descriptor(OCI_MANIFEST, both)))
    refused(data, tmp_path, "both an index and a manifest")


def test_config_without_layers_rootfs_is_refused(tmp_path: Path) -> None:
    config = json.dumps({"rootfs": {"type": "other", "diff_ids": []}}).encode()
    refused(docker_archive(config, [], None), tmp_path, "invalid rootfs")


def test_duplicate_member_is_refused(tmp_path: Path) -> None:
    data = archive(reg("repositories", b"{}"), reg("repositories", b"{}"))
    refused(data, tmp_path, "'repositories': appears twice")


def test_archive_without_manifest_or_index_is_refused(tmp_path: Path) -> None:
    refused(archive(reg("repositories", b"{}")), tmp_path, "neither manifest.json nor index.json")
    refused(b"not a tar at all" * 64, tmp_path, "invalid archive")


def test_workdir_is_cleaned_when_the_caller_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), read_archive(io.BytesIO(saved(image([BASE]))), tmp_path):
        assert list(tmp_path.iterdir())
        raise RuntimeError("caller failed")
    assert list(tmp_path.iterdir()) == []
