"""Docker's mount fields parsed: ``Binds``, ``Mounts``, ``Tmpfs`` and ``VolumesFrom``.

Each entry becomes a ``MountPlan``: what to mount (a host path, a volume by name, or a tmpfs),
where (a clean absolute path in the container: never ``/``, never inside ``/proc``), writable or
not, with which propagation, and the ``Mode`` text inspect shows. Messages follow dockerd's
(``invalid mount config for type "bind": field Source must not be empty``), prefixed with the
field's path. ``jobs.mountplan`` combines these into a container's mounts.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from engine.errors import InvalidArgument
from graph.volumes import validate_name
from jobs.jsonfields import Fields, invalid, unsupported

MountType = Literal["bind", "volume", "tmpfs"]
Propagation = Literal["rprivate", "private", "rslave", "slave", "rshared", "shared"]
PROPAGATIONS: Final = frozenset({"rprivate", "private", "rslave", "slave", "rshared", "shared"})
DEFAULT_TMPFS: Final = ("noexec", "nosuid", "nodev")  # what Docker puts before user options
_CONSISTENCY: Final = frozenset({"consistent", "cached", "delegated", "default"})
# The kinds of words a -v mode may hold, one word of each kind at most (moby's ValidMountMode).
_MODE_KINDS: Final = {
    "rw": "rw", "ro": "rw", "z": "label", "Z": "label", "nocopy": "copy",
    **{word: "propagation" for word in PROPAGATIONS},
    **{word: "consistency" for word in _CONSISTENCY},
}  # fmt: skip
_FLAGS: Final = frozenset(
    """
    exec noexec suid nosuid dev nodev sync async dirsync atime noatime diratime nodiratime
    relatime strictatime
    """.split()  # noqa: SIM905 (a word list reads best as text)
)
_OPPOSITE: Final = {"sync": "async", "async": "sync"}
_DATA: Final = {
    "size": re.compile(r"[0-9]+[kKmMgGtTpPeE%]?"),
    "nr_blocks": re.compile(r"[0-9]+[kKmMgG]?"),
    "nr_inodes": re.compile(r"[0-9]+[kKmMgG]?"),
    "mode": re.compile(r"[0-7]{1,4}"),
    "uid": re.compile(r"[0-9]+"),
    "gid": re.compile(r"[0-9]+"),
    "huge": re.compile(r"never|always|within_size|advise|deny|force"),
}


@dataclass(frozen=True, slots=True)
class MountPlan:
    """One mount to make: *source* is a host path (bind) or a volume name ("" = a new anonymous
    volume); *tmpfs* holds tmpfs flags and data; *mode* is Docker's inspect ``Mode``."""

    type: MountType
    source: str
    destination: str
    rw: bool = True
    propagation: str = ""
    tmpfs: tuple[str, ...] = ()
    mode: str = ""
    copy_data: bool = True  # a new volume starts with the image's files at its destination


def destination(text: str, path: str, kind: str = "volume") -> str:
    """The clean absolute container path *text*; InvalidArgument if relative, ``/`` or in /proc."""
    if not text.startswith("/") or "\x00" in text:
        raise invalid(
            path,
            f'invalid mount config for type "{kind}": '
            f"invalid mount path: '{text}' mount path must be absolute",
        )
    clean = "/" + posixpath.normpath(text).lstrip("/")
    if clean == "/":
        raise invalid(path, "invalid specification: destination can't be '/'")
    if clean == "/proc" or clean.startswith("/proc/"):
        raise invalid(path, f"{clean} cannot be mounted because it is located inside /proc")
    return clean


def volume_name(name: str, path: str) -> str:
    """*name* if it can name a local volume; InvalidArgument (the volume store's) otherwise."""
    try:
        validate_name(name)
    except InvalidArgument as exc:
        raise invalid(path, str(exc)) from None
    return name


def _mode_words(mode: str) -> list[str] | None:
    """The words of a ``-v`` mode, or None if it is not valid."""
    if not mode:
        return []
    words = mode.split(",")
    kinds = [_MODE_KINDS.get(word) for word in words]
    return None if None in kinds or len(set(kinds)) != len(kinds) else words


