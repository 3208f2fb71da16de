"""The image store: image configs, their layer chains, parents, tags and digests in the GraphDB.

Glossary: an image's *id* is ``sha256:`` of its config bytes, which are kept exactly; its
*layers* are the chain its ``rootfs.diff_ids`` name, base first; its *parent* is the image it was
built or committed from (a local edge only); a *tag* is a full reference
(``docker.io/library/busybox:latest``) pointing at one image.

An image row, its layer edges and its first tags are written in one transaction, after its layers
are ready, so an image is either wholly visible or absent.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import sqlite_utils

from engine.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from graph.db import GraphDB, Row
from graph.layers import Layer
from graph.reference import Reference, familiar_name, parse, with_default_tag

_HEX: Final = re.compile(r"(sha256:)?([a-f0-9]{1,64})")


class ImageNotFound(NotFound):
    """No image matches the reference or id."""


@dataclass(frozen=True, slots=True)
class Image:
    """One stored image."""

    id: str
    parent: str
    config: bytes
    created: str
    size: int
    layers: tuple[str, ...]  # layer driver ids, base first
    tags: tuple[str, ...]
    digests: tuple[str, ...]
    added: float

    @property
    def short_id(self) -> str:
        """The first 12 hex digits of the id, as Docker shows it."""
        return self.id.removeprefix("sha256:")[:12]

    def json(self) -> dict[str, object]:
        """The config, decoded."""
        value = json.loads(self.config)
        assert isinstance(value, dict)
        return value


def image_id(config: bytes) -> str:
    """The id of an image with *config*: sha256 of the bytes."""
    return "sha256:" + hashlib.sha256(config).hexdigest()


def diff_ids_of(config: bytes) -> list[str]:
    """Return the config's ``rootfs.diff_ids``; InvalidArgument if it is no image config."""
    try:
        value = json.loads(config)
        rootfs = value["rootfs"]
        ids = rootfs["diff_ids"]
        if rootfs.get("type") != "layers" or not isinstance(ids, list):
            raise TypeError
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InvalidArgument("config: not an image config with rootfs.diff_ids") from None
    return [str(i) for i in ids]


