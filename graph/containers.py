"""The container store: a row and a name per container in the GraphDB, its config in files.

A container is made of: a row in ``containers`` (id, image, created: it pins the image), a name
in the name graph (``/<name>`` → id, unique), and its directory ``containers/<id>`` holding
``config.v2.json`` (everything but the host config, including ``State``) and
``hostconfig.json``, each written atomically. The row and the name are written together first,
which reserves the name; if anything after that fails the caller ``forget``s the container, so
a failed create never leaves a phantom name. At daemon start ``load`` reads every container,
drops rows whose directory never got its config (a crash during create), and reports records
it cannot read without stopping.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from engine.errors import AlreadyExists, InvalidArgument, NotFound
from graph.db import GraphDB
from graph.names import NameGraph

log = logging.getLogger("containers")

ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass
class State:
    """A container's run state, as Docker's ``State``."""

    status: str = "created"  # created, running, paused, restarting, removing, exited, dead
    running: bool = False
    paused: bool = False
    restarting: bool = False
    oom_killed: bool = False
    dead: bool = False
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    monitor: dict[str, Any] = field(default_factory=dict)  # what the exec driver recorded

    def docker(self) -> dict[str, Any]:
        """The ``State`` object of inspect."""
        return {
            "Status": self.status,
            "Running": self.running,
            "Paused": self.paused,
            "Restarting": self.restarting,
            "OOMKilled": self.oom_killed,
            "Dead": self.dead,
            "Pid": self.pid,
            "ExitCode": self.exit_code,
            "Error": self.error,
            "StartedAt": self.started_at,
            "FinishedAt": self.finished_at,
        }


@dataclass
class Container:
    """One container; ``config`` and ``host_config`` are Docker's shapes."""

    id: str
    name: str  # without the leading "/"
    image: str  # image id
    created: str
    config: dict[str, Any]
    host_config: dict[str, Any]
    path: str = ""
    args: list[str] = field(default_factory=list)
    driver: str = ""
    exec_driver: str = "native"
    state: State = field(default_factory=State)
    restart_count: int = 0
    mounts: list[dict[str, Any]] = field(default_factory=list)
    manually_stopped: bool = False
    started_before: bool = False
    # The networks it is connected to: name → Docker's EndpointSettings as configured (Aliases,
    # IPAMConfig, Links, DriverOpts); what a run was given (address, MAC) is in the GraphDB.
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]


