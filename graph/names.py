"""The name graph: container names and links as paths over entities (Docker's pkg/graphdb)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Final

from engine.errors import AlreadyExists, InvalidArgument, NotFound
from graph.db import GraphDB

ROOT: Final = "0"
# Walks stop here even when asked for everything: links may form cycles (/a/x -> B, /b/y -> A).
MAX_DEPTH: Final = 32
ALL: Final = -1

# Docker's container name rule (daemon/names): note the "+", a name has at least two characters.
_NAME: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
# Entity ids are container ids in practice; "/" is excluded because lineage strings use it.
_ENTITY_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}")

# Resolve a path in one statement: step k follows the edge named parts[k] from step k-1's entity.
_RESOLVE: Final = """
WITH RECURSIVE step(depth, id) AS (
    SELECT 0, '0'
    UNION ALL
    SELECT step.depth + 1, edge.entity_id
    FROM step
    JOIN json_each(?) AS part ON part.key = step.depth
    JOIN edge ON edge.parent_id = step.id AND edge.name = part.value
)
SELECT id FROM step WHERE depth = ?
"""

# Descendants of one entity, shallowest first. An entity already on the lineage is not entered
# again, and depth is bounded, so a cycle ends the walk instead of looping.
_WALK: Final = """
WITH RECURSIVE tree(entity_id, path, depth, lineage) AS (
    SELECT ?, ?, 0, '/' || ? || '/'
    UNION ALL
    SELECT edge.entity_id, tree.path || '/' || edge.name, tree.depth + 1,
           tree.lineage || edge.entity_id || '/'
    FROM tree JOIN edge ON edge.parent_id = tree.entity_id
    WHERE tree.depth < ? AND instr(tree.lineage, '/' || edge.entity_id || '/') = 0
)
SELECT path, entity_id FROM tree WHERE depth > 0 ORDER BY depth, path
"""

# Every full path naming one entity: climb edges from the entity towards the root.
_CLIMB: Final = """
WITH RECURSIVE up(parent_id, path, depth, lineage) AS (
    SELECT parent_id, '/' || name, 1, '/' || entity_id || '/'
    FROM edge WHERE entity_id = ? AND parent_id != ''
    UNION ALL
    SELECT edge.parent_id, '/' || edge.name || up.path, up.depth + 1,
           up.lineage || up.parent_id || '/'
    FROM up JOIN edge ON edge.entity_id = up.parent_id
    WHERE up.parent_id != '0' AND edge.parent_id != '' AND up.depth < ?
      AND instr(up.lineage, '/' || up.parent_id || '/') = 0
)
SELECT path FROM up WHERE parent_id = '0' ORDER BY depth, path
"""


def split_path(path: str) -> list[str]:
    """Return the names along *path* ("/" gives []); raise InvalidArgument if any is malformed."""
    if path == "/":
        return []
    inner = path.removeprefix("/").removesuffix("/")
    parts = inner.split("/")
    for part in parts:
        if _NAME.fullmatch(part) is None:
            raise InvalidArgument(
                f"invalid name ({part}) in path {path!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are "
                "allowed, at least two characters"
            )
    return parts


def join_path(parts: list[str]) -> str:
    """Return the normalised path for *parts*, e.g. ``/web/db``."""
    return "/" + "/".join(parts)


def _check_entity_id(entity_id: str) -> None:
    if _ENTITY_ID.fullmatch(entity_id) is None:
        raise InvalidArgument(
            f"invalid entity id ({entity_id!r}): only [A-Za-z0-9_.:-] are allowed, 1-255 long"
        )


def _levels(depth: int) -> int:
    if depth == ALL:
        return MAX_DEPTH
    if not 1 <= depth <= MAX_DEPTH:
        raise InvalidArgument(f"invalid depth {depth}: must be 1..{MAX_DEPTH} or {ALL} for all")
    return depth


class NameGraph:
    """Names and links of containers as a graph of entities joined by named edges.

    Glossary: an *entity* is an id (a container id; ``"0"`` is the root). An *edge*
    (parent_id, name, entity_id) names an entity under a parent and is unique per
    (parent_id, name). A *path* such as ``/web/db`` follows edges from the root: ``/web`` is the
    container named web and ``/web/db`` is its link aliased ``db``. One entity may have many
    paths; *depth* counts levels below a path (1 = direct children, ``ALL`` = up to MAX_DEPTH).
    Lifecycle: ``set`` a name at create, ``set`` links under it, ``delete`` one name or link,
    ``purge`` the entity when the container is destroyed. Every mutation is one transaction.

    Example::

        names = NameGraph(db)
        names.set("/web", web_id); names.set("/db", db_id); names.set("/web/db", db_id)
        names.children("/web")   # [("/web/db", db_id)]
    """

    def __init__(self, db: GraphDB) -> None:
        self._db = db

    def _resolve(self, parts: list[str]) -> str:
        rows = self._db.query(_RESOLVE, (json.dumps(parts), len(parts)))
        if not rows:
            raise NotFound(f"no such path: {join_path(parts)}")
        return str(rows[0]["id"])

    def set(self, path: str, entity_id: str) -> None:
        """Name *entity_id* at *path*; raise NotFound without the parent, AlreadyExists if taken."""
        parts = split_path(path)
        if not parts:
            raise InvalidArgument("cannot set the root path /")
        _check_entity_id(entity_id)
        if entity_id == ROOT:
            raise InvalidArgument("the root entity cannot be named again")
        try:
            with self._db.write() as tx:
                parent_id = self._resolve(parts[:-1])
                if parent_id == entity_id:
                    raise InvalidArgument(f"cannot link entity {entity_id} under itself")
                tx.execute("INSERT OR IGNORE INTO entity (id) VALUES (?)", (entity_id,))
                tx.execute(
                    "INSERT INTO edge (parent_id, name, entity_id) VALUES (?, ?, ?)",
                    (parent_id, parts[-1], entity_id),
                )
        except AlreadyExists as exc:
            raise AlreadyExists(f"name {join_path(parts)} is already taken") from exc

    def get(self, path: str) -> str:
        """Return the entity id at *path*; raise NotFound if any name on it is missing."""
        return self._resolve(split_path(path))

    def exists(self, path: str) -> bool:
        """Tell whether *path* names an entity."""
        parts = split_path(path)
        return bool(self._db.query(_RESOLVE, (json.dumps(parts), len(parts))))

    def walk(self, path: str, depth: int) -> Iterator[tuple[str, str]]:
        """Iterate (path, entity id) below *path*, shallowest first; NotFound if *path* is absent.

        The rows are read before the first one is yielded, so the caller may use the graph.
        """
        parts = split_path(path)
        levels = _levels(depth)
        start = self._resolve(parts)
        prefix = join_path(parts) if parts else ""
        rows = self._db.query(_WALK, (start, prefix, start, levels))
        return iter([(str(row["path"]), str(row["entity_id"])) for row in rows])

    def children(self, path: str, depth: int = 1) -> list[tuple[str, str]]:
        """Return (path, entity id) of the descendants of *path*; NotFound if absent."""
        return list(self.walk(path, depth))

    def parents(self, path: str) -> list[str]:
        """Return the ids of entities with an edge to the entity at *path*; NotFound if absent."""
        entity_id = self.get(path)
        rows = self._db.query(
            "SELECT parent_id FROM edge WHERE entity_id = ? AND parent_id != ''"
            " GROUP BY parent_id ORDER BY min(rowid)",
            (entity_id,),
        )
        return [str(row["parent_id"]) for row in rows]

    def refs(self, entity_id: str) -> int:
        """Return how many edges point at *entity_id* (0 for an unknown id)."""
        _check_entity_id(entity_id)
        rows = self._db.query("SELECT count(*) AS n FROM edge WHERE entity_id = ?", (entity_id,))
        return int(rows[0]["n"])

    def ref_paths(self, entity_id: str) -> list[str]:
        """Return every full path from the root that names *entity_id*, shallowest first."""
        _check_entity_id(entity_id)
        if entity_id == ROOT:
            return ["/"]
        rows = self._db.query(_CLIMB, (entity_id, MAX_DEPTH))
        return [str(row["path"]) for row in rows]

    def delete(self, path: str) -> None:
        """Remove the one edge at *path*, keeping the entity; raise NotFound if absent."""
        parts = split_path(path)
        if not parts:
            raise InvalidArgument("cannot delete the root path /")
        with self._db.write() as tx:
            parent_id = self._resolve(parts[:-1])
            cursor = tx.execute(
                "DELETE FROM edge WHERE parent_id = ? AND name = ?", (parent_id, parts[-1])
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no such path: {join_path(parts)}")

    def purge(self, entity_id: str) -> int:
        """Remove *entity_id* and all edges to or from it; return the edge count; NotFound."""
        _check_entity_id(entity_id)
        if entity_id == ROOT:
            raise InvalidArgument("cannot purge the root entity")
        with self._db.write() as tx:
            # Docker deleted only the edges *to* the entity, leaving its links as dangling edges
            # from a missing parent; both directions go here.
            cursor = tx.execute(
                "DELETE FROM edge WHERE entity_id = ? OR parent_id = ?", (entity_id, entity_id)
            )
            removed = cursor.rowcount
            if tx.execute("DELETE FROM entity WHERE id = ?", (entity_id,)).rowcount == 0:
                raise NotFound(f"no such entity: {entity_id}")
        return removed

    def rename(self, old_path: str, new_path: str) -> None:
        """Rename the edge at *old_path* to *new_path* (same parent); NotFound, AlreadyExists."""
        old, new = split_path(old_path), split_path(new_path)
        if not old or not new:
            raise InvalidArgument("cannot rename the root path /")
        if old[:-1] != new[:-1]:
            raise InvalidArgument(
                f"cannot rename {join_path(old)} to {join_path(new)}: not the same parent"
            )
        try:
            with self._db.write() as tx:
                parent_id = self._resolve(old[:-1])
                cursor = tx.execute(
                    "UPDATE edge SET name = ? WHERE parent_id = ? AND name = ?",
                    (new[-1], parent_id, old[-1]),
                )
                if cursor.rowcount == 0:
                    raise NotFound(f"no such path: {join_path(old)}")
        except AlreadyExists as exc:
            raise AlreadyExists(f"name {join_path(new)} is already taken") from exc

    # Defined last: inside the class body this name would shadow the builtin in later annotations.
    def list(self, path: str, depth: int = 1) -> dict[str, str]:
        """Return path -> entity id of descendants of *path* in walk order; NotFound if absent."""
        return dict(self.walk(path, depth))
