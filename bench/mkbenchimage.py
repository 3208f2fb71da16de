#!/usr/bin/env python3
"""Generate the image benchmark's input: a ~200 MB two-layer image of incompressible data.

    python3 bench/mkbenchimage.py OUTDIR [--seed N]

Layer 1: 2000 small files (1-16 KiB) in nested directories plus 4 large files of 36 MB.
Layer 2: 100 small files and 1 large file rewritten, 100 files and 1 directory deleted
(whiteouts), 50 small files added. All bytes come from random.Random seeded per file, and
every tar header is fixed (mtime, owners, order), so the same seed gives byte-identical files.

Writes OUTDIR/rootfs.tar (layer 1 as a plain rootfs, for `import`), OUTDIR/layer1.tar,
OUTDIR/layer2.tar and OUTDIR/image.tar (a docker-archive tagged benchimage:latest, for `load`).
Python standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import random
import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

TAG = "benchimage:latest"
MTIME = 1_700_000_000  # 2023-11-14T22:13:20Z
CREATED = "2023-11-14T22:13:20Z"
CHUNK = 1 << 20

TOP_DIRS = 20  # data/dNN
SUB_DIRS = 10  # data/dNN/sMM
FILES_PER_DIR = 10  # data/dNN/sMM/fKKKK.bin: 2000 small files
LARGE_FILES = 4
LARGE_SIZE = 36_000_000
MODIFIED = 100  # small files rewritten in layer 2
DELETED = 100  # small files whited out in layer 2
ADDED = 50  # small files added in layer 2
DELETED_DIR = "data/d19/s09"


class RandomReader(io.RawIOBase):
    """SIZE bytes of random.Random(seed), made in 1 MiB blocks whatever the read sizes."""

    def __init__(self, seed: str, size: int) -> None:
        self._rng = random.Random(seed)
        self._left = size
        self._buf = b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._left + len(self._buf)
        while len(self._buf) < n and self._left > 0:
            block = min(CHUNK, self._left)
            self._buf += self._rng.randbytes(block)
            self._left -= block
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


def small_files() -> Iterator[str]:
    for d in range(TOP_DIRS):
        for s in range(SUB_DIRS):
            for f in range(FILES_PER_DIR):
                n = (d * SUB_DIRS + s) * FILES_PER_DIR + f
                yield f"data/d{d:02d}/s{s:02d}/f{n:04d}.bin"


def small_size(seed: int, path: str, generation: int) -> int:
    return random.Random(f"{seed}:size:{generation}:{path}").randint(1024, 16 * 1024)


class LayerWriter:
    """A tar with fixed headers: root-owned, one mtime, entries in the order added."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self._tar = tar
        self._dirs: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.size = size
        info.mtime = MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def dir(self, name: str, mode: int = 0o755) -> None:
        parent = name.rpartition("/")[0]
        if parent and parent not in self._dirs:
            self.dir(parent)
        if name not in self._dirs:
            self._dirs.add(name)
            self._tar.addfile(self._info(name + "/", tarfile.DIRTYPE, mode))

    def file(self, name: str, data: io.IOBase, size: int, mode: int = 0o644) -> None:
        parent = name.rpartition("/")[0]
        if parent:
            self.dir(parent)
        self._tar.addfile(self._info(name, tarfile.REGTYPE, mode, size), cast(BinaryIO, data))

    def random_file(self, name: str, seed: str, size: int) -> None:
        self.file(name, RandomReader(seed, size), size)

    def text(self, name: str, text: str, mode: int = 0o644) -> None:
        data = text.encode()
        self.file(name, io.BytesIO(data), len(data), mode)

    def whiteout(self, name: str) -> None:
        parent, _, base = name.rpartition("/")
        if parent:
            self.dir(parent)
        self._tar.addfile(self._info(f"{parent}/.wh.{base}".lstrip("/"), tarfile.REGTYPE, 0o600))


def layer_tar(path: Path) -> tarfile.TarFile:
    return tarfile.open(path, "w", format=tarfile.GNU_FORMAT)


def write_layer1(path: Path, seed: int) -> None:
    with layer_tar(path) as tar:
        _layer1(LayerWriter(tar), seed)


def _layer1(w: LayerWriter, seed: int) -> None:
    w.dir("etc")
    w.text("etc/bench-release", f"benchimage layer 1, seed {seed}\n")
    w.dir("tmp", 0o1777)
    for name in small_files():
        w.random_file(name, f"{seed}:1:{name}", small_size(seed, name, 1))
    for i in range(LARGE_FILES):
        name = f"large/blob{i}.bin"
        w.random_file(name, f"{seed}:1:{name}", LARGE_SIZE)


