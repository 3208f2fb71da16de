"""write_archive: both formats in one tar, shared layers once, deterministic, verified layers."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from graph.imagetar import ArchiveImage, LayerBlob, read_archive, write_archive
from tests.unit.test_imagetar_kit import blob_of, digest, image, layer_tar

BASE = layer_tar({"bin/sh": b"#!shell", "etc/hostname": b"box\n"})
TOP = layer_tar({"app/run": b"run"})
OTHER = layer_tar({"data/x": b"x" * 70000})


def save(*images: ArchiveImage) -> bytes:
    out = io.BytesIO()
    written = write_archive(out, images)
    assert written == len(out.getvalue())
    return out.getvalue()


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {
            m.name: (tf.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
            for m in tf.getmembers()
        }


def test_round_trip_gives_configs_layers_and_tags(tmp_path: Path) -> None:
    first = image([BASE, TOP], "busybox:latest", "localhost:5000/x:1")
    second = image([BASE, OTHER], known_size=False)
    data = save(first, second)
    with read_archive(io.BytesIO(data), tmp_path) as images:
        assert [i.config for i in images] == [first.config, second.config]
        assert images[0].repo_tags == ("busybox:latest", "localhost:5000/x:1")
        assert images[1].repo_tags == ()
        for got, want in zip(images, (first, second), strict=True):
            assert [b.diff_id for b in got.layers] == [b.diff_id for b in want.layers]
            for layer, source in zip(got.layers, want.layers, strict=True):
                with layer.open() as stored, source.open() as original:
                    assert stored.read() == original.read()
                assert layer.size == len(source.open().read())
    assert list(tmp_path.iterdir()) == []


def test_layout_is_docker_save_and_oci() -> None:
    img = image([BASE, TOP], "busybox:latest")
    files = members(save(img))
    config_hex = digest(img.config)[7:]
    layer_paths = [f"blobs/sha256/{digest(x)[7:]}" for x in (BASE, TOP)]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    assert json.loads(files["manifest.json"]) == [
        {
            "Config": f"blobs/sha256/{config_hex}",
            "RepoTags": ["busybox:latest"],
            "Layers": layer_paths,
        }
    ]
    assert json.loads(files["repositories"]) == {"busybox": {"latest": digest(TOP)[7:]}}
    index = json.loads(files["index.json"])
    (entry,) = index["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert entry["annotations"] == {
        "io.containerd.image.name": "docker.io/library/busybox:latest",
        "org.opencontainers.image.ref.name": "latest",
    }
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    manifest_bytes = files["blobs/sha256/" + entry["digest"][7:]]
    assert digest(manifest_bytes) == entry["digest"] and len(manifest_bytes) == entry["size"]
    manifest = json.loads(manifest_bytes)
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["config"]["digest"] == digest(img.config)
    assert [d["digest"] for d in manifest["layers"]] == [digest(BASE), digest(TOP)]
    assert {d["mediaType"] for d in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar"
    }
    assert files[layer_paths[0]] == BASE and files[f"blobs/sha256/{config_hex}"] == img.config


def test_untagged_image_has_plain_index_entry_and_no_repositories() -> None:
    files = members(save(image([BASE])))
    (entry,) = json.loads(files["index.json"])["manifests"]
    assert "annotations" not in entry
    assert json.loads(files["manifest.json"])[0]["RepoTags"] is None
    assert "repositories" not in files


def test_shared_layer_written_once() -> None:
    data = save(image([BASE, TOP], "a:1"), image([BASE, OTHER], "b:1"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
    assert names.count("blobs/sha256/" + digest(BASE)[7:]) == 1
    assert len(names) == len(set(names))


def test_same_config_twice_is_one_image_with_both_tags() -> None:
    files = members(save(image([BASE], "a:1"), image([BASE], "b:2")))
    (item,) = json.loads(files["manifest.json"])
    assert item["RepoTags"] == ["a:1", "b:2"]
    assert len(json.loads(files["index.json"])["manifests"]) == 2


def test_output_is_deterministic() -> None:
    images = [image([BASE, TOP], "busybox:latest"), image([OTHER], known_size=False)]
    first = save(*images)
    assert save(*images) == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tf:
        for member in tf.getmembers():
            assert (member.mtime, member.uid, member.gid, member.uname) == (0, 0, 0, "")


@pytest.mark.parametrize("known_size", [True, False])
def test_layer_content_not_matching_diff_id_is_refused(known_size: bool) -> None:
    good = image([BASE])
    lying = LayerBlob(digest(BASE), lambda: io.BytesIO(TOP), len(TOP) if known_size else -1)
    with pytest.raises(InvalidArgument, match=digest(BASE)):
        save(ArchiveImage(good.config, (lying,), ()))


def test_layer_stream_shorter_or_longer_than_its_size_is_refused() -> None:
    good = image([BASE])
    short = LayerBlob(digest(BASE), lambda: io.BytesIO(BASE[:-512]), len(BASE))
    with pytest.raises(InvalidArgument, match="shorter"):
        save(ArchiveImage(good.config, (short,), ()))
    long = LayerBlob(digest(BASE), lambda: io.BytesIO(BASE + b"x"), len(BASE))
    with pytest.raises(InvalidArgument, match="longer"):
        save(ArchiveImage(good.config, (long,), ()))


def test_layers_not_matching_config_are_refused() -> None:
    good = image([BASE, TOP])
    with pytest.raises(InvalidArgument, match="rootfs.diff_ids"):
        save(ArchiveImage(good.config, (blob_of(BASE),), ()))


def test_bad_repo_tag_is_refused() -> None:
    out = io.BytesIO()
    with pytest.raises(InvalidArgument, match="UPPER"):
        write_archive(out, [image([BASE], "UPPER/case:x")])
