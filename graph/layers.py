"""The layer store: content-addressed layers kept by the graph driver, recorded in the GraphDB.

Glossary: a layer's *diff_id* is the sha256 of its uncompressed tar; its *chain_id* identifies the
layer together with everything below it (OCI image spec: the base layer's chain_id is its diff_id,
then ``sha256(parent_chain_id + " " + diff_id)``); its *id* is the graph driver's directory name,
random and fixed from the start. The same chain is stored once.

Lifecycle: ``register`` records the layer as ``creating`` before any file exists, applies the tar
through the driver, and marks it ``ready`` with its chain id only when the files are complete, so
a crash leaves a row that ``recover`` removes at the next start (with the files). ``release``
removes layers that no image uses and no layer builds on, top down.

Each layer's uncompressed tar is kept beside its files (``<tars>/<id>.tar``): ``save`` and
``push`` must hand out exactly the bytes the diff_id names, and a tar rebuilt from the files
would differ in order and headers.

Durability: a layer's tar is written to a temp name, fsynced and renamed (a blob ``load``
already wrote is fsynced while the layer is extracted, then linked), before the row says
``ready``; rows are durable at commit (SQLite, ``synchronous=FULL``). The extracted files are
each written to a temp name and renamed, but not fsynced one by one (as in Docker: thousands of
fsyncs would cost more than the layer). ``save`` re-hashes every layer against its diff_id, so
damage after a power loss is an error, never other bytes handed out.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


from drivers.graph import Differ, GraphDriver, NaiveDiffer
from engine.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from graph.archive import AppliedLayer
from graph.archive.compression import Readable, decompressed, is_compressed
from graph.archive.writer import BackgroundWriter
from graph.db import GraphDB, Row

log = logging.getLogger(__name__)


class DiffIdMismatch(InvalidArgument):
    """A layer's tar is not the diff_id it was given as."""


@dataclass(frozen=True, slots=True)
class Layer:
    """A ready layer: driver id, chain id, diff id, parent driver id ("" for a base), size."""

    id: str
    chain_id: str
    diff_id: str
    parent: str
    size: int


def chain_id(parent_chain: str, diff_id: str) -> str:
    """The OCI chain id of *diff_id* on top of *parent_chain* ("" for a base layer)."""
    if not parent_chain:
        return diff_id
    return "sha256:" + hashlib.sha256(f"{parent_chain} {diff_id}".encode()).hexdigest()


