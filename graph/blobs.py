"""Compressed layer blobs: which registry has which, and the push cache of gzip blobs.

Glossary: a layer's *diff_id* names its uncompressed tar; a *blob* is one compressed form of
it, named by its own digest and media type. The same layer may have several blobs (gzip from
one registry, zstd from another, our own gzip). ``layer_blobs`` records, per blob, the
registries and repositories known to hold it (from a pull or a push), and whether the daemon's
own cache holds it (registry '').

The cache keeps the gzip blobs push made (``blobs/sha256/<hex>``, read-only, named by their
digest), so a second push of the same layer neither compresses nor hashes again. A cache file
is written to a temp name, fsynced and renamed before its row says it is there.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from graph.db import GraphDB


@dataclass(frozen=True, slots=True)
class BlobRecord:
    """A compressed blob of a layer, and one place known to hold it ('' = our cache)."""

    diff_id: str
    digest: str
    media_type: str
    size: int
    registry: str
    repository: str


class BlobStore:
    """The ``layer_blobs`` table and the cache directory of compressed blobs."""

    def __init__(self, db: GraphDB, root: Path) -> None:
        self.db, self.root = db, root

    def path(self, digest: str) -> Path:
        """Where the cached blob *digest* (``sha256:…``, already checked) is kept."""
        return self.root / "sha256" / digest.removeprefix("sha256:")

    def known(self, diff_id: str, registry: str) -> list[BlobRecord]:
        """The blobs of layer *diff_id* known on *registry* ('' = cached here), newest first."""
        rows = self.db.query(
            "SELECT * FROM layer_blobs WHERE diff_id = ? AND registry = ? ORDER BY added DESC",
            (diff_id, registry),
        )
        return [_record(r) for r in rows]

    def cached(self, diff_id: str) -> BlobRecord | None:
        """The cached gzip blob of layer *diff_id*, if its file is still there."""
        for record in self.known(diff_id, ""):
            if self.path(record.digest).is_file():
                return record
        return None

    def remember(self, record: BlobRecord) -> None:
        """Record that *record.registry*/*record.repository* holds the blob."""
        with self.db.write() as tx:
            tx.execute(
                "INSERT INTO layer_blobs (diff_id, digest, media_type, size, registry, repository,"
                " added) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO UPDATE SET added = excluded.added",
                (record.diff_id, record.digest, record.media_type, record.size, record.registry,
                 record.repository, time.time()),
            )  # fmt: skip

    def forget(self, digest: str, registry: str, repository: str) -> None:
        """Drop the hint that *registry*/*repository* holds blob *digest* (it did not)."""
        with self.db.write() as tx:
            tx.execute(
                "DELETE FROM layer_blobs WHERE digest = ? AND registry = ? AND repository = ?",
                (digest, registry, repository),
            )

    def keep(self, staged: Path, record: BlobRecord) -> None:
        """Move the finished blob file *staged* into the cache as *record* (registry '')."""
        target = self.path(record.digest)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(staged, 0o444)
        fd = os.open(staged, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(staged, target)
        self.remember(record)

    def prune(self, live_diff_ids: set[str]) -> int:
        """Remove cached blobs and hints of layers no longer stored; return how many files."""
        rows = self.db.query("SELECT DISTINCT diff_id FROM layer_blobs")
        gone = [r["diff_id"] for r in rows if r["diff_id"] not in live_diff_ids]
        removed = 0
        for diff_id in gone:
            for record in self.known(diff_id, ""):
                with contextlib.suppress(FileNotFoundError):
                    self.path(record.digest).unlink()
                    removed += 1
            with self.db.write() as tx:
                tx.execute("DELETE FROM layer_blobs WHERE diff_id = ?", (diff_id,))
        return removed


def _record(row: dict[str, object]) -> BlobRecord:
    return BlobRecord(
        str(row["diff_id"]),
        str(row["digest"]),
        str(row["media_type"]),
        int(str(row["size"])),
        str(row["registry"]),
        str(row["repository"]),
    )
