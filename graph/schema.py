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


def _images(db: sqlite_utils.Database) -> None:
    """Layers, images, the image→layer edges, tags, digests and volumes."""
    # A layer row exists before its files (state 'creating') so that start-up can remove what a
    # crash left half-made; its chain id is known, and unique, once it is 'ready'. Rows reference
    # layers by the graph driver's id, which is fixed from the start.
    db.execute(
        "CREATE TABLE layers ("
        " id TEXT NOT NULL PRIMARY KEY,"  # the graph driver's id (64 hex)
        " chain_id TEXT,"
        " diff_id TEXT,"
        " parent TEXT REFERENCES layers(id),"
        " size INTEGER NOT NULL DEFAULT 0,"
        " state TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'removing')),"
        " created REAL NOT NULL)"
    )
    db.execute("CREATE UNIQUE INDEX layers_chain ON layers (chain_id) WHERE chain_id IS NOT NULL")
    db.execute("CREATE INDEX layers_parent ON layers (parent)")
    db.execute(
        "CREATE TABLE images ("
        " id TEXT NOT NULL PRIMARY KEY,"  # sha256:<hex of the config bytes>
        " parent TEXT REFERENCES images(id),"
        " top_layer TEXT REFERENCES layers(id),"
        " config BLOB NOT NULL,"  # exactly the bytes whose digest is the id
        " created TEXT NOT NULL,"
        " size INTEGER NOT NULL,"
        " added REAL NOT NULL)"
    )
    db.execute("CREATE INDEX images_parent ON images (parent)")
    db.execute("CREATE INDEX images_top_layer ON images (top_layer)")
    db.execute(
        "CREATE TABLE image_layers ("
        " image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,"
        " position INTEGER NOT NULL,"
        " layer_id TEXT NOT NULL REFERENCES layers(id),"
        " PRIMARY KEY (image_id, position))"
    )
    db.execute("CREATE INDEX image_layers_layer ON image_layers (layer_id)")
    for table in ("tags", "digests"):  # name: docker.io/library/x:tag or …@sha256:…
        db.execute(
            f"CREATE TABLE {table} ("
            " name TEXT NOT NULL PRIMARY KEY,"
            " image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,"
            " added REAL NOT NULL)"
        )
        db.execute(f"CREATE INDEX {table}_image ON {table} (image_id)")
    db.execute(
        "CREATE TABLE volumes ("
        " name TEXT NOT NULL PRIMARY KEY,"
        " driver TEXT NOT NULL,"
        " mountpoint TEXT NOT NULL,"
        " labels TEXT NOT NULL DEFAULT '{}',"
        " options TEXT NOT NULL DEFAULT '{}',"
        " created REAL NOT NULL)"
    )


def _containers(db: sqlite_utils.Database) -> None:
    """Containers (their names live in the name graph) and the volumes each one uses.

    A container row pins its image: ``image_delete`` cannot remove an image a container was
    made from (RESTRICT). ``container_volumes`` is what makes a volume "in use".
    """
    db.execute(
        "CREATE TABLE containers ("
        " id TEXT NOT NULL PRIMARY KEY,"
        " image_id TEXT NOT NULL REFERENCES images(id) ON DELETE RESTRICT,"
        " created REAL NOT NULL)"
    )
    db.execute("CREATE INDEX containers_image ON containers (image_id)")
    db.execute(
        "CREATE TABLE container_volumes ("
        " container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,"
        " volume TEXT NOT NULL REFERENCES volumes(name) ON DELETE RESTRICT,"
        " destination TEXT NOT NULL,"
        " PRIMARY KEY (container_id, destination))"
    )
    db.execute("CREATE INDEX container_volumes_volume ON container_volumes (volume)")


def _networks(db: sqlite_utils.Database) -> None:
    """Networks and their endpoints (one IP allocation per container and network).

    An endpoint pins its network (RESTRICT: a network with endpoints cannot be removed) and goes
    with its container (CASCADE). ``last_ip`` is the allocator's round-robin cursor.
    """
    db.execute(
        "CREATE TABLE networks ("
        " id TEXT NOT NULL PRIMARY KEY,"  # 64 hex
        " name TEXT NOT NULL UNIQUE,"
        " driver TEXT NOT NULL,"
        " bridge TEXT NOT NULL DEFAULT '',"  # the host interface
        " subnet TEXT NOT NULL DEFAULT '',"  # CIDR, '' for drivers without addresses
        " gateway TEXT NOT NULL DEFAULT '',"
        " ip_range TEXT NOT NULL DEFAULT '',"  # CIDR to allocate from, '' = the whole subnet
        " internal INTEGER NOT NULL DEFAULT 0,"
        " attachable INTEGER NOT NULL DEFAULT 0,"
        " labels TEXT NOT NULL DEFAULT '{}',"
        " options TEXT NOT NULL DEFAULT '{}',"
        " created TEXT NOT NULL,"  # RFC 3339
        " predefined INTEGER NOT NULL DEFAULT 0,"  # bridge, host, none
        " last_ip TEXT NOT NULL DEFAULT '')"
    )
    db.execute(
        "CREATE TABLE endpoints ("
        " network_id TEXT NOT NULL REFERENCES networks(id) ON DELETE RESTRICT,"
        " container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,"
        " ifname TEXT NOT NULL DEFAULT '',"
        " ip TEXT NOT NULL DEFAULT '',"
        " mac TEXT NOT NULL DEFAULT '',"
        " aliases TEXT NOT NULL DEFAULT '[]',"
        " ports TEXT NOT NULL DEFAULT '[]',"  # [{"proto", "host_ip", "host_port", ...}]
        " PRIMARY KEY (network_id, container_id))"
    )
    db.execute("CREATE UNIQUE INDEX endpoints_ip ON endpoints (network_id, ip) WHERE ip != ''")
    db.execute("CREATE INDEX endpoints_container ON endpoints (container_id)")


def _distribution(db: sqlite_utils.Database) -> None:
    """Compressed blobs known for each layer: where a registry has them, and the local cache.

    One row per (diff_id, blob digest, registry, repository). ``registry`` '' is the daemon's own
    cache of compressed blobs (``blobs/sha256/<hex>``), made by push so that the next push does
    not compress again. Rows are hints: a push still asks the registry before it skips a blob.
    """
    db.execute(
        "CREATE TABLE layer_blobs ("
        " diff_id TEXT NOT NULL,"
        " digest TEXT NOT NULL,"
        " media_type TEXT NOT NULL,"
        " size INTEGER NOT NULL,"
        " registry TEXT NOT NULL DEFAULT '',"
        " repository TEXT NOT NULL DEFAULT '',"
        " added REAL NOT NULL,"
        " PRIMARY KEY (diff_id, digest, registry, repository))"
    )
    db.execute("CREATE INDEX layer_blobs_digest ON layer_blobs (digest)")


MIGRATIONS: Final[tuple[Migration, ...]] = (
    _jobs,
    _entities,
    _images,
    _containers,
    _networks,
    _distribution,
)
