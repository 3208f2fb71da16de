"""Interoperability of graph.imagetar with real tools: umoci layouts and skopeo archives.

Needs the Debian packages ``skopeo``, ``umoci`` and ``busybox-static``. Every tool call works on
local files only (``oci:``, ``oci-archive:``, ``docker-archive:``); no registry is contacted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest

from graph.archive import apply_layer, diff_id_of
from graph.imagetar import ArchiveImage, LayerBlob, read_archive, write_archive

BUSYBOX = Path("/bin/busybox")
MISSING = [tool for tool in ("skopeo", "umoci") if shutil.which(tool) is None]
pytestmark = [
    pytest.mark.skipif(
        bool(MISSING), reason=f"needs {' and '.join(MISSING)} (apt-get install -y skopeo umoci)"
    ),
    pytest.mark.skipif(
        not BUSYBOX.is_file() or BUSYBOX.is_symlink(),
        reason="needs a static /bin/busybox (apt-get install -y busybox-static)",
    ),
]


def run(*args: str | Path) -> str:
    """Run a tool and return its stdout; show its stderr if it fails."""
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


def skopeo(tmp: Path, *args: str | Path) -> str:
    """Run skopeo with no policy lookup and its temporary files under *tmp*."""
    (tmp / "skopeo-tmp").mkdir(exist_ok=True)
    return run("skopeo", "--insecure-policy", "--tmpdir", tmp / "skopeo-tmp", *args)


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Map each path under *root* to its mode and content (symlink target for links)."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                data = os.readlink(path).encode()
            elif stat.S_ISREG(st.st_mode):
                data = path.read_bytes()
            else:
                data = b""
            tree[str(path.relative_to(root))] = (st.st_mode, data)
    return tree


def tar_dir(src: Path, dest: Path) -> Path:
    """Tar the contents of *src* (an OCI layout dir) into *dest*, names relative to *src*."""
    with tarfile.open(dest, "w") as tf:
        for entry in sorted(src.rglob("*")):
            tf.add(entry, arcname=str(entry.relative_to(src)), recursive=False)
    return dest


@dataclass
class Layout:
    """A umoci-built OCI layout holding a busybox rootfs as one gzip layer, tagged ``t``."""

    dir: Path
    rootfs: Path


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    # umoci 0.4.7's ``insert`` writes layer tars without the last block's padding, which no
    # strict tar reader accepts; ``unpack`` + ``repack`` writes proper ones.
    oci, bundle = tmp_path / "oci", tmp_path / "bundle"
    rootless = ["--rootless"] if os.geteuid() != 0 else []
    run("umoci", "init", "--layout", oci)
    run("umoci", "new", "--image", f"{oci}:t")
    run("umoci", "unpack", *rootless, "--image", f"{oci}:t", bundle)
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir()
    (rootfs / "etc").mkdir()
    shutil.copy2(BUSYBOX, rootfs / "bin/busybox")
    os.chmod(rootfs / "bin/busybox", 0o755)
    for applet in ("sh", "ls", "cat"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "bin/echo").symlink_to("/bin/busybox")
    (rootfs / "etc/hostname").write_text("busybox\n")
    os.chmod(rootfs / "etc/hostname", 0o640)
    run("umoci", "repack", "--image", f"{oci}:t", bundle)
    yield Layout(oci, rootfs)


def only_image(archive: Path, workdir: Path) -> tuple[ArchiveImage, list[str]]:
    """Read *archive*, check it holds one image, return it (layers invalid after) and diff_ids."""
    with archive.open("rb") as stream, read_archive(stream, workdir) as images:
        assert len(images) == 1
        return images[0], [layer.diff_id for layer in images[0].layers]


def test_umoci_layout_loads_and_applies_to_the_rootfs(layout: Layout, tmp_path: Path) -> None:
    archive = tar_dir(layout.dir, tmp_path / "oci.tar")
    work = tmp_path / "work"
    work.mkdir()
    applied = tmp_path / "applied"
    applied.mkdir()
    with archive.open("rb") as stream, read_archive(stream, work) as images:
        (image,) = images
        assert image.repo_tags == ()  # umoci's ref.name "t" names no repository
        assert len(image.layers) == 1
        for layer in image.layers:
            with layer.open() as blob:
                assert blob.read(2) == b"\x1f\x8b"  # umoci stores gzip layers
            with layer.open() as blob:
                assert apply_layer(applied, blob).diff_id == layer.diff_id
    assert list(work.iterdir()) == []
    assert snapshot(applied) == snapshot(layout.rootfs)


def test_skopeo_docker_archive_loads_with_its_tag(layout: Layout, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    _, oci_diff_ids = only_image(tar_dir(layout.dir, tmp_path / "oci.tar"), work)
    archive = tmp_path / "docker.tar"
    skopeo(tmp_path, "copy", f"oci:{layout.dir}:t", f"docker-archive:{archive}:busybox:latest")
    image, diff_ids = only_image(archive, work)
    assert image.repo_tags == ("busybox:latest",)
    assert diff_ids == oci_diff_ids
    assert list(work.iterdir()) == []


def opener(path: Path) -> Callable[[], BinaryIO]:
    """Return a function opening *path* for reading bytes."""
    return lambda: path.open("rb")


def _uncompressed_layers(layout: Layout, tmp_path: Path) -> ArchiveImage:
    """Return the umoci image with its layers decompressed into files under *tmp_path*."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    layers = []
    archive = tar_dir(layout.dir, tmp_path / "oci.tar")
    with archive.open("rb") as stream, read_archive(stream, work) as images:
        (image,) = images
        for i, layer in enumerate(image.layers):
            path = tmp_path / f"layer{i}.tar"
            with layer.open() as blob:
                path.write_bytes(gzip.decompress(blob.read()))
            layers.append(LayerBlob(layer.diff_id, opener(path), path.stat().st_size))
    return ArchiveImage(image.config, tuple(layers), ("busybox:latest",))