class ImageStore:
    """Images by id, reference or short id."""

    def __init__(self, db: GraphDB) -> None:
        self.db = db
        # Images on their top layers, for ``heads``: read once, then kept current by every change
        # here (all writes to images and tags go through this store): top → {image: [tags]}.
        self._lock = threading.Lock()
        self._tops: dict[str, dict[str, tuple[str, ...]]] | None = None
        self._top_of: dict[str, str] = {}
        self._heads: dict[str, list[tuple[str, tuple[str, ...]]]] | None = None

    def add(
        self, config: bytes, chain: list[Layer], parent: str = "", names: Sequence[Reference] = ()
    ) -> Image:
        """Store an image whose layers are *chain* (base first), named by *names* (tags and
        ``name@digest`` references) in the same transaction; return it (existing or new)."""
        id = image_id(config)
        diff_ids = diff_ids_of(config)
        if diff_ids != [layer.diff_id for layer in chain]:
            raise InvalidArgument(f"config: rootfs.diff_ids of {id} do not match its layers")
        try:
            self.get(id)
        except ImageNotFound:
            pass
        else:
            self.name(id, names)
            return self.get(id)
        created = json.loads(config).get("created") or ""
        with self.db.write() as tx:
            try:
                tx.table("images").insert(
                    {
                        "id": id,
                        "parent": parent or None,
                        "top_layer": chain[-1].id if chain else None,
                        "config": config,
                        "created": str(created),
                        "size": sum(layer.size for layer in chain),
                        "added": time.time(),
                    }
                )
            except AlreadyExists:
                new = False
            else:
                new = True
                tx.table("image_layers").insert_all(
                    {"image_id": id, "position": i, "layer_id": layer.id}
                    for i, layer in enumerate(chain)
                )
                moved = _write_names(tx, id, names)
        if not new:
            self.name(id, names)
            return self.get(id)
        self._cached(id, top=chain[-1].id if chain else "")
        self._names_cached(id, moved)
        return self.get(id)

    def name(self, id: str, names: Sequence[Reference]) -> None:
        """Point every tag and ``name@digest`` reference in *names* at image *id*, at once."""
        if not names:
            return
        with self.db.write() as tx:
            moved = _write_names(tx, id, names)
        self._names_cached(id, moved)

    def _names_cached(self, id: str, moved: list[tuple[str, str | None]]) -> None:
        for name, old in moved:
            if old and old != id:
                self._cached(old, untag=familiar_name(name))
            if old != id:
                self._cached(id, tag=familiar_name(name))

    def get(self, id: str) -> Image:
        """Return the image with full id *id*; ImageNotFound if absent."""
        rows = self.db.query("SELECT * FROM images WHERE id = ?", (id,))
        if not rows:
            raise ImageNotFound(f"No such image: {id}")
        return self._image(rows[0])

    def resolve(self, text: str) -> Image:
        """Find an image by reference, full id or unambiguous id prefix; ImageNotFound if none."""
        match = _HEX.fullmatch(text)
        if match and (match[1] or len(match[2]) == 64):
            return self.get("sha256:" + match[2]) if len(match[2]) == 64 else self._prefix(match[2])
        try:
            ref = with_default_tag(parse(text))
        except InvalidArgument:
            if match:
                return self._prefix(match[2])
            raise
        rows = self.db.query(
            "SELECT image_id FROM tags WHERE name = ?1 UNION ALL"
            " SELECT image_id FROM digests WHERE name = ?1",
            (str(ref),),
        )
        if rows:
            return self.get(rows[0]["image_id"])
        if match:  # a short hex string that is no tag: an id prefix
            return self._prefix(match[2])
        raise ImageNotFound(f"No such image: {ref.familiar}")

    def _prefix(self, prefix: str) -> Image:
        rows = self.db.query(
            "SELECT id FROM images WHERE id >= ?1 AND id < ?1 || 'g' LIMIT 2",
            (f"sha256:{prefix}",),
        )
        if not rows:
            raise ImageNotFound(f"No such image: {prefix}")
        if len(rows) > 1:
            raise InvalidArgument(f"id prefix {prefix} matches more than one image")
        return self.get(rows[0]["id"])

    def all(self) -> list[Image]:
        """Return every image, newest first (in four queries, whatever the number of images)."""
        rows = self.db.query("SELECT * FROM images ORDER BY added DESC, id")
        layers = self._grouped("SELECT image_id, layer_id AS v FROM image_layers ORDER BY position")
        tags = self._grouped("SELECT image_id, name AS v FROM tags ORDER BY added, name")
        digests = self._grouped("SELECT image_id, name AS v FROM digests ORDER BY name")
        return [
            _image(r, layers.get(r["id"], ()), tags.get(r["id"], ()), digests.get(r["id"], ()))
            for r in rows
        ]

    def _grouped(self, sql: str) -> dict[str, tuple[str, ...]]:
        groups: dict[str, list[str]] = {}
        for row in self.db.query(sql):
            groups.setdefault(row["image_id"], []).append(row["v"])
        return {k: tuple(v) for k, v in groups.items()}

    def tag(self, id: str, ref: Reference) -> str | None:
        """Point tag *ref* at image *id*; return the image it pointed at before, if another."""
        name = str(with_default_tag(ref))
        if ref.digest:
            raise InvalidArgument(f"tag: {name}: a tag cannot contain a digest")
        with self.db.write() as tx:
            old = tx.execute("SELECT image_id FROM tags WHERE name = ?", (name,)).fetchone()
            if old and old[0] == id:
                return None  # already so
            tx.execute(
                "INSERT INTO tags (name, image_id, added) VALUES (?, ?, ?) ON CONFLICT (name)"
                " DO UPDATE SET image_id = excluded.image_id, added = excluded.added",
                (name, id, time.time()),
            )
        if old:
            self._cached(old[0], untag=familiar_name(name))
        self._cached(id, tag=familiar_name(name))
        return old[0] if old else None

    def untag(self, ref: Reference) -> str:
        """Remove tag (or digest reference) *ref*; return the image it pointed at."""
        name = str(ref if ref.digest else with_default_tag(ref))
        table = "digests" if ref.digest else "tags"
        with self.db.write() as tx:
            row = tx.execute(f"SELECT image_id FROM {table} WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise ImageNotFound(f"No such image: {ref.familiar}")
            tx.execute(f"DELETE FROM {table} WHERE name = ?", (name,))
        if table == "tags":
            self._cached(row[0], untag=familiar_name(name))
        return str(row[0])

    def children(self, id: str) -> list[str]:
        """Return the ids of images whose parent is *id*."""
        return [r["id"] for r in self.db.query("SELECT id FROM images WHERE parent = ?", (id,))]

    def ancestors(self, id: str) -> list[str]:
        """Return *id*'s parent, its parent, and so on (nearest first)."""
        rows = self.db.query(
            "WITH RECURSIVE up(id, depth) AS (SELECT parent, 1 FROM images WHERE id = ?"
            " UNION ALL SELECT i.parent, up.depth + 1 FROM images i JOIN up ON i.id = up.id"
            " WHERE i.parent IS NOT NULL AND up.depth < 10000)"
            " SELECT id FROM up WHERE id IS NOT NULL ORDER BY depth",
            (id,),
        )
        return [r["id"] for r in rows]

    def descendants(self, id: str) -> list[str]:
        """Return the images built on *id*, their children, and so on (nearest first)."""
        rows = self.db.query(
            "WITH RECURSIVE down(id, depth) AS (SELECT id, 1 FROM images WHERE parent = ?"
            " UNION ALL SELECT i.id, down.depth + 1 FROM images i JOIN down ON i.parent = down.id"
            " WHERE down.depth < 10000)"
            " SELECT id FROM down ORDER BY depth, id",
            (id,),
        )
        return [r["id"] for r in rows]

    def refuse_if_parent(self, id: str) -> None:
        """Raise FailedPrecondition, naming them, if other images build on image *id*."""
        kids = self.children(id)
        if kids:
            names = ", ".join(k.removeprefix("sha256:")[:12] for k in kids)
            raise FailedPrecondition(
                f"conflict: unable to delete {id.removeprefix('sha256:')[:12]} "
                f"(cannot be forced) - image has dependent child images: {names}"
            )

    def delete(self, id: str) -> list[str]:
        """Delete image *id* with its tags; return its layer ids (for the layer store to release).

        FailedPrecondition if other images build on it.
        """
        with self.db.write() as tx:
            self.refuse_if_parent(id)  # inside the transaction: no child can appear meanwhile
            layers = tx.execute(
                "SELECT layer_id FROM image_layers WHERE image_id = ? ORDER BY position", (id,)
            ).fetchall()
            if tx.execute("DELETE FROM images WHERE id = ?", (id,)).rowcount == 0:
                raise ImageNotFound(f"No such image: {id}")
        self._cached(id, gone=True)
        return [row[0] for row in layers]

    def heads(self) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
        """Return, per top layer id, the images (id, familiar tags) whose top it is."""
        with self._lock:
            if self._heads is None:
                self._heads = {top: list(images.items()) for top, images in self._graph().items()}
            return self._heads

    def _graph(self) -> dict[str, dict[str, tuple[str, ...]]]:
        if self._tops is None:
            tops: dict[str, dict[str, tuple[str, ...]]] = {}
            rows = self.db.rows(
                "SELECT i.id, i.top_layer, t.name FROM images i"
                " LEFT JOIN tags t ON t.image_id = i.id ORDER BY i.added, i.id, t.added, t.name"
            )
            for image, top, tag in rows:
                images = tops.setdefault(top or "", {})
                images[image] = images.get(image, ()) + ((familiar_name(tag),) if tag else ())
                self._top_of[image] = top or ""
            self._tops = tops
        return self._tops

    def _cached(
        self,
        image: str,
        *,
        top: str | None = None,
        tag: str = "",
        untag: str = "",
        gone: bool = False,
    ) -> None:
        """Record a committed change of *image* in the cached graph, if it has been read."""
        with self._lock:
            self._heads = None
            if self._tops is None:
                return
            if top is not None:  # a new image
                self._top_of[image] = top
                self._tops.setdefault(top, {})[image] = ()
                return
            owner = self._top_of.get(image)
            if owner is None:
                return
            if gone:
                self._tops[owner].pop(image, None)
                if not self._tops[owner]:
                    del self._tops[owner]
                del self._top_of[image]
                return
            tags = tuple(t for t in self._tops[owner].get(image, ()) if t != untag)
            self._tops[owner][image] = (*tags, tag) if tag else tags

    def count(self) -> int:
        """Return how many images are stored."""
        return int(self.db.query("SELECT COUNT(*) AS n FROM images")[0]["n"])

    def _image(self, row: Row) -> Image:
        id = row["id"]
        layers = self.db.query(
            "SELECT layer_id FROM image_layers WHERE image_id = ? ORDER BY position", (id,)
        )
        tags = self.db.query("SELECT name FROM tags WHERE image_id = ? ORDER BY added, name", (id,))
        digests = self.db.query("SELECT name FROM digests WHERE image_id = ? ORDER BY name", (id,))
        return _image(
            row,
            tuple(r["layer_id"] for r in layers),
            tuple(r["name"] for r in tags),
            tuple(r["name"] for r in digests),
        )


def _write_names(
    tx: sqlite_utils.Database, id: str, names: Sequence[Reference]
) -> list[tuple[str, str | None]]:
    """Upsert tags and digest references in *tx*; return (tag name, image it left) per tag."""
    moved: list[tuple[str, str | None]] = []
    for ref in names:
        table = "digests" if ref.digest else "tags"
        name = str(ref if ref.digest else with_default_tag(ref))
        old = tx.execute(f"SELECT image_id FROM {table} WHERE name = ?", (name,)).fetchone()
        tx.execute(
            f"INSERT INTO {table} (name, image_id, added) VALUES (?, ?, ?) ON CONFLICT (name)"
            " DO UPDATE SET image_id = excluded.image_id, added = excluded.added",
            (name, id, time.time()),
        )
        if table == "tags":
            moved.append((name, old[0] if old else None))
    return moved


def _image(
    row: Row, layers: tuple[str, ...], tags: tuple[str, ...], digests: tuple[str, ...]
) -> Image:
    return Image(
        id=row["id"],
        parent=row["parent"] or "",
        config=bytes(row["config"]),
        created=row["created"],
        size=row["size"],
        layers=layers,
        tags=tags,
        digests=digests,
        added=row["added"],
    )
