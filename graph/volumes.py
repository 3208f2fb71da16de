"""The volume store: named directories that outlive containers, recorded in the GraphDB.

Glossary: a volume's *name* is its id (``^[a-zA-Z0-9][a-zA-Z0-9_.-]+$``, or 64 random hex digits
for an *anonymous* volume, which carries the label ``com.docker.volume.anonymous``); its
*mountpoint* is ``<root>/<name>/_data``, the directory containers see; its *driver* is ``local``
(the only one); a volume is *in use* while a ``container_volumes`` row names it (that table's
foreign key is ON DELETE RESTRICT, so the row cannot go while a container uses it).

Lifecycle: ``create`` makes ``<root>/.tmp-<random>/_data``, renames it to ``<root>/<name>`` and
only then inserts the row, so a crash never leaves a row without its directory; ``remove``
deletes the row, then the directory. ``recover`` (at daemon start) removes every directory that
has no row: temp directories and what a crash between the two steps left.

Example::

    store = VolumeStore(db, data_root / "volumes")
    v = store.create("pgdata", labels={"app": "db"})
    store.remove("pgdata")
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from engine.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotSupported,
)
from graph.db import GraphDB, Row

log = logging.getLogger(__name__)

NAME_CHARS: Final = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
_NAME: Final = re.compile(NAME_CHARS + "+")
ANONYMOUS_LABEL: Final = "com.docker.volume.anonymous"
DRIVER: Final = "local"
# Options the local driver knows (a tmpfs, NFS or device mount made at container start): known,
# but not done yet; anything else is no option at all.
LOCAL_OPTIONS: Final = frozenset({"type", "device", "o", "size"})
LIST_FILTERS: Final = frozenset({"name", "label", "dangling", "driver"})
PRUNE_FILTERS: Final = frozenset({"label", "label!", "all"})
_TRUE: Final = frozenset({"true", "1"})
_BOOLS: Final = frozenset({"true", "1", "false", "0"})


class VolumeNotFound(NotFound):
    """No volume has that name."""


class VolumeInUse(FailedPrecondition):
    """A container uses the volume."""


@dataclass(frozen=True, slots=True)
class Volume:
    """One stored volume."""

    name: str
    driver: str
    mountpoint: str
    labels: dict[str, str]
    options: dict[str, str]
    created: float

    @property
    def anonymous(self) -> bool:
        """Whether the daemon named the volume (no name was given)."""
        return ANONYMOUS_LABEL in self.labels

    def record(self, usage: tuple[int, int] | None = None) -> dict[str, object]:
        """The volume in Docker's shape; *usage* (size, ref count) only for ``system df``."""
        out: dict[str, object] = {
            "CreatedAt": datetime.fromtimestamp(int(self.created), UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            "Driver": self.driver,
            "Labels": dict(self.labels),
            "Mountpoint": self.mountpoint,
            "Name": self.name,
            "Options": dict(self.options),
            "Scope": "local",
        }
        if usage is not None:
            out["UsageData"] = {"Size": usage[0], "RefCount": usage[1]}
        return out


def _volume(row: Row) -> Volume:
    return Volume(
        name=row["name"],
        driver=row["driver"],
        mountpoint=row["mountpoint"],
        labels=json.loads(row["labels"]),
        options=json.loads(row["options"]),
        created=row["created"],
    )


def validate_name(name: str) -> None:
    """Raise InvalidArgument, with dockerd's message, if *name* cannot name a local volume."""
    if len(name) == 1:
        raise InvalidArgument(
            f"create {name}: volume name is too short, names should be at least two "
            "alphanumeric characters"
        )
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"create {name}: {json.dumps(name)} includes invalid characters for a local volume "
            f'name, only "{NAME_CHARS}" are allowed. If you intended to pass a host directory, '
            "use absolute path"
        )