class ContainerStore:
    """Containers on disk and in the GraphDB; see the module docstring."""

    def __init__(self, db: GraphDB, root: Path) -> None:
        self.db, self.root = db, root
        self.names = NameGraph(db)
        root.mkdir(parents=True, exist_ok=True, mode=0o710)

    def dir(self, id: str) -> Path:
        """The container's directory (the bundle)."""
        return self.root / id

    def reserve(self, id: str, name: str, image: str, created: float) -> None:
        """Write the row and the name in one transaction; AlreadyExists if the name is taken."""
        try:
            with self.db.write() as tx:
                tx.execute(
                    "INSERT INTO containers (id, image_id, created) VALUES (?, ?, ?)",
                    (id, image, created),
                )
                tx.execute("INSERT OR IGNORE INTO entity (id) VALUES (?)", (id,))
                tx.execute(
                    "INSERT INTO edge (parent_id, name, entity_id) VALUES ('0', ?, ?)", (name, id)
                )
        except AlreadyExists:
            holder = self.names.get(f"/{name}") if self.names.exists(f"/{name}") else "?"
            raise AlreadyExists(
                f'Conflict. The container name "/{name}" is already in use by container '
                f'"{holder}". You have to remove (or rename) that container to be able to reuse '
                "that name."
            ) from None
        self.dir(id).mkdir(mode=0o710)

    def save(self, container: Container) -> None:
        """Write the container's two config files atomically."""
        directory = self.dir(container.id)
        config = {
            "ID": container.id,
            "Name": "/" + container.name,
            "Image": container.image,
            "Created": container.created,
            "Config": container.config,
            "Path": container.path,
            "Args": container.args,
            "Driver": container.driver,
            "ExecDriver": container.exec_driver,
            "State": {**container.state.docker(), "Monitor": container.state.monitor},
            "RestartCount": container.restart_count,
            "MountPoints": container.mounts,
            "HasBeenManuallyStopped": container.manually_stopped,
            "HasBeenStartedBefore": container.started_before,
            "NetworkSettings": {"Networks": container.networks},
        }
        _write_atomic(directory / "hostconfig.json", orjson.dumps(container.host_config))
        _write_atomic(directory / "config.v2.json", orjson.dumps(config))

    def forget(self, id: str) -> None:
        """Remove the row, the names and the directory of a container."""
        with self.db.write() as tx:
            tx.execute("DELETE FROM edge WHERE entity_id = ? OR parent_id = ?", (id, id))
            tx.execute("DELETE FROM entity WHERE id = ?", (id,))
            tx.execute("DELETE FROM containers WHERE id = ?", (id,))
        shutil.rmtree(self.dir(id), ignore_errors=True)

    def rename(self, id: str, old: str, new: str) -> None:
        """Move the container's name; AlreadyExists if *new* is taken."""
        try:
            self.names.rename(f"/{old}", f"/{new}")
        except AlreadyExists:
            raise AlreadyExists(
                f'Conflict. The container name "/{new}" is already in use by container '
                f'"{self.names.get("/" + new)}". You have to remove (or rename) that container '
                "to be able to reuse that name."
            ) from None

    def name_taken(self, name: str) -> bool:
        """Whether ``/<name>`` names a container."""
        return self.names.exists(f"/{name}")

    def users_of(self, image: str) -> list[str]:
        """Ids of the containers made from *image*."""
        return [
            r[0] for r in self.db.rows("SELECT id FROM containers WHERE image_id = ?", (image,))
        ]

    def set_volumes(self, id: str, volumes: list[tuple[str, str]]) -> None:
        """Record the named volumes (name, destination) a container uses."""
        with self.db.write() as tx:
            tx.execute("DELETE FROM container_volumes WHERE container_id = ?", (id,))
            for name, destination in volumes:
                tx.execute(
                    "INSERT INTO container_volumes (container_id, volume, destination)"
                    " VALUES (?, ?, ?)",
                    (id, name, destination),
                )

    def load(self) -> tuple[list[Container], list[tuple[str, str]]]:
        """Every container whose files can be read, and (id, reason) for those that cannot."""
        rows = self.db.rows("SELECT c.id, e.name FROM containers c JOIN edge e"
                            " ON e.entity_id = c.id AND e.parent_id = '0'")  # fmt: skip
        loaded, broken = [], []
        for id, name in rows:
            directory = self.dir(id)
            if not (directory / "config.v2.json").exists():
                log.warning("container %s was never fully created; removing it", id[:12])
                self.forget(id)
                continue
            try:
                loaded.append(self._read(id, name))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("failed to load container %s: %s", id[:12], exc)
                broken.append((id, str(exc)))
        return loaded, broken

    def _read(self, id: str, name: str) -> Container:
        directory = self.dir(id)
        raw = orjson.loads((directory / "config.v2.json").read_bytes())
        host_config = orjson.loads((directory / "hostconfig.json").read_bytes())
        s = raw["State"]
        state = State(
            status=s["Status"], running=s["Running"], paused=s["Paused"],
            restarting=s["Restarting"], oom_killed=s["OOMKilled"], dead=s["Dead"],
            pid=s["Pid"], exit_code=s["ExitCode"], error=s["Error"],
            started_at=s["StartedAt"], finished_at=s["FinishedAt"],
            monitor=s.get("Monitor") or {},
        )  # fmt: skip
        if not isinstance(raw["Config"], dict) or not isinstance(host_config, dict):
            raise ValueError("Config and HostConfig must be objects")
        return Container(
            id=id, name=name, image=raw["Image"], created=raw["Created"],
            config=raw["Config"], host_config=host_config, path=raw["Path"],
            args=list(raw["Args"]), driver=raw["Driver"], exec_driver=raw["ExecDriver"],
            state=state, restart_count=raw["RestartCount"], mounts=raw["MountPoints"],
            manually_stopped=raw.get("HasBeenManuallyStopped", False),
            started_before=raw.get("HasBeenStartedBefore", False),
            networks=dict((raw.get("NetworkSettings") or {}).get("Networks") or {}),
        )  # fmt: skip


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    """Write a small file of the container (hosts, hostname, resolv.conf) atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def rewrite_in_place(path: Path, text: str) -> None:
    """Replace the contents of a file a running container has bind-mounted (its ``hosts``):
    the same inode, so the container sees the change (a rename would leave it the old file)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        data = text.encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def check_id(id: str) -> str:
    """Refuse anything but 64 lowercase hex digits (ids become paths)."""
    if len(id) != 64 or any(c not in "0123456789abcdef" for c in id):
        raise InvalidArgument(f"invalid container id {id!r}")
    return id


def not_found(ref: str) -> NotFound:
    """Docker's message for a container that does not exist."""
    return NotFound(f"No such container: {ref}")