class LayerStore:
    """Layers by chain id, stored once, made visible only when complete."""

    def __init__(self, db: GraphDB, driver: GraphDriver, tars: Path) -> None:
        self.db, self.driver, self.tars = db, driver, tars
        self.differ: Differ = driver if isinstance(driver, Differ) else NaiveDiffer(driver)
        # The layer graph for ``tree``, read once and then kept current by every change here
        # (all writes to the layers table go through this store): parent → {id: (chain, size)}.
        self._lock = threading.Lock()
        self._children: dict[str | None, dict[str, tuple[str, int]]] | None = None
        self._tree: list[tuple[int, str, str, int]] | None = None
        tars.mkdir(parents=True, exist_ok=True, mode=0o700)

    def tar_path(self, id: str) -> Path:
        """Where layer *id*'s uncompressed tar is kept."""
        return self.tars / f"{id}.tar"

    def get(self, id: str) -> Layer:
        """Return the ready layer with driver id *id*; NotFound if there is none."""
        rows = self.db.query("SELECT * FROM layers WHERE id = ? AND state = 'ready'", (id,))
        if not rows:
            raise NotFound(f"no such layer: {id}")
        return _layer(rows[0])

    def by_chain(self, chain: str) -> Layer:
        """Return the ready layer with chain id *chain*; NotFound if there is none."""
        rows = self.db.query("SELECT * FROM layers WHERE chain_id = ?", (chain,))
        if not rows:
            raise NotFound(f"no such layer: {chain}")
        return _layer(rows[0])

    def all(self) -> list[Layer]:
        """Return every ready layer."""
        return [_layer(r) for r in self.db.query("SELECT * FROM layers WHERE state = 'ready'")]

    def tree(self) -> list[tuple[int, str, str, int]]:
        """Return every ready layer as (depth, id, chain id, size), depth first from the bases."""
        with self._lock:
            if self._tree is None:
                self._tree = _depth_first(self._graph())
            return self._tree

    def _graph(self) -> dict[str | None, dict[str, tuple[str, int]]]:
        if self._children is None:
            children: dict[str | None, dict[str, tuple[str, int]]] = {}
            sql = "SELECT id, parent, chain_id, size FROM layers WHERE state = 'ready'"
            for id, parent, chain, size in self.db.rows(sql):
                children.setdefault(parent, {})[id] = (chain, size)
            self._children = children
        return self._children

    def _cached(self, id: str, parent: str, entry: tuple[str, int] | None) -> None:
        """Record in the cached graph that layer *id* is now *entry* (None: gone)."""
        with self._lock:
            if self._children is not None:
                kids = self._children.setdefault(parent or None, {})
                if entry is None:
                    kids.pop(id, None)
                else:
                    kids[id] = entry
            self._tree = None

    def chain(self, top: str) -> list[Layer]:
        """Return layer *top* and every layer below it, base first."""
        rows = self.db.query(
            "WITH RECURSIVE up(id, depth) AS (SELECT ?, 0 UNION ALL"
            " SELECT l.parent, up.depth + 1 FROM layers l JOIN up ON l.id = up.id"
            " WHERE l.parent IS NOT NULL)"
            " SELECT l.* FROM up JOIN layers l ON l.id = up.id ORDER BY up.depth DESC",
            (top,),
        )
        return [_layer(r) for r in rows]

    def register(self, stream: BinaryIO, parent: str = "", diff_id: str = "") -> Layer:
        """Apply a layer tar on top of layer *parent*; InvalidArgument if it is not *diff_id*."""
        return self._register(parent, diff_id, lambda id: self._apply(id, parent, stream))

    def register_file(self, path: Path, parent: str = "", diff_id: str = "") -> Layer:
        """Like ``register`` for a layer tar already in a file on the data root's file system;
        a plain (uncompressed) tar is linked into the store instead of copied."""
        with open(path, "rb") as f:
            if is_compressed(f.read(8)):
                f.seek(0)
                return self.register(cast(BinaryIO, f), parent, diff_id)

        def apply(id: str) -> AppliedLayer:
            # The blob was just written: flush it to disk while the layer is being extracted.
            flushing = threading.Thread(target=_fsync_file, args=(path,), name="fsync")
            flushing.start()
            try:
                with open(path, "rb") as f:
                    applied = self.differ.apply_diff(id, parent, cast(BinaryIO, f))
            finally:
                flushing.join()
            try:
                os.link(path, self.tar_path(id))
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                shutil.copyfile(path, self.tar_path(id))  # another file system: copy after all
                _fsync_file(self.tar_path(id))
            _fsync_file(self.tars)
            return applied

        return self._register(parent, diff_id, apply)

    def _register(self, parent: str, diff_id: str, apply: Callable[[str], AppliedLayer]) -> Layer:
        base = self.get(parent) if parent else None
        if diff_id:
            try:  # the same content on the same parent is stored once: nothing to apply
                return self.by_chain(chain_id(base.chain_id if base else "", diff_id))
            except NotFound:
                pass
        id = secrets.token_hex(32)
        with self.db.write() as tx:
            tx.table("layers").insert(
                {"id": id, "parent": parent or None, "state": "creating", "created": time.time()}
            )
        try:
            self.driver.create(id, parent)
            applied = apply(id)
            if diff_id and applied.diff_id != diff_id:
                raise DiffIdMismatch(
                    f"layer content does not match its digest: expected {diff_id}, "
                    f"got {applied.diff_id}"
                )
            chain = chain_id(base.chain_id if base else "", applied.diff_id)
            with self.db.write() as tx:
                tx.execute(
                    "UPDATE layers SET chain_id = ?, diff_id = ?, size = ?, state = 'ready'"
                    " WHERE id = ?",
                    (chain, applied.diff_id, applied.size, id),
                )
            self._cached(id, parent, (chain, applied.size))
        except AlreadyExists:  # another registration of the same chain won the race
            self._destroy(id)
            return self.by_chain(chain)
        except BaseException as exc:
            try:
                self._destroy(id)
            except Exception as cleanup:
                exc.add_note(f"and removing the half-made layer {id} failed: {cleanup}")
            raise
        log.debug("layer %s ready (%s, %d bytes)", chain, id, applied.size)
        return self.get(id)

    def _apply(self, id: str, parent: str, stream: BinaryIO) -> AppliedLayer:
        staged = self.tars / f".{id}.tar.tmp"
        with open(staged, "wb") as copy:
            writer = BackgroundWriter(cast(BinaryIO, copy))
            try:
                tee = io.BufferedReader(_Tee(decompressed(stream), writer), 1 << 20)
                applied = self.differ.apply_diff(id, parent, cast(BinaryIO, tee))
                while tee.read(1 << 20):  # apply stops at the end-of-archive blocks; keep the rest
                    pass
            finally:
                writer.close()
            copy.flush()
            os.fsync(copy.fileno())
        os.rename(staged, self.tar_path(id))
        _fsync_file(self.tars)
        return applied

    def release(self, ids: Iterable[str]) -> list[Layer]:
        """Remove each of *ids*, and the layers below, that no image uses and no layer builds on."""
        removed: list[Layer] = []
        pending = list(ids)
        while pending:
            id = pending.pop()
            rows = self.db.query("SELECT * FROM layers WHERE id = ?", (id,))
            if not rows or self._in_use(id):
                continue
            layer = _layer(rows[0])
            self._destroy(id)
            removed.append(layer)
            if layer.parent:
                pending.append(layer.parent)
        return removed

    def recover(self) -> int:
        """Remove half-made layers and layers no image uses (at daemon start); return how many."""
        count = 0
        for row in self.db.query("SELECT id FROM layers WHERE state != 'ready'"):
            self._destroy(row["id"])
            count += 1
        unused = self.db.query(
            "SELECT id FROM layers l"
            " WHERE NOT EXISTS (SELECT 1 FROM image_layers il WHERE il.layer_id = l.id)"
            " AND NOT EXISTS (SELECT 1 FROM layers c WHERE c.parent = l.id)"
        )
        count += len(self.release(r["id"] for r in unused))
        if count:
            log.info("removed %d incomplete or unused layer(s)", count)
        return count

    def _in_use(self, id: str) -> bool:
        return bool(
            self.db.query(
                "SELECT 1 FROM image_layers WHERE layer_id = ?1"
                " UNION ALL SELECT 1 FROM layers WHERE parent = ?1 LIMIT 1",
                (id,),
            )
        )

    def _destroy(self, id: str) -> None:
        # Mark first, so a crash between removing the files and the row is finished at start-up.
        with self.db.write() as tx:
            row = tx.execute("SELECT parent FROM layers WHERE id = ?", (id,)).fetchone()
            tx.execute("UPDATE layers SET state = 'removing' WHERE id = ?", (id,))
        self._cached(id, row[0] if row else "", None)
        if self.driver.exists(id):
            try:
                self.driver.remove(id)
            except FailedPrecondition:
                log.warning("layer %s still has children in the driver; kept", id)
                raise
        for path in (self.tar_path(id), self.tars / f".{id}.tar.tmp"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with self.db.write() as tx:
            tx.execute("DELETE FROM layers WHERE id = ?", (id,))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _depth_first(
    children: dict[str | None, dict[str, tuple[str, int]]],
) -> list[tuple[int, str, str, int]]:
    def kids(parent: str | None) -> list[tuple[str, str, int]]:
        # Popped from the end: siblings come out in chain id order.
        return sorted(
            ((c, id, size) for id, (c, size) in children.get(parent, {}).items()), reverse=True
        )

    out: list[tuple[int, str, str, int]] = []
    stack = [(0, kid) for kid in kids(None)]
    while stack:
        depth, (chain, id, size) = stack.pop()
        out.append((depth, id, chain, size))
        stack.extend((depth + 1, kid) for kid in kids(id))
    return out


class _Tee(io.RawIOBase):
    """Reads from *source*, copying every byte read to *copy*."""

    def __init__(self, source: Readable, copy: BackgroundWriter) -> None:
        super().__init__()
        self._source, self._copy = source, copy

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self._source.read(len(view))
        view[: len(data)] = data
        self._copy.write(data)
        return len(data)


def _layer(row: Row) -> Layer:
    return Layer(row["id"], row["chain_id"], row["diff_id"], row["parent"] or "", row["size"])
