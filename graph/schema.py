"""GraphDB schema as numbered migrations; a migration is never edited once it has shipped.

``MIGRATIONS[n]`` brings a database from ``user_version`` n to n+1 inside one write transaction.
Append new steps at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import sqlite_utils

Migration = Callable[[sqlite_utils.Database], None]


def _jobs(db: sqlite_utils.Database) -> None:
    """Job history: one row per finished job, pruned to the newest N by the history writer."""
    db.table("jobs").create(
        {
            "seq": int,
            "id": str,
            "name": str,
            "args": str,  # JSON array
            "params": str,  # JSON object
            "state": str,  # ok | error | cancelled | not found
            "status": int,  # 0 ok, 1 error, 127 no such job
            "error": str,
            "started": float,  # unix seconds
            "ended": float,
        },
        pk="seq",
        not_null={"id", "name", "state", "status", "started", "ended"},
    )
    db.table("jobs").create_index(["id"], unique=True)


def _entities(db: sqlite_utils.Database) -> None:
    """Name graph (Docker's pkg/graphdb): entities, named edges between them, root "0" at "/"."""
    # Plain SQL: sqlite-utils cannot declare ON DELETE CASCADE. parent_id has no foreign key
    # because the root edge's parent is "" (no entity); purge removes edges from an entity.
    db.execute("CREATE TABLE entity (id TEXT NOT NULL PRIMARY KEY)")
    db.execute(
        "CREATE TABLE edge ("
        " parent_id TEXT NOT NULL,"
        " name TEXT NOT NULL,"
        " entity_id TEXT NOT NULL REFERENCES entity(id) ON DELETE CASCADE,"
        " PRIMARY KEY (parent_id, name))"
    )
    db.execute("CREATE INDEX edge_entity_id ON edge (entity_id)")
    db.execute("INSERT INTO entity (id) VALUES ('0')")
    db.execute("INSERT INTO edge (parent_id, name, entity_id) VALUES ('', '/', '0')")


MIGRATIONS: Final[tuple[Migration, ...]] = (_jobs, _entities)