def _manifest_of(oci_dir: Path) -> dict[str, object]:
    (entry,) = json.loads((oci_dir / "index.json").read_text())["manifests"]
    data = (oci_dir / "blobs/sha256" / entry["digest"].partition(":")[2]).read_text()
    manifest: dict[str, object] = json.loads(data)
    return manifest


def copied_diff_ids(oci_dir: Path) -> list[str]:
    """Return the diff_ids of the one image in *oci_dir*, checked against its config."""
    manifest = _manifest_of(oci_dir)
    layers, config = manifest["layers"], manifest["config"]
    assert isinstance(layers, list) and isinstance(config, dict)
    blobs = oci_dir / "blobs/sha256"
    found = []
    for layer in layers:
        with (blobs / layer["digest"].partition(":")[2]).open("rb") as stream:
            found.append(diff_id_of(stream))
    doc = json.loads((blobs / config["digest"].partition(":")[2]).read_bytes())
    assert doc["rootfs"]["diff_ids"] == found
    return found


def test_our_archive_is_read_by_skopeo(layout: Layout, tmp_path: Path) -> None:
    image = _uncompressed_layers(layout, tmp_path)
    diff_ids = [layer.diff_id for layer in image.layers]
    ours = tmp_path / "ours.tar"
    with ours.open("wb") as out:
        assert write_archive(out, [image]) == ours.stat().st_size

    inspected = json.loads(skopeo(tmp_path, "inspect", f"docker-archive:{ours}"))
    assert inspected["Layers"] == diff_ids
    assert inspected["Architecture"] and inspected["Os"] == "linux"

    dir2, dir3 = tmp_path / "dir2", tmp_path / "dir3"
    skopeo(tmp_path, "copy", f"docker-archive:{ours}", f"oci:{dir2}:x")
    skopeo(tmp_path, "copy", f"oci-archive:{ours}", f"oci:{dir3}:x")
    for copied in (dir2, dir3):
        # skopeo may compress layers on the way (it does from docker-archive to oci), so compare
        # what the copy's layers decompress to and what its config lists.
        assert copied_diff_ids(copied) == diff_ids
    config = _manifest_of(dir3)["config"]
    assert isinstance(config, dict)
    assert config["digest"] == "sha256:" + hashlib.sha256(image.config).hexdigest()
    assert not list((tmp_path / "skopeo-tmp").iterdir())
