"""overlay: layers stacked with overlayfs, laid out as Docker's overlay2.

Layout under the home dir::

    <id>/diff     the layer's own files (the overlay upper dir; whiteouts are char devices 0/0,
                  opaque dirs carry trusted.overlay.opaque=y)
    <id>/link     the layer's short name: l/<link> -> ../<id>/diff
    <id>/lower    "l/A:l/B:..." short names of all ancestors, nearest first; absent in base layers
    <id>/work     overlay work dir;  <id>/merged: the mount point
    l/<link>      short symlinks, so the mount option string of a deep chain fits in one page
    children/     ChildIndex markers; tmp-*, removing-*: leftovers of a crash, deleted at start

``get`` of a base layer returns ``<id>/diff`` (nothing to stack); otherwise it mounts
``lowerdir=...,upperdir=<id>/diff,workdir=<id>/work`` on ``<id>/merged``, refcounted. Absolute
paths are used when the options fit in a page; otherwise paths relative to the home dir, mounted
from a thread with its own cwd (see ``LibcMounter``).
"""

from __future__ import annotations

import base64
import errno
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Sequence
from operator import attrgetter
from pathlib import Path
from typing import BinaryIO, Final

from drivers.graph.base import ChildIndex, layer_ids, validate_id
from drivers.graph.mounts import BACKING_NAMES, MNT_DETACH, LibcMounter, Mounter, check_overlay
from drivers.graph.naive import NaiveDiffer
from engine.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from graph import archive
from graph.archive import AppliedLayer, Change, ChangeKind, Whiteouts

MAX_DEPTH: Final = 128  # Docker's overlay2 limit on the layers below one layer
OPAQUE: Final = "trusted.overlay.opaque"
DIR_KEY: Final = attrgetter("st_mode", "st_uid", "st_gid", "st_mtime_ns")


