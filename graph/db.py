"""GraphDB: the daemon's one SQLite file (``graph.db`` in the data root).

It records how images, layers, containers, names and jobs relate. Every connection is opened the
same way: WAL journal, ``synchronous=FULL`` (an acknowledged change survives power loss),
``foreign_keys`` on, a busy timeout. Writes run as ``BEGIN IMMEDIATE`` … ``COMMIT`` under one lock,
so a mutation is one transaction; sqlite-utils nests inside it with savepoints.

Glossary: *table* rows are created by numbered migrations (``graph/schema.py``); ``user_version``
holds the number of the last one applied.

Example::

    db = GraphDB(root / "graph.db")
    with db.write() as tx:
        tx["jobs"].insert({...})
    rows = db.query("SELECT id FROM jobs")
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from engine.errors import AlreadyExists, Unavailable
from graph.schema import MIGRATIONS

log = logging.getLogger(__name__)

Row = dict[str, Any]


class GraphDB:
    """One SQLite file, one connection, one writer at a time."""

    def __init__(self, path: Path, *, busy_timeout: float = 30.0) -> None:
        self.path = path
        try:
            conn = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise Unavailable(f"cannot open {path}: {exc}") from exc
        self._conn = conn
        self._lock = threading.RLock()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "foreign_keys=ON",
            f"busy_timeout={int(busy_timeout * 1000)}",
        ):
            conn.execute(f"PRAGMA {pragma}")
        self._db = sqlite_utils.Database(conn)
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise Unavailable(f"{path} failed its integrity check: {check}")
        self._migrate()

    def _migrate(self) -> None:
        version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            with self.write() as tx:
                migration(tx)
                tx.execute(f"PRAGMA user_version={number}")
            log.info("graphdb migrated to schema %d", number)

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """Run the block as one write transaction; roll back if it raises.

        A UNIQUE or PRIMARY KEY violation becomes AlreadyExists (by SQLite's error name).
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException as exc:
                self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.IntegrityError) and exc.sqlite_errorname in (
                    "SQLITE_CONSTRAINT_UNIQUE",
                    "SQLITE_CONSTRAINT_PRIMARYKEY",
                ):
                    raise AlreadyExists(str(exc)) from exc
                raise
            else:
                self._conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Return every row of a read-only *sql* as dicts."""
        with self._lock:
            cursor = self._conn.execute(sql, tuple(params))
            names = [d[0] for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Return every row of a read-only *sql* as tuples (for large results)."""
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close the connection."""
        with self._lock:
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._conn.close()
