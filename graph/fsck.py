"""The store checker (fsck): does a data root keep the invariants every crash must preserve?

Run after a crash and a restart, or after any destructive test: ``check`` reads the GraphDB and the
files of a data root, changes nothing, and returns each broken invariant as a ``Problem``
(code, subject, detail). An empty list means a sound store. The invariants:

- I1 the GraphDB is sound: ``PRAGMA integrity_check`` says ``ok``, ``foreign_key_check`` is empty.
- I2 images are what their ids say: the config bytes hash to the image id; ``rootfs.diff_ids``
  equal the diff_ids of the image's layer chain, in order; every layer of the chain exists, is
  ready and builds on the one before; every ready layer's chain id recomputes from the diff_ids;
  every tag and digest points at an image. Deep: every layer tar hashes to its diff_id.
- I3 layer rows and files match: every ready row has its driver layer and its tar; every driver
  layer (but containers' own ``<id>`` and ``<id>-init``) and every tar has a row; no row is
  ``creating`` or ``removing``; no staged ``.<id>.tar.tmp``; when idle, nothing under ``tmp/``.
- I4 (light) containers: each one's image and directory exist, it has exactly one name, and every
  name at the root names a container.
- I6 cached blobs (``blobs/sha256/<hex>``) are read-only regular files named by a digest; deep:
  they hash to their names; when idle, no staged (dot) files among them.

Subjects are ids for rows (image id, layer id, container id, tag) and paths for files. With
``idle=False`` (a daemon is running) ``tmp/`` and staged blobs are not looked at. To keep work that
finishes meanwhile from looking stray, the driver's layers and the tars are listed before the rows
are read (in one transaction), and strays are listed again before they are reported; work still
under way (a ``creating`` layer, its staged tar) is reported, so check a quiet daemon.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from drivers.graph import GraphDriver
from drivers.graph.base import ID_PATTERN, Lister
from engine.errors import InvalidArgument
from graph.db import GraphDB, Row
from graph.images import diff_ids_of, image_id
from graph.layers import LayerStore, chain_id

HEX64: Final = re.compile(r"[a-f0-9]{64}")
# Where each built-in driver keeps its layer directories, relative to its home.


@dataclass(frozen=True)
class Problem:
    """One broken invariant: its code ("I2"), what is broken (an id or a path), and how."""

    code: str
    subject: str
    detail: str


@dataclass(frozen=True)
class _Rows:
    """The rows the checks need, read in one transaction."""

    layers: dict[str, Row]
    images: list[Row]
    chains: dict[str, list[tuple[int, str]]]  # image id → (position, layer id), by position
    refs: list[Row]  # tags and digests: kind, name, image_id
    containers: list[Row]
    names: list[Row]  # the root edges: name, entity_id


def check(
    db: GraphDB, layers: LayerStore, data_root: Path, *, deep: bool = False, idle: bool = True
) -> list[Problem]:
    """Check the store at *data_root*; return the problems found (deep: re-hash the content)."""
    listed, tars = driver_layers(layers.driver), _names(layers.tars)  # files first
    problems = list(_database(db))
    try:
        rows = _read(db)
    except sqlite3.DatabaseError as exc:
        return [*problems, Problem("I1", str(db.path), f"cannot read the tables: {exc}")]
    problems += _images(rows)
    problems += _layers(rows, layers, deep)
    problems += _strays(rows, layers, listed, tars)
    if idle:
        problems += (Problem("I3", str(p), "left in tmp/") for p in _entries(data_root / "tmp"))
    problems += _containers(rows, data_root / "containers")
    problems += _blobs(data_root / "blobs" / "sha256", deep=deep, idle=idle)
    return problems


def driver_layers(driver: GraphDriver) -> set[str] | None:
    """The layer ids *driver* keeps on disk; None if it cannot list them."""
    return driver.ids() if isinstance(driver, Lister) else None


def _database(db: GraphDB) -> Iterator[Problem]:
    """I1."""
    result = [str(row[0]) for row in db.rows("PRAGMA integrity_check")]
    if result != ["ok"]:
        yield from (Problem("I1", str(db.path), f"integrity_check: {line}") for line in result)
    for table, rowid, parent, _ in db.rows("PRAGMA foreign_key_check"):
        yield Problem("I1", f"{table}:{rowid}", f"references a missing row of {parent}")


def _read(db: GraphDB) -> _Rows:
    # A write transaction only for its consistent view: it holds writers off for a few reads.
    with db.write():
        chains: dict[str, list[tuple[int, str]]] = {}
        for image, position, layer in db.rows(
            "SELECT image_id, position, layer_id FROM image_layers ORDER BY image_id, position"
        ):
            chains.setdefault(image, []).append((position, layer))
        return _Rows(
            layers={r["id"]: r for r in db.query("SELECT * FROM layers ORDER BY id")},
            images=db.query("SELECT id, top_layer, config FROM images ORDER BY id"),
            chains=chains,
            refs=db.query(
                "SELECT 'tag' AS kind, name, image_id FROM tags UNION ALL"
                " SELECT 'digest', name, image_id FROM digests ORDER BY name"
            ),
            containers=db.query("SELECT id, image_id FROM containers ORDER BY id"),
            names=db.query("SELECT name, entity_id FROM edge WHERE parent_id = '0' ORDER BY name"),
        )


def _images(rows: _Rows) -> Iterator[Problem]:
    """I2 for every image, tag and digest."""
    for image in rows.images:
        id, config = image["id"], bytes(image["config"])
        if image_id(config) != id:
            yield Problem("I2", id, f"config bytes hash to {image_id(config)}")
        chain = rows.chains.get(id, [])
        if [position for position, _ in chain] != list(range(len(chain))):
            yield Problem("I2", id, "its layer positions are not 0, 1, 2, ...")
        ids = [layer for _, layer in chain]
        yield from _chain(rows, id, ids)
        if image["top_layer"] != (ids[-1] if ids else None):
            yield Problem("I2", id, f"top layer {image['top_layer']} is not the chain's last")
        try:
            wanted = diff_ids_of(config)
        except InvalidArgument:
            yield Problem("I2", id, "config has no rootfs.diff_ids")
            continue
        have = [rows.layers[i]["diff_id"] if i in rows.layers else None for i in ids]
        if len(wanted) != len(have):
            yield Problem("I2", id, f"rootfs.diff_ids name {len(wanted)}, its chain {len(have)}")
        elif wanted != have:
            i = next(i for i, (w, h) in enumerate(zip(wanted, have, strict=True)) if w != h)
            yield Problem("I2", id, f"rootfs.diff_ids[{i}] is {wanted[i]}, its layer has {have[i]}")
    images = {image["id"] for image in rows.images}
    for ref in rows.refs:
        if ref["image_id"] not in images:
            yield Problem("I2", ref["name"], f"{ref['kind']} of missing image {ref['image_id']}")


def _chain(rows: _Rows, image: str, ids: list[str]) -> Iterator[Problem]:
    """I2: each layer of *image* exists, is ready and builds on the one before."""
    below = None
    for i, id in enumerate(ids):
        layer = rows.layers.get(id)
        if layer is None:
            yield Problem("I2", image, f"layer {id} at position {i} does not exist")
        elif layer["state"] != "ready":
            yield Problem("I2", image, f"layer {id} at position {i} is {layer['state']}")
        elif layer["parent"] != below:
            was, want = layer["parent"] or "nothing", below or "nothing"
            yield Problem("I2", image, f"layer {id} at position {i} builds on {was}, not {want}")
        below = id


def _layers(rows: _Rows, store: LayerStore, deep: bool) -> Iterator[Problem]:
    """I2 (chain ids, deep: tar hashes) and I3 (states, files) of every layer row."""
    for id, layer in rows.layers.items():
        if layer["state"] != "ready":
            yield Problem("I3", id, f"layer row left in state {layer['state']}")
            continue
        diff_id, parent = layer["diff_id"], rows.layers.get(layer["parent"] or "")
        if not diff_id or not layer["chain_id"]:
            yield Problem("I2", id, "ready layer without diff_id or chain_id")
        elif parent or not layer["parent"]:  # a missing parent is I1's
            expected = chain_id(parent["chain_id"] if parent else "", diff_id)
            if layer["chain_id"] != expected:
                yield Problem("I2", id, f"chain id {layer['chain_id']} is not {expected}")
        if not ID_PATTERN.fullmatch(id):
            yield Problem("I3", id, "not a valid layer id")
            continue
        if not store.driver.exists(id):
            yield Problem("I3", id, f"the {store.driver.name} driver has no such layer")
        tar = store.tar_path(id)
        if not tar.is_file():
            yield Problem("I3", id, f"its tar {tar} is missing")
        elif deep and (digest := _sha256(tar)) is not None and f"sha256:{digest}" != diff_id:
            yield Problem("I2", id, f"its tar hashes to sha256:{digest}, not to its diff_id")


def _strays(
    rows: _Rows, store: LayerStore, listed: set[str] | None, tars: list[str]
) -> Iterator[Problem]:
    """I3: driver layers and tars without a row; staged tars."""
    owners = {container["id"] for container in rows.containers}
    if listed is not None:
        still = driver_layers(store.driver) or set()
        for id in sorted((listed - rows.layers.keys()) & still):
            if id.removesuffix("-init") not in owners:
                what = f"the {store.driver.name} driver keeps it; no layer row or container does"
                yield Problem("I3", id, what)
    for name in tars:
        path = store.tars / name
        if name.startswith(".") and name.endswith(".tar.tmp"):
            if path.exists():
                yield Problem("I3", str(path), "a staged layer tar was left behind")
        elif name.removesuffix(".tar") not in rows.layers and os.path.lexists(path):
            yield Problem("I3", str(path), "no layer row accounts for this file")


def _containers(rows: _Rows, root: Path) -> Iterator[Problem]:
    """I4 (light): images, directories and names of containers."""
    images = {image["id"] for image in rows.images}
    names: dict[str, list[str]] = {}
    for edge in rows.names:
        names.setdefault(edge["entity_id"], []).append("/" + edge["name"])
    for container in rows.containers:
        id = container["id"]
        if container["image_id"] not in images:
            yield Problem("I4", id, f"its image {container['image_id']} does not exist")
        if not HEX64.fullmatch(id):
            yield Problem("I4", id, "not a valid container id")
        elif not (root / id).is_dir():
            yield Problem("I4", id, f"its directory {root / id} is missing")
        own = names.pop(id, [])
        if len(own) != 1:
            yield Problem("I4", id, f"has {len(own)} names ({', '.join(own)}), not one")
    for entity, paths in sorted(names.items()):
        yield from (Problem("I4", path, f"names {entity}, which is no container") for path in paths)


def _blobs(directory: Path, *, deep: bool, idle: bool) -> Iterator[Problem]:
    """I6: blobs are read-only regular files named by their sha256."""
    for path in _entries(directory):
        if path.name.startswith("."):
            if idle:
                yield Problem("I6", str(path), "a staged blob was left behind")
            continue
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue  # removed meanwhile
        if not stat.S_ISREG(mode):
            yield Problem("I6", str(path), "not a regular file")
        elif not HEX64.fullmatch(path.name):
            yield Problem("I6", str(path), "not named by a sha256 digest")
        else:
            if mode & 0o222:
                yield Problem("I6", str(path), f"writable (mode {stat.S_IMODE(mode):o})")
            if deep and (digest := _sha256(path)) not in (None, path.name):
                yield Problem("I6", str(path), f"content hashes to sha256:{digest}")


def _names(directory: Path) -> list[str]:
    """The entries of *directory*, sorted; none if it does not exist."""
    try:
        return sorted(os.listdir(directory))
    except FileNotFoundError:
        return []


def _entries(directory: Path) -> list[Path]:
    return [directory / name for name in _names(directory)]


def _sha256(path: Path) -> str | None:
    """The hex sha256 of the file at *path*; None if it was removed meanwhile."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()