class OverlayDriver(NaiveDiffer):
    """GraphDriver and Differ stacking each layer's diff dir on its ancestors' with overlayfs.

    Its own Differ: diff() and diff_size() come from NaiveDiffer and build on changes(), which
    reads the upper dir when *parent* is the real parent (and walks both trees otherwise).
    """

    name = "overlay"

    def __init__(
        self, home: Path, options: Sequence[str] = (), mounter: Mounter | None = None
    ) -> None:
        if options:
            raise InvalidArgument(f"overlay: unknown options {list(options)!r}")
        self.home = home
        self.mounter = mounter or LibcMounter()
        self.backing = check_overlay(home, self.mounter)
        (home / "l").mkdir(mode=0o700, exist_ok=True)
        self.children = ChildIndex(home / "children")
        self._refs: dict[str, int] = {}
        self._lock = threading.Lock()
        super().__init__(self)
        self._index_off = Path("/sys/module/overlay/parameters/index").exists()
        self._collect_leftovers()

    def create(self, id: str, parent: str = "") -> None:
        """Create layer *id* on top of *parent*; AlreadyExists / NotFound(parent)."""
        if self.exists(validate_id(id)):
            raise AlreadyExists(f"layer {id} already exists")
        lower = ""
        if parent:
            self._require(parent, "parent")
            lower = ":".join(filter(None, [f"l/{self._read(parent, 'link')}", self._lower(parent)]))
            if lower.count(":") + 1 > MAX_DEPTH:
                raise FailedPrecondition(f"layer {id}: more than {MAX_DEPTH} layers below it")
            self.children.add(parent, id)
        else:
            self.children.discard(id)
        tmp = Path(tempfile.mkdtemp(prefix="tmp-", dir=self.home))
        link = self._new_link(id)
        try:
            (tmp / "diff").mkdir(mode=0o755)
            (tmp / "work").mkdir(mode=0o700)
            (tmp / "merged").mkdir(mode=0o700)
            (tmp / "link").write_text(link)
            if lower:
                (tmp / "lower").write_text(lower)
            with self._lock:  # two creates of one id: the second must fail, not replace
                if self.exists(id):
                    raise AlreadyExists(f"layer {id} already exists")
                os.rename(tmp, self.home / id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            (self.home / "l" / link).unlink(missing_ok=True)
            raise

    def remove(self, id: str) -> None:
        """Remove layer *id*, unmounting it first; NotFound, FailedPrecondition if a parent."""
        with self._lock:
            self._require(id)
            kids = self.children.children(id, self.exists)
            if kids:
                raise FailedPrecondition(f"layer {id} has {len(kids)} child layer(s)")
            held = self._refs.pop(id, 0)
            merged = self.home / id / "merged"
            if (held and self._lower(id)) or os.path.ismount(merged):
                self._unmount(merged)
            (self.home / "l" / self._read(id, "link")).unlink(missing_ok=True)
            doomed = Path(tempfile.mkdtemp(prefix="removing-", dir=self.home))
            os.rename(self.home / id, doomed / "layer")
            self.children.discard(id)
        shutil.rmtree(doomed)

    def get(self, id: str) -> Path:
        """Mount layer *id* if needed (refcounted) and return its root; NotFound if absent."""
        with self._lock:
            lower = self._lower(self._require(id))
            root = self.home / id / ("merged" if lower else "diff")
            count = self._refs.get(id, 0)
            # A mount left by an earlier daemon that died is reused rather than stacked again.
            if count == 0 and lower and not os.path.ismount(root):
                self._mount(id, lower)
            self._refs[id] = count + 1
            return root

    def put(self, id: str) -> None:
        """Release one get() of *id*; unmount at zero; an unbalanced put is ignored."""
        with self._lock:
            count = self._refs.get(validate_id(id), 0)
            if count > 1:
                self._refs[id] = count - 1
            elif count == 1:
                del self._refs[id]
                if self._lower(id):
                    self._unmount(self.home / id / "merged")

    def forget(self, id: str) -> None:
        """Drop every get() of *id* but leave it mounted: a running container keeps its root
        mounted while the daemon restarts, and the next get() reuses the mount."""
        with self._lock:
            self._refs.pop(validate_id(id), None)

    def exists(self, id: str) -> bool:
        """Return whether layer *id* exists."""
        return (self.home / validate_id(id) / "diff").is_dir()

    def ids(self) -> set[str]:
        """Return the id of every layer on disk."""
        return layer_ids(self.home)

    def status(self) -> list[tuple[str, str]]:
        """Return key/value pairs for `info`."""
        n = str(len(self.ids()))
        backing = BACKING_NAMES.get(self.backing, hex(self.backing))
        return [("Backing Filesystem", backing), ("Supports d_type", "true"), ("Layers", n)]

    def cleanup(self) -> None:
        """Unmount every layer this driver mounted; errors are raised together at the end."""
        failures: list[OSError] = []
        with self._lock:
            for id in list(self._refs):
                del self._refs[id]
                if self._lower(id):
                    try:
                        self._unmount(self.home / id / "merged")
                    except OSError as exc:
                        failures.append(exc)
        if failures:
            raise ExceptionGroup("overlay cleanup: unmount failed", failures)

    def changes(self, id: str, parent: str = "") -> list[Change]:
        """List paths added, modified or deleted in *id* relative to *parent*."""
        if not parent or not self.is_parent(id, parent):
            return super().changes(id, parent)
        lower = self.get(parent)
        try:
            return upper_changes(self.home / id / "diff", lower)
        finally:
            self.put(parent)

    def apply_diff(self, id: str, parent: str, stream: BinaryIO) -> AppliedLayer:
        """Apply the tar *stream* straight into *id*'s diff dir; FailedPrecondition if mounted."""
        if not self.is_parent(id, parent):
            return super().apply_diff(id, parent, stream)
        if self._refs.get(id):  # changing an upper dir under a live overlay is undefined
            raise FailedPrecondition(f"layer {id} is mounted; apply before get()")
        mode = Whiteouts.OVERLAY if parent else Whiteouts.DELETE
        return archive.apply_layer(self.home / id / "diff", stream, whiteouts=mode)

    def is_parent(self, id: str, parent: str) -> bool:
        """Return whether *parent* is the layer *id* was created on ("" = base layer)."""
        lower = self._lower(self._require(id))
        if not parent:
            return not lower
        return lower.split(":")[0] == f"l/{self._read(self._require(parent, 'parent'), 'link')}"

    def _require(self, id: str, field: str = "id") -> str:
        if not self.exists(validate_id(id, field)):
            raise NotFound(f"layer {id} not found")
        return id

    def _mount(self, id: str, lower: str) -> None:
        index = ",index=off" if self._index_off else ""
        layer = self.home / id
        lowers = ":".join(str(self.home / p) for p in lower.split(":"))
        data = f"lowerdir={lowers},upperdir={layer}/diff,workdir={layer}/work{index}"
        page = os.sysconf("SC_PAGESIZE")
        if len(data.encode()) < page:
            self.mounter.mount("overlay", layer / "merged", "overlay", 0, data)
            return
        data = f"lowerdir={lower},upperdir={id}/diff,workdir={id}/work{index}"
        if len(data.encode()) >= page:
            raise FailedPrecondition(
                f"layer {id}: overlay mount options are {len(data)} bytes, over the page size"
            )
        self.mounter.mount("overlay", layer / "merged", "overlay", 0, data, cwd=self.home)

    def _unmount(self, merged: Path) -> None:
        try:
            self.mounter.unmount(merged, MNT_DETACH)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: not mounted (any more)
                raise

    def _read(self, id: str, name: str) -> str:
        return (self.home / id / name).read_text().strip()

    def _lower(self, id: str) -> str:
        lower = self.home / id / "lower"
        return lower.read_text().strip() if lower.exists() else ""

    def _new_link(self, id: str) -> str:
        while True:  # 26 base32 chars as Docker; retry on the (unlikely) collision
            link = base64.b32encode(os.urandom(16)).decode().rstrip("=")
            try:
                os.symlink(f"../{id}/diff", self.home / "l" / link)
                return link
            except FileExistsError:
                continue

    def _collect_leftovers(self) -> None:
        for entry in self.home.iterdir():
            if entry.name.startswith(("tmp-", "removing-")):
                shutil.rmtree(entry)
        for link in (self.home / "l").iterdir():
            if not link.exists():  # dangling: its layer was never renamed into place
                link.unlink()


def new(home: Path, options: Sequence[str]) -> OverlayDriver:
    """Factory for the registry."""
    return OverlayDriver(home, options)


def upper_changes(upper: Path, lower: Path) -> list[Change]:
    """Changes recorded in overlay upper dir *upper* over the merged view *lower*, sorted."""
    found: dict[str, ChangeKind] = {}
    # (dir inside the layer, whether the same dir is a real directory in *lower*): lower paths
    # are only looked at below verified directories, never through a symlink of the parent.
    stack = [("/", True)]
    while stack:
        rel, has_lower = stack.pop()
        names = sorted(os.listdir(upper / rel[1:]))
        if has_lower and _opaque(upper / rel[1:]):  # what the parent had here is gone
            for name in sorted(set(os.listdir(lower / rel[1:])) - set(names)):
                _record(found, os.path.join(rel, name), ChangeKind.DELETE)
        for name in names:
            path = os.path.join(rel, name)
            st = os.lstat(upper / path[1:])
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                _record(found, path, ChangeKind.DELETE)
                continue
            old = _lstat(lower / path[1:]) if has_lower else None
            if stat.S_ISDIR(st.st_mode):
                lower_dir = old is not None and stat.S_ISDIR(old.st_mode)
                stack.append((path, lower_dir))
                unchanged = old is not None and lower_dir and DIR_KEY(st) == DIR_KEY(old)
                if unchanged and not _opaque(upper / path[1:]):
                    continue  # copied up only because something below it changed
            _record(found, path, ChangeKind.ADD if old is None else ChangeKind.MODIFY)
    return [Change(path, kind) for path, kind in sorted(found.items())]


def _record(found: dict[str, ChangeKind], path: str, kind: ChangeKind) -> None:
    found[path] = kind
    if kind != ChangeKind.MODIFY:  # an added or deleted entry modifies its directory
        parent = os.path.dirname(path)
        if parent != "/" and parent not in found:
            found[parent] = ChangeKind.MODIFY


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE, follow_symlinks=False) == b"y"
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return False
        raise


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
