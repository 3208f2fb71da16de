"""btrfs: every layer is a btrfs subvolume; a child is a writable snapshot of its parent.

Layout (as Docker's btrfs driver): ``<home>/subvolumes/<id>`` is the layer's root. Needs the
home dir on btrfs. Subvolumes are made and destroyed with ioctls on the directory fd
(BTRFS_IOC_SUBVOL_CREATE, BTRFS_IOC_SNAP_CREATE_V2, BTRFS_IOC_SNAP_DESTROY), never through the
btrfs tool. Snapshot creation is atomic, so no temporary names are needed. ``get`` returns the
subvolume path; nothing is mounted. Diffs come from ``NaiveDiffer``.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from drivers.graph.base import ChildIndex, layer_ids, validate_id
from drivers.graph.mounts import fs_magic
from engine.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, NotSupported

BTRFS_MAGIC: Final = 0x9123683E
# <linux/btrfs.h>: _IOW(0x94, nr, struct btrfs_ioctl_vol_args[_v2]); both structs are 4096 bytes.
IOC_SUBVOL_CREATE: Final = 0x5000940E
IOC_SNAP_DESTROY: Final = 0x5000940F
IOC_SNAP_CREATE_V2: Final = 0x50009417
VOL_ARGS: Final = struct.Struct("q4088s")  # __s64 fd; char name[BTRFS_PATH_NAME_MAX + 1]
VOL_ARGS_V2: Final = struct.Struct("qQQ32s4040s")  # fd, transid, flags, union[4], name
FIRST_FREE_OBJECTID: Final = 256  # the inode number of every subvolume's root directory


class BtrfsDriver:
    """GraphDriver storing each layer as a btrfs subvolume, children as snapshots."""

    name = "btrfs"

    def __init__(self, home: Path, options: Sequence[str] = ()) -> None:
        if options:
            raise InvalidArgument(f"btrfs: unknown options {list(options)!r}")
        existing = next(p for p in (home, *home.parents) if p.exists())
        if fs_magic(existing) != BTRFS_MAGIC:
            raise NotSupported(f"{existing} is not on btrfs")
        self.home = home
        self.subvolumes = home / "subvolumes"
        self.subvolumes.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        self.children = ChildIndex(home / "children")
        self._lock = threading.Lock()

    def create(self, id: str, parent: str = "") -> None:
        """Create layer *id* as a snapshot of *parent* (or empty); AlreadyExists / NotFound."""
        with self._lock:
            if self.exists(validate_id(id)):
                raise AlreadyExists(f"layer {id} already exists")
            if parent:
                if not self.exists(validate_id(parent, "parent")):
                    raise NotFound(f"parent layer {parent} not found")
                self.children.add(parent, id)
                src = os.open(self.subvolumes / parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    args = VOL_ARGS_V2.pack(src, 0, 0, b"", id.encode())
                    self._ioctl(IOC_SNAP_CREATE_V2, args, f"snapshot {parent} as {id}")
                finally:
                    os.close(src)
            else:
                self.children.discard(id)
                self._ioctl(IOC_SUBVOL_CREATE, VOL_ARGS.pack(0, id.encode()), f"subvolume {id}")
                os.chmod(self.subvolumes / id, 0o755)

    def remove(self, id: str) -> None:
        """Destroy subvolume *id* and any nested in it; NotFound, FailedPrecondition if a parent."""
        with self._lock:
            if not self.exists(validate_id(id)):
                raise NotFound(f"layer {id} not found")
            kids = self.children.children(id, self.exists)
            if kids:
                raise FailedPrecondition(f"layer {id} has {len(kids)} child layer(s)")
            destroy_subvolume(self.subvolumes, id)
            self.children.discard(id)

    def get(self, id: str) -> Path:
        """Return the subvolume of layer *id*; NotFound if absent."""
        if not self.exists(validate_id(id)):
            raise NotFound(f"layer {id} not found")
        return self.subvolumes / id

    def put(self, id: str) -> None:
        """Release a get() of *id* (nothing to unmount for btrfs)."""
        validate_id(id)

    def forget(self, id: str) -> None:
        """Drop the get()s of *id*: btrfs mounts nothing, so it holds nothing to drop."""
        validate_id(id)

    def exists(self, id: str) -> bool:
        """Return whether layer *id* exists."""
        return (self.subvolumes / validate_id(id)).is_dir()

    def ids(self) -> set[str]:
        """Return the id of every layer on disk."""
        return layer_ids(self.subvolumes)

    def status(self) -> list[tuple[str, str]]:
        """Return key/value pairs for `info`."""
        return [
            ("Backing Filesystem", "btrfs"),
            ("Root Dir", str(self.home)),
            ("Layers", str(len(self.ids()))),
        ]

    def cleanup(self) -> None:
        """Nothing to release: btrfs layers are never mounted separately."""

    def _ioctl(self, request: int, args: bytes, what: str) -> None:
        fd = os.open(self.subvolumes, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, request, bytearray(args))
        except OSError as exc:
            raise OSError(exc.errno, f"btrfs {what}: {exc.strerror}") from exc
        finally:
            os.close(fd)


def new(home: Path, options: Sequence[str]) -> BtrfsDriver:
    """Factory for the registry."""
    return BtrfsDriver(home, options)


def destroy_subvolume(parent_dir: Path, name: str) -> None:
    """Destroy subvolume *name* in *parent_dir*, nested subvolumes first (deepest first)."""
    root = parent_dir / name
    nested: list[Path] = []
    dev = os.lstat(root).st_dev
    for dirpath, dirnames, _ in os.walk(root):
        for d in list(dirnames):
            st = os.lstat(os.path.join(dirpath, d))
            # A nested subvolume shows up as a directory with inode 256 on another device
            # number; deleting the outer one would fail (ENOTEMPTY) while it is there.
            if stat.S_ISDIR(st.st_mode) and st.st_ino == FIRST_FREE_OBJECTID and st.st_dev != dev:
                nested.append(Path(dirpath, d))
                dirnames.remove(d)
    for sub in nested:
        destroy_subvolume(sub.parent, sub.name)
    fd = os.open(parent_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, IOC_SNAP_DESTROY, bytearray(VOL_ARGS.pack(0, os.fsencode(name))))
    except OSError as exc:
        raise OSError(exc.errno, f"btrfs destroy subvolume {root}: {exc.strerror}") from exc
    finally:
        os.close(fd)
