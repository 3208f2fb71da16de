"""The init layer: what the engine mounts onto, placed between an image and its container.

Every container gets a layer ``<id>-init`` on top of its image holding empty directories and
files at the places the engine mounts onto (``/proc``, ``/sys``, ``/dev``…, ``/etc/hosts``,
``/etc/hostname``, ``/etc/resolv.conf``) plus ``/.dockerenv``, so that mount targets are real
directories and files the engine made, never whatever an image put there (as Docker's
``daemon/initlayer``). Paths the image already has are left alone; the mount code resolves them
inside the root anyway. Everything is created through ``RootDir``, inside the layer root.
"""

from __future__ import annotations

import os
from typing import Final

from drivers.graph import GraphDriver
from graph.archive.rootdir import RootDir

DIRS: Final = ("proc", "sys", "dev", "dev/pts", "dev/shm", "dev/mqueue", "etc")
FILES: Final = ("etc/hosts", "etc/hostname", "etc/resolv.conf", ".dockerenv", "dev/console")


def populate(driver: GraphDriver, layer: str) -> None:
    """Create the placeholders in *layer* (an init layer just created)."""
    root = driver.get(layer)
    try:
        with RootDir(root) as rootdir:
            for rel in DIRS:
                _ensure(rootdir, rel, directory=True)
            for rel in FILES:
                _ensure(rootdir, rel, directory=False)
    finally:
        driver.put(layer)


def _ensure(rootdir: RootDir, rel: str, *, directory: bool) -> None:
    parent, _, name = rel.rpartition("/")
    with rootdir.makedirs(parent, entry=rel) as pfd:
        if RootDir.lstat(pfd, name) is not None:
            return  # the image's own entry, whatever it is: mounts resolve it inside the root
        if directory:
            os.mkdir(name, 0o755, dir_fd=pfd.fileno())
        else:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o755,
                         dir_fd=pfd.fileno())  # fmt: skip
            os.close(fd)