class VolumeStore:
    """Local volumes under *root*, one directory each."""

    def __init__(self, db: GraphDB, root: Path) -> None:
        self.db = db
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o701)
        # create and remove touch a directory and a row: one at a time in this process, so a
        # name's directory never changes under a concurrent call.
        self._lock = threading.Lock()

    def create(
        self,
        name: str = "",
        driver: str = DRIVER,
        labels: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
    ) -> Volume:
        """Create volume *name* (random and anonymous if ""); return it, or the existing one."""
        labels, options = dict(labels or {}), dict(options or {})
        driver = driver or DRIVER
        if not name:
            name = secrets.token_hex(32)
            labels[ANONYMOUS_LABEL] = ""
        validate_name(name)
        with self._lock:
            rows = self.db.query("SELECT * FROM volumes WHERE name = ?", (name,))
            if rows:
                existing = _volume(rows[0])
                if existing.driver != driver:
                    raise AlreadyExists(
                        f"create {name}: driver '{existing.driver}' already has volume "
                        f"'{name}': volume name must be unique"
                    )
                return existing  # Docker's create is idempotent
            _check_driver(name, driver, options)
            return self._make(name, driver, labels, options)

    def _make(self, name: str, driver: str, labels: dict[str, str], opts: dict[str, str]) -> Volume:
        final = self.root / name
        if final.exists():  # a directory without its row: left by a crash
            _refuse_mounts(final, f"create {name}")
            _remove_tree(final)
        tmp = self.root / f".tmp-{secrets.token_hex(8)}"
        try:
            tmp.mkdir(mode=0o755)
            (tmp / "_data").mkdir(mode=0o755)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(self.root)
        volume = Volume(name, driver, str(final / "_data"), labels, opts, time.time())
        try:
            with self.db.write() as tx:
                tx.table("volumes").insert(
                    {
                        "name": name,
                        "driver": driver,
                        "mountpoint": volume.mountpoint,
                        "labels": json.dumps(labels, sort_keys=True),
                        "options": json.dumps(opts, sort_keys=True),
                        "created": volume.created,
                    }
                )
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
        return volume

    def get(self, name: str) -> Volume:
        """Return volume *name*; VolumeNotFound if absent."""
        rows = self.db.query("SELECT * FROM volumes WHERE name = ?", (name,))
        if not rows:
            raise VolumeNotFound(f"get {name}: no such volume")
        return _volume(rows[0])

    def all(self) -> list[Volume]:
        """Return every volume, by name."""
        return [_volume(r) for r in self.db.query("SELECT * FROM volumes ORDER BY name")]

    def in_use(self, name: str) -> list[str]:
        """Return the ids of the containers that use volume *name* (sorted)."""
        rows = self.db.query(
            "SELECT DISTINCT container_id FROM container_volumes WHERE volume = ?"
            " ORDER BY container_id",
            (name,),
        )
        return [r["container_id"] for r in rows]

    def used(self) -> dict[str, int]:
        """Return how many containers use each volume in use."""
        rows = self.db.query(
            "SELECT volume, COUNT(DISTINCT container_id) AS n FROM container_volumes"
            " GROUP BY volume"
        )
        return {r["volume"]: r["n"] for r in rows}

    def remove(self, name: str, force: bool = False) -> None:
        """Remove volume *name* and its files; VolumeInUse if a container uses it, even forced;
        VolumeNotFound if absent, unless *force*."""
        with self._lock:
            try:
                self._remove(name)
            except VolumeNotFound:
                if not force:
                    raise

    def _remove(self, name: str) -> None:
        with self.db.write() as tx:
            if not tx.execute("SELECT 1 FROM volumes WHERE name = ?", (name,)).fetchone():
                raise VolumeNotFound(f"get {name}: no such volume")
            users = [
                r[0]
                for r in tx.execute(
                    "SELECT DISTINCT container_id FROM container_volumes WHERE volume = ?"
                    " ORDER BY container_id",
                    (name,),
                )
            ]
            if users:
                raise VolumeInUse(f"remove {name}: volume is in use - [{', '.join(users)}]")
            _refuse_mounts(self.root / name, f"remove {name}")
            tx.execute("DELETE FROM volumes WHERE name = ?", (name,))
        # After the commit: a crash here leaves a directory without a row, which recover removes.
        _remove_tree(self.root / name)

    def prune(self, filters: Mapping[str, Sequence[str]] | None = None) -> tuple[list[str], int]:
        """Remove unused volumes (anonymous ones only unless ``all=true``) that match *filters*
        (label, label!, all); return the names removed and the bytes reclaimed."""
        f = dict(filters or {})
        _check_filters(f, PRUNE_FILTERS)
        every = {v.lower() for v in f.get("all", [])}
        if every - _BOOLS:
            raise InvalidArgument(f"invalid filter 'all={sorted(every - _BOOLS)[0]}'")
        removed: list[str] = []
        reclaimed = 0
        used = self.used()
        for volume in self.all():
            if volume.name in used or not (every & _TRUE or volume.anonymous):
                continue
            if not _labelled(volume.labels, f.get("label", [])):
                continue
            if f.get("label!") and _labelled_any(volume.labels, f["label!"]):
                continue
            size = self.size(volume.name)
            try:
                with self._lock:
                    self._remove(volume.name)
            except (FailedPrecondition, VolumeNotFound) as exc:
                log.info("prune: kept volume %s: %s", volume.name, exc)
                continue  # taken or removed since the list was read, or a mount inside
            removed.append(volume.name)
            reclaimed += size
        return removed, reclaimed

    def size(self, name: str) -> int:
        """Return the bytes the files of volume *name* hold (hard links counted once)."""
        return _du(Path(self.get(name).mountpoint))

    def recover(self) -> list[str]:
        """Remove directories that have no row, and give rows back a missing ``_data``; return
        the names removed (at daemon start)."""
        names = {r["name"] for r in self.db.query("SELECT name FROM volumes")}
        removed = []
        with self._lock:
            for entry in sorted(os.listdir(self.root)):
                if entry in names:
                    continue
                path = self.root / entry
                try:
                    _refuse_mounts(path, f"recover {entry}")
                except FailedPrecondition as exc:
                    log.warning("%s; left in place", exc)
                    continue
                if path.is_dir() and not path.is_symlink():
                    _remove_tree(path)
                else:
                    path.unlink()
                removed.append(entry)
            for name in sorted(names):
                data = self.root / name / "_data"
                if not data.is_dir():
                    log.warning("volume %s had lost its directory; made it again, empty", name)
                    data.mkdir(parents=True, mode=0o755)
        if removed:
            log.info("removed %d volume director(ies) without a volume", len(removed))
        return removed

    def list(self, filters: Mapping[str, Sequence[str]] | None = None) -> builtins.list[Volume]:
        """Return the volumes that match Docker's list *filters* (name, label, dangling, driver)."""
        f = dict(filters or {})
        _check_filters(f, LIST_FILTERS)
        dangling = {v.lower() for v in f.get("dangling", [])}
        if dangling - _BOOLS:
            raise InvalidArgument(f"invalid filter 'dangling={sorted(dangling - _BOOLS)[0]}'")
        names = [_pattern(p) for p in f.get("name", [])]
        used = self.used()
        chosen = []
        for volume in self.all():
            if dangling and (bool(dangling & _TRUE) == (volume.name in used)):
                continue
            if names and not any(p.search(volume.name) for p in names):
                continue
            if f.get("driver") and volume.driver not in f["driver"]:
                continue
            if not _labelled(volume.labels, f.get("label", [])):
                continue
            chosen.append(volume)
        return chosen