def write_layer2(path: Path, seed: int) -> None:
    files = list(small_files())
    deleted_dir = [f for f in files if f.startswith(DELETED_DIR + "/")]
    rest = [f for f in files if f not in deleted_dir]
    rng = random.Random(f"{seed}:layer2")
    picked = rng.sample(rest, MODIFIED + DELETED)
    modified, deleted = sorted(picked[:MODIFIED]), sorted(picked[MODIFIED:])

    with layer_tar(path) as tar:
        _layer2(LayerWriter(tar), seed, modified, deleted)


def _layer2(w: LayerWriter, seed: int, modified: list[str], deleted: list[str]) -> None:
    w.dir("etc")
    w.text("etc/bench-release", f"benchimage layer 2, seed {seed}\n")
    # One pass in name order, the way a diff of two trees comes out.
    changes: list[tuple[str, str]] = [(f, "modify") for f in modified]
    changes += [(f, "delete") for f in deleted]
    changes.append((DELETED_DIR, "delete"))
    changes += [(f"added/a{i // 10:02d}/n{i:04d}.bin", "add") for i in range(ADDED)]
    changes.append(("large/blob1.bin", "large"))
    for name, what in sorted(changes):
        if what == "delete":
            w.whiteout(name)
        elif what == "large":
            w.random_file(name, f"{seed}:2:{name}", LARGE_SIZE)
        else:
            w.random_file(name, f"{seed}:2:{name}", small_size(seed, name, 2))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine
    )


def dumps(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_image(out: Path, layers: list[Path], seed: int) -> str:
    diff_ids = [sha256_file(p) for p in layers]
    config = {
        "architecture": host_arch(),
        "os": "linux",
        "created": CREATED,
        "config": {
            "Cmd": ["/bin/sh"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": [
            {"created": CREATED, "created_by": f"mkbenchimage.py seed {seed}: layer 1"},
            {"created": CREATED, "created_by": f"mkbenchimage.py seed {seed}: layer 2"},
        ],
    }
    config_bytes = dumps(config)
    config_id = hashlib.sha256(config_bytes).hexdigest()

    # v1-style layer directories, as `docker save` writes them: the id chains over the diff ids.
    layer_ids: list[str] = []
    parent = ""
    for diff_id in diff_ids:
        layer_ids.append(hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest())
        parent = layer_ids[-1]

    repo, _, tag = TAG.partition(":")
    manifest = [
        {
            "Config": f"{config_id}.json",
            "RepoTags": [TAG],
            "Layers": [f"{lid}/layer.tar" for lid in layer_ids],
        }
    ]
    entries: list[tuple[str, bytes | Path]] = [
        (f"{config_id}.json", config_bytes),
        ("manifest.json", dumps(manifest)),
        ("repositories", dumps({repo: {tag: layer_ids[-1]}})),
    ]
    for i, (lid, layer) in enumerate(zip(layer_ids, layers, strict=True)):
        v1 = {"id": lid, "created": CREATED, "os": "linux"}
        if i:
            v1["parent"] = layer_ids[i - 1]
        entries += [(f"{lid}/VERSION", b"1.0"), (f"{lid}/json", dumps(v1))]
        entries.append((f"{lid}/layer.tar", layer))

    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for lid in sorted(layer_ids):
            info = tarfile.TarInfo(lid + "/")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tar.addfile(info)
        for name, content in sorted(entries, key=lambda e: e[0]):
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = 0o644, MTIME
            if isinstance(content, Path):
                info.size = content.stat().st_size
                with content.open("rb") as f:
                    tar.addfile(info, f)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return config_id


def mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:8.1f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--seed", type=int, default=1, help="PRNG seed (default 1)")
    args = parser.parse_args(argv)
    out: Path = args.outdir
    out.mkdir(parents=True, exist_ok=True)

    # Write under temporary names and rename at the end: an interrupted run leaves no
    # half-written file that a later run would take for a finished one.
    tmp = {n: out / f".{n}.tmp{os.getpid()}" for n in ("layer1", "layer2", "rootfs", "image")}
    try:
        write_layer1(tmp["layer1"], args.seed)
        write_layer2(tmp["layer2"], args.seed)
        shutil.copyfile(tmp["layer1"], tmp["rootfs"])
        config_id = write_image(tmp["image"], [tmp["layer1"], tmp["layer2"]], args.seed)
        for name, path in tmp.items():
            path.rename(out / f"{name}.tar")
    finally:
        for path in tmp.values():
            path.unlink(missing_ok=True)

    for name in ("rootfs", "layer1", "layer2", "image"):
        print(f"{mb(out / f'{name}.tar')}  {out / f'{name}.tar'}")
    print(f"image {TAG}: config sha256:{config_id}, {host_arch()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
