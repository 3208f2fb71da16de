"""The plan of a container's mounts, from Docker's fields to the driver's ``Mount``s.

Sources, in Docker's precedence (highest first):

- *explicit*: ``HostConfig.Binds``, ``HostConfig.Mounts`` and ``HostConfig.Tmpfs``; a destination
  appears once across the three ("Duplicate mount point");
- ``HostConfig.VolumesFrom`` (``container[:ro|rw]``): the other container's mounts; among
  these a later entry replaces an earlier one at the same destination;
- ``Config.Volumes`` (the image's VOLUMEs merged with the request's): a new anonymous volume each.

Lifecycle: create calls ``plan_mounts``; the daemon resolves each ``MountPlan`` to a host path
(creating volumes; an anonymous one gets its name then) and stores ``docker_mounts`` as the
container's ``Mounts`` (inspect's shape); start turns those into driver mounts (``spec_mounts``).
Plans come parents first (fewer path components first), as Docker mounts them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import cast

from drivers.exec.spec import Mount
from jobs.containermounts import (
    DEFAULT_TMPFS,
    PROPAGATIONS,
    MountPlan,
    Propagation,
    destination,
    explicit_mounts,
    parse_volumes_from,
)
from jobs.jsonfields import Fields, invalid, unsupported


def plan_mounts(
    config: Mapping[str, object],
    host_config: Mapping[str, object],
    *,
    volumes_from: Callable[[str], Sequence[Mapping[str, object]]],
) -> list[MountPlan]:
    """Every mount of a container, one per destination, parents before children.

    *volumes_from* returns another container's inspect ``Mounts`` by name or id."""
    plans = explicit_mounts(host_config)
    covered = {p.destination for p in plans}
    inherited: dict[str, MountPlan] = {}
    hc = Fields(host_config, "HostConfig")
    for i, spec in enumerate(hc.texts("VolumesFrom") or []):
        name, writable = parse_volumes_from(spec, f"HostConfig.VolumesFrom[{i}]")
        for j, raw in enumerate(volumes_from(name)):
            plan = _inherited(Fields(raw, f"{name}.Mounts[{j}]"), writable)
            if plan.destination not in covered:
                inherited.pop(plan.destination, None)
                inherited[plan.destination] = plan
    plans += inherited.values()
    covered |= set(inherited)
    volumes = Fields(config, "Config").obj("Volumes")
    for target in volumes.raw:
        dest = destination(target, f"Config.Volumes[{target}]")
        if dest not in covered:
            covered.add(dest)
            plans.append(MountPlan("volume", "", dest))
    return sorted(plans, key=lambda p: p.destination.count("/"))


def _inherited(m: Fields, writable: bool) -> MountPlan:
    kind = m.text("Type")
    dest = destination(m.text("Destination"), m.at("Destination"), kind)
    rw = m.flag("RW", True) and writable
    if kind == "tmpfs":
        return MountPlan("tmpfs", "", dest, rw, "rprivate", DEFAULT_TMPFS)
    if kind == "volume":
        return MountPlan("volume", m.text("Name"), dest, rw, m.text("Propagation"), (), "", False)
    if kind == "bind":
        return MountPlan("bind", m.text("Source"), dest, rw, m.text("Propagation") or "rprivate")
    raise unsupported(m.at("Type"), f"mounts of type {kind!r} cannot be shared")


def docker_mounts(
    plans: Sequence[MountPlan], resolved_sources: Sequence[str], volume_names: Sequence[str] = ()
) -> list[dict[str, object]]:
    """Inspect's ``Mounts`` for *plans*: *resolved_sources* holds each plan's host path, and
    *volume_names* each volume plan's name in order (default: the plan's own source)."""
    names = iter(volume_names)
    mounts: list[dict[str, object]] = []
    for plan, source in zip(plans, resolved_sources, strict=True):
        entry: dict[str, object] = {"Type": plan.type}
        if plan.type == "volume":
            entry["Name"] = next(names, "") or plan.source
            if not entry["Name"]:
                raise ValueError(f"anonymous volume at {plan.destination} has no name")
        entry["Source"] = "" if plan.type == "tmpfs" else source
        entry["Destination"] = plan.destination
        if plan.type == "volume":
            entry["Driver"] = "local"
        propagation = "" if plan.type == "tmpfs" else plan.propagation  # as Docker shows it
        entry.update(Mode=plan.mode, RW=plan.rw, Propagation=propagation)
        mounts.append(entry)
    return mounts


def spec_mounts(
    mounts: Sequence[Mapping[str, object]], host_config: Mapping[str, object]
) -> list[Mount]:
    """Driver mounts for a container's stored ``Mounts`` (tmpfs options come from HostConfig)."""
    tmpfs = {p.destination: p for p in explicit_mounts(host_config) if p.type == "tmpfs"}
    result = []
    for i, raw in enumerate(mounts):
        m = Fields(raw, f"Mounts[{i}]")
        dest, readonly = m.text("Destination"), not m.flag("RW", True)
        if m.text("Type") == "tmpfs":
            plan = tmpfs.get(dest, MountPlan("tmpfs", "", dest, tmpfs=DEFAULT_TMPFS))
            mode = _propagation(plan.propagation, m)
            result.append(Mount(dest, "tmpfs", "", readonly, plan.tmpfs, mode))
        else:
            mode = _propagation(m.text("Propagation"), m)
            result.append(Mount(dest, "bind", m.text("Source"), readonly, (), mode))
    return result


def _propagation(value: str, m: Fields) -> Propagation:
    if value and value not in PROPAGATIONS:
        raise invalid(m.at("Propagation"), f"invalid propagation mode: {value}")
    return cast(Propagation, value or "rprivate")