def _check_driver(name: str, driver: str, options: Mapping[str, str]) -> None:
    if driver != DRIVER:
        raise NotFound(
            f"create {name}: error looking up volume plugin {driver}: plugin {json.dumps(driver)}"
            " not found"
        )
    unknown = sorted(set(options) - LOCAL_OPTIONS)
    if unknown:
        raise InvalidArgument(f"create {name}: invalid option: {json.dumps(unknown[0])}")
    if options:
        raise NotSupported(
            f"create {name}: local driver options are not supported yet: "
            + ", ".join(sorted(options))
        )


def _check_filters(filters: Mapping[str, Sequence[str]], known: frozenset[str]) -> None:
    unknown = sorted(set(filters) - known)
    if unknown:
        raise InvalidArgument(f"invalid filter '{unknown[0]}'")


def _pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise InvalidArgument(f"filters: name: invalid pattern {text!r}: {exc}") from None


def _labelled(labels: Mapping[str, str], wanted: Sequence[str]) -> bool:
    """Whether *labels* has every ``key`` or ``key=value`` in *wanted*."""
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _labelled_any(labels: Mapping[str, str], wanted: Sequence[str]) -> bool:
    return any(_labelled(labels, [item]) for item in wanted)


def _du(path: Path) -> int:
    total, seen = 0, set()
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except FileNotFoundError:
            continue
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below *path* (from ``/proc/self/mountinfo``)."""
    prefix = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            points = [_unescape(line.split(" ")[4]) for line in f if line.strip()]
    except FileNotFoundError:
        return []
    return sorted(p for p in points if p == prefix or p.startswith(prefix + "/"))


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \040, \011, \012 and \134.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def _refuse_mounts(path: Path, action: str) -> None:
    """FailedPrecondition if something is mounted inside *path*: removing the tree would delete
    files of another file system."""
    mounts = _mounts_under(path)
    if mounts:
        raise FailedPrecondition(f"{action}: file systems are mounted in it: {', '.join(mounts)}")


def _remove_tree(path: Path) -> None:
    """Remove *path* and everything in it; log what could not go (recover retries later)."""

    def failed(
        function: object, name: str, info: tuple[type[BaseException], BaseException, object]
    ) -> None:
        log.warning("could not remove %s: %s", name, info[1])

    shutil.rmtree(path, onerror=failed)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