def parse_bind(spec: str, path: str) -> MountPlan:
    """One ``HostConfig.Binds`` entry: ``/host:/ctr[:mode]``, ``name:/ctr[:mode]`` or ``/ctr``."""
    parts = spec.split(":")
    if not parts[0] or len(parts) > 3 or (len(parts) == 2 and _mode_words(parts[1]) is not None):
        raise invalid(path, f"invalid volume specification: '{spec}'")
    source, target = ("", parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    mode = parts[2] if len(parts) == 3 else ""
    words = _mode_words(mode)
    if words is None:
        raise invalid(path, f"invalid mode: {mode}")
    kind: MountType = "bind" if source.startswith("/") else "volume"
    if not target:
        raise invalid(
            path, f'invalid mount config for type "{kind}": field Target must not be empty'
        )
    dest = destination(target, path, kind)
    propagation = next((w for w in words if w in PROPAGATIONS), "")
    if kind == "volume":
        if propagation:
            raise invalid(
                path,
                'invalid mount config for type "volume": field BindOptions must not be specified',
            )
        if source:
            volume_name(source, path)
        return MountPlan(
            "volume", source, dest, "ro" not in words, "", (), mode or "z", "nocopy" not in words
        )
    if "nocopy" in words:
        raise invalid(
            path, 'invalid mount config for type "bind": field VolumeOptions must not be specified'
        )
    source = "/" + posixpath.normpath(source).lstrip("/")
    return MountPlan("bind", source, dest, "ro" not in words, propagation or "rprivate", (), mode)


def tmpfs_options(text: str, path: str) -> tuple[tuple[str, ...], bool, str]:
    """Docker's tmpfs defaults merged with *text* (``size=64m,mode=1777,exec``): the options,
    whether the mount is writable, and its propagation."""
    merged, rw, propagation = list(DEFAULT_TMPFS), True, "rprivate"
    for opt in filter(None, text.split(",")):
        if opt in ("ro", "rw"):
            rw = opt == "rw"
        elif opt in PROPAGATIONS:
            propagation = opt
        elif opt in _FLAGS:
            opposite = _OPPOSITE.get(opt) or (opt[2:] if opt.startswith("no") else f"no{opt}")
            merged = [m for m in merged if m not in (opt, opposite)] + [opt]
        else:
            key, sep, value = opt.partition("=")
            pattern = _DATA.get(key)
            if not sep or pattern is None or not pattern.fullmatch(value):
                raise invalid(path, f'invalid tmpfs option "{opt}"')
            merged = [m for m in merged if not m.startswith(f"{key}=")] + [opt]
    return tuple(merged), rw, propagation


def parse_tmpfs(target: str, options: str, path: str) -> MountPlan:
    """One ``HostConfig.Tmpfs`` entry."""
    dest = destination(target, path, "tmpfs")
    opts, rw, propagation = tmpfs_options(options, path)
    return MountPlan("tmpfs", "", dest, rw, propagation, opts)


_OPTION_KEYS: Final = {"bind": "BindOptions", "volume": "VolumeOptions", "tmpfs": "TmpfsOptions"}


def parse_mount(f: Fields) -> MountPlan:
    """One ``HostConfig.Mounts`` entry (bind, volume or tmpfs)."""
    kind = f.text("Type")
    where = f'invalid mount config for type "{kind}": '
    if kind in ("npipe", "cluster", "image"):
        raise unsupported(f.at("Type"), f"mounts of type {kind} are not supported")
    if kind not in _OPTION_KEYS:
        raise invalid(f.path, where + "mount type unknown")
    if f.text("Consistency") not in _CONSISTENCY | {""}:
        raise invalid(f.at("Consistency"), f"unknown consistency: {f.text('Consistency')}")
    if not f.text("Target"):
        raise invalid(f.path, where + "field Target must not be empty")
    dest = destination(f.text("Target"), f.at("Target"), kind)
    for other, key in _OPTION_KEYS.items():
        if other != kind and f.given(key):
            raise invalid(f.path, where + f"field {key} must not be specified")
    if kind == "tmpfs":
        return _tmpfs_mount(f, dest, where)
    if kind == "volume":
        return _volume_mount(f, dest, where)
    return _bind_mount(f, dest, where)


def _tmpfs_mount(f: Fields, dest: str, where: str) -> MountPlan:
    if f.text("Source"):
        raise invalid(f.path, where + "field Source must not be specified")
    t = f.obj("TmpfsOptions")
    size, mode = t.integer("SizeBytes", low=0), t.integer("Mode", low=0, high=0o7777)
    if t.given("Options") and t.raw["Options"]:
        raise unsupported(t.at("Options"), "tmpfs options other than size and mode")
    text = ",".join(([f"size={size}"] if size else []) + ([f"mode={mode:o}"] if mode else []))
    opts, _, _ = tmpfs_options(text, f.path)
    return MountPlan("tmpfs", "", dest, not f.flag("ReadOnly"), "rprivate", opts)


def _volume_mount(f: Fields, dest: str, where: str) -> MountPlan:
    source, v = f.text("Source"), f.obj("VolumeOptions")
    if source:
        volume_name(source, f.at("Source"))
    elif f.flag("ReadOnly"):
        raise invalid(f.path, where + "must not set ReadOnly mode when using anonymous volumes")
    driver = v.obj("DriverConfig")
    if driver.text("Name") not in ("", "local") or driver.text_map("Options"):
        raise unsupported(v.at("DriverConfig"), "only the local driver without options")
    if v.text("Subpath"):
        raise unsupported(v.at("Subpath"), "volume subpaths are not supported")
    v.text_map("Labels")
    return MountPlan(
        "volume", source, dest, not f.flag("ReadOnly"), "", (), "z", not v.flag("NoCopy")
    )


def _bind_mount(f: Fields, dest: str, where: str) -> MountPlan:
    source, b = f.text("Source"), f.obj("BindOptions")
    if not source:
        raise invalid(f.path, where + "field Source must not be empty")
    propagation = b.text("Propagation") or "rprivate"
    if propagation not in PROPAGATIONS:
        raise invalid(b.at("Propagation"), where + f"invalid propagation mode: {propagation}")
    for name in ("NonRecursive", "ReadOnlyForceRecursive"):
        if b.flag(name):
            raise unsupported(b.at(name), "non-recursive and forced recursive binds")
    b.flag("ReadOnlyNonRecursive")  # what a read-only bind is here anyway: the top mount only
    if not source.startswith("/"):
        raise invalid(
            f.at("Source"), where + f"invalid mount path: '{source}' mount path must be absolute"
        )
    source = "/" + posixpath.normpath(source).lstrip("/")
    if not b.flag("CreateMountpoint") and not os.path.exists(source):
        raise invalid(f.at("Source"), where + f"bind source path does not exist: {source}")
    return MountPlan("bind", source, dest, not f.flag("ReadOnly"), propagation)


def explicit_mounts(host_config: Mapping[str, object]) -> list[MountPlan]:
    """The mounts of Binds, Mounts and Tmpfs, in that order; one per destination."""
    hc = Fields(host_config, "HostConfig")
    tmpfs = [
        parse_tmpfs(d, o, f"HostConfig.Tmpfs[{d}]") for d, o in (hc.text_map("Tmpfs") or {}).items()
    ]
    taken = {p.destination for p in tmpfs}
    plans = [
        _unique(parse_bind(spec, f"HostConfig.Binds[{i}]"), taken, f"HostConfig.Binds[{i}]")
        for i, spec in enumerate(hc.texts("Binds") or [])
    ]
    plans += [_unique(parse_mount(m), taken, m.path) for m in hc.objs("Mounts") or []]
    return plans + tmpfs


def _unique(plan: MountPlan, taken: set[str], path: str) -> MountPlan:
    if plan.destination in taken:
        raise invalid(path, f"Duplicate mount point: {plan.destination}")
    taken.add(plan.destination)
    return plan


def parse_volumes_from(spec: str, path: str) -> tuple[str, bool]:
    """One ``HostConfig.VolumesFrom`` entry: the container and whether mounts may stay writable."""
    name, sep, mode = spec.partition(":")
    words = _mode_words(mode)
    if not name or (sep and not mode):
        raise invalid(path, f"invalid volumes-from specification: '{spec}'")
    if words is None or "nocopy" in words:
        raise invalid(path, f"invalid mode: {mode}")
    if any(w in PROPAGATIONS for w in words):
        raise invalid(path, f'VolumesFrom can\'t specify propagation mode: "{mode}"')
    return name, "ro" not in words
