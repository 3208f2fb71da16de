"""Jobs that describe containers: ``containers`` (ps), ``container_inspect``, ``top``, ``stats``
and ``changes``, in the Docker Engine API's shapes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from drivers.graph import Differ
from engine import ArgSpec, Engine, Job
from engine.errors import EngineError, FailedPrecondition, InvalidArgument
from graph.containers import Container
from jobs.images import unix_time
from jobs.links import inspect_links
from jobs.netsettings import networks_json, settings_json, summary_ports
from jobs.runtime import Runtime, now_rfc3339
from jobs.services import GRAPH_DRIVER, IMAGES, LAYERS, RUNTIME

log = logging.getLogger(__name__)

FILTERS: Final = frozenset(
    {"id", "name", "label", "status", "ancestor", "exited", "before", "since", "volume",
     "health", "is-task", "network", "publish", "expose"}
)  # fmt: skip
STATUSES: Final = frozenset({"created", "restarting", "running", "removing", "paused", "exited",
                             "dead"})  # fmt: skip


@functools.lru_cache(maxsize=8192)  # ps converts the same stamps on every call
def _since(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")[:26] + "+00:00").timestamp()
    except ValueError:
        return 0.0


def _ago(seconds: float) -> str:
    """Docker's human duration (``About a minute``, ``2 hours``)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = s // 60
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(s / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    return f"{hours // (24 * 7)} weeks"


def status_text(c: Container) -> str:
    """The STATUS column of ``docker ps``."""
    s, now = c.state, time.time()
    if s.restarting:
        return f"Restarting ({s.exit_code}) {_ago(now - _since(s.finished_at))} ago"
    if s.running:
        text = f"Up {_ago(now - _since(s.started_at))}"
        return text + " (Paused)" if s.paused else text
    if s.status == "removing":
        return "Removal In Progress"
    if s.dead:
        return "Dead"
    if not c.started_before and s.finished_at.startswith("0001"):
        return "Created"
    return f"Exited ({s.exit_code}) {_ago(now - _since(s.finished_at))} ago"


def summary(
    rt: Runtime, c: Container, image_name: str, size: tuple[int, int] | None
) -> dict[str, Any]:
    """One item of ``GET /containers/json``."""
    record = dict(_fixed(c, image_name))
    record["State"], record["Status"] = c.state.status, status_text(c)
    net = rt.network
    if net is not None:
        record["Ports"] = summary_ports(net, c)
        record["NetworkSettings"] = {"Networks": networks_json(net, c)}
    else:
        record["NetworkSettings"] = {"Networks": {}}
    if size is not None:
        record["SizeRw"], record["SizeRootFs"] = size
    return record


# The parts of a summary that do not change while a container exists (but for its name), kept
# per container: ``ps`` is polled, and rebuilding them was most of its cost.
_FIXED: dict[str, tuple[str, str, dict[str, Any]]] = {}


def _fixed(c: Container, image_name: str) -> dict[str, Any]:
    cached = _FIXED.get(c.id)
    if cached is not None and cached[0] == c.name and cached[1] == image_name:
        return cached[2]
    fixed: dict[str, Any] = {
        "Id": c.id,
        "Names": ["/" + c.name],
        "Image": image_name,
        "ImageID": c.image,
        "Command": " ".join([c.path, *c.args]).strip(),
        "Created": unix_time(c.created),
        "Ports": [],
        "Labels": c.config.get("Labels") or {},
        "State": "",
        "Status": "",
        "HostConfig": {"NetworkMode": c.host_config.get("NetworkMode", "none")},
        "Mounts": c.mounts,
    }
    if len(_FIXED) > 4096:  # containers come and go; drop the lot now and then
        _FIXED.clear()
    _FIXED[c.id] = (c.name, image_name, fixed)
    return fixed


@dataclass(frozen=True, slots=True)
class ListParams:
    all: bool = field(default=False, metadata={"doc": "show stopped containers too"})
    limit: int = field(default=-1, metadata={"doc": "show the N newest"})
    size: bool = field(default=False, metadata={"doc": "compute sizes"})
    filters: dict[str, list[str]] = field(
        default_factory=dict, metadata={"doc": "Docker's filters"}
    )


async def containers(job: Job[ListParams]) -> None:
    """Emit one summary per container, newest first (Docker's ``/containers/json`` items)."""
    rt, p = job.engine[RUNTIME], job.params
    unknown = sorted(set(p.filters) - FILTERS)
    if unknown:
        raise InvalidArgument(f"filters: invalid filter '{unknown[0]}'")
    for status in p.filters.get("status", []):
        if status not in STATUSES:
            raise InvalidArgument(f"filters: invalid filter 'status={status}'")
    if p.filters.get("ancestor"):  # resolving images reads the GraphDB
        chosen = await asyncio.to_thread(_select, job.engine, rt, p)
    else:  # the rest is in memory: a thread hop would cost more than the work
        chosen = _select(job.engine, rt, p)
    for c in chosen:
        size = await asyncio.to_thread(_size, job.engine, c) if p.size else None
        job.emit(summary(rt, c, str(c.config.get("Image") or c.image), size))


def _select(engine: Engine, rt: Runtime, p: ListParams) -> list[Container]:
    every = sorted(rt.containers.values(), key=lambda c: c.created, reverse=True)
    f = p.filters
    show_all = p.all or p.limit > 0 or bool(f.get("status") or f.get("exited"))
    bounds = {k: rt.get(v[0]).created for k, v in f.items() if k in ("before", "since") and v}
    ancestors: set[str] | None = None
    if f.get("ancestor"):
        ancestors = set()
        images = engine[IMAGES]
        for ref in f["ancestor"]:
            image = images.resolve(ref)
            ancestors |= {image.id, *images.descendants(image.id)}
    out = []
    for c in every:
        if not show_all and not c.state.running:
            continue
        if "before" in bounds and c.created >= bounds["before"]:
            continue
        if "since" in bounds and c.created <= bounds["since"]:
            continue
        if f.get("id") and not any(c.id.startswith(v) for v in f["id"]):
            continue
        if f.get("name") and not any(v.lstrip("/") in c.name for v in f["name"]):
            continue
        if f.get("status") and c.state.status not in f["status"]:
            continue
        if f.get("exited") and (c.state.running or str(c.state.exit_code) not in f["exited"]):
            continue
        if ancestors is not None and c.image not in ancestors:
            continue
        if f.get("label") and not _labelled(c, f["label"]):
            continue
        if f.get("volume") and not any(
            m.get("Name") in f["volume"] or m.get("Destination") in f["volume"] for m in c.mounts
        ):
            continue
        out.append(c)
    return out[: p.limit] if p.limit > 0 else out


def _labelled(c: Container, wanted: list[str]) -> bool:
    labels = c.config.get("Labels") or {}
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _size(engine: Engine, c: Container) -> tuple[int, int]:
    rw = rw_size(engine[LAYERS].differ, c.id)
    image = engine[IMAGES].get(c.image)
    return rw, rw + image.size


def rw_size(differ: Differ, id: str) -> int:
    """Bytes in a container's writable layer (0 when it cannot be read), as ``ps -s`` counts."""
    try:
        return int(differ.diff_size(id, f"{id}-init"))
    except (EngineError, OSError) as exc:
        log.info("no size for container %s: %s", id[:12], exc)
        return 0


async def container_inspect(job: Job[Any]) -> None:
    """Emit one container in Docker's ``/containers/{id}/json`` shape."""
    rt = job.engine[RUNTIME]
    c = rt.get(job.args[0])
    job.emit(inspect(rt, c, job.engine[GRAPH_DRIVER].name))


def _links(rt: Runtime, c: Container) -> list[str] | None:
    """``HostConfig.Links`` from the name graph (``/db:/web/db``): right after renames."""
    edges = []
    with contextlib.suppress(EngineError):
        for path, child_id in rt.store.names.children(f"/{c.name}"):
            child = rt.containers.get(child_id)
            if child is not None:
                edges.append((child.name, path))
    return inspect_links(edges) or None


def inspect(rt: Runtime, c: Container, driver: str) -> dict[str, Any]:
    """A container as ``docker inspect`` shows it."""
    bundle = rt.store.dir(c.id)
    return {
        "Id": c.id,
        "Created": c.created,
        "Path": c.path,
        "Args": c.args,
        "State": c.state.docker(),
        "Image": c.image,
        "ResolvConfPath": str(bundle / "resolv.conf"),
        "HostnamePath": str(bundle / "hostname"),
        "HostsPath": str(bundle / "hosts"),
        "LogPath": str(bundle / f"{c.id}-json.log"),
        "Name": "/" + c.name,
        "RestartCount": c.restart_count,
        "Driver": driver,
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": {**c.host_config, "Links": _links(rt, c)},
        "GraphDriver": {"Name": driver, "Data": None},
        "Mounts": c.mounts,
        "Config": c.config,
        "NetworkSettings": settings_json(rt.network, c) if rt.network else {"Networks": {}},
    }  # fmt: skip


@dataclass(frozen=True, slots=True)
class TopParams:
    ps_args: str = field(default="", metadata={"doc": "ps options (-ef by default)"})


async def top(job: Job[TopParams]) -> None:
    """Emit ``{"Titles", "Processes"}`` for the processes of a running container."""
    rt = job.engine[RUNTIME]
    c = rt.get(job.args[0])
    if not c.state.running:
        raise FailedPrecondition(f"Container {c.id} is not running")
    pids = await asyncio.to_thread(rt.execdriver.pids, c.state.monitor)
    job.emit(await asyncio.to_thread(_top, pids, job.params.ps_args))
    rt.event(c, "top")


def _top(pids: list[int], ps_args: str) -> dict[str, Any]:
    titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    rows = []
    ticks = os.sysconf("SC_CLK_TCK")
    boot = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    for pid in sorted(pids):
        proc = Path(f"/proc/{pid}")
        try:
            stat = (proc / "stat").read_bytes()
            status = (proc / "status").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        uid = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("Uid:")), "0")
        cpu = (int(fields[11]) + int(fields[12])) // ticks
        started = time.strftime("%H:%M", time.localtime(boot + int(fields[19]) / ticks))
        command = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        if not command:
            command = "[" + stat[stat.index(b"(") + 1 : stat.rindex(b")")].decode() + "]"
        clock = f"{cpu // 3600:02d}:{cpu // 60 % 60:02d}:{cpu % 60:02d}"
        rows.append([uid, str(pid), fields[1].decode(), "0", started, "?", clock, command])
    return {"Titles": titles, "Processes": rows}


@dataclass(frozen=True, slots=True)
class StatsParams:
    stream: bool = field(default=True, metadata={"doc": "keep sending every second"})
    one_shot: bool = field(default=False, metadata={"doc": "one sample without a pre-read"})


async def stats(job: Job[StatsParams]) -> None:
    """Emit Docker's stats records from the container's cgroup, once or every second."""
    rt = job.engine[RUNTIME]
    c = rt.get(job.args[0])
    previous: dict[str, Any] = {}
    while True:
        record = {"read": now_rfc3339(), "preread": previous.get("read", "0001-01-01T00:00:00Z"),
                  "name": "/" + c.name, "id": c.id, "num_procs": 0}  # fmt: skip
        if c.state.running:
            record.update(await asyncio.to_thread(rt.execdriver.stats, c.state.monitor))
        else:
            record.update({"memory_stats": {}, "cpu_stats": {}, "pids_stats": {},
                           "blkio_stats": {}})  # fmt: skip
        record["precpu_stats"] = previous.get("cpu_stats", {})
        record["networks"] = {}
        job.emit(record)
        previous = record
        if not job.params.stream or not c.state.running:
            return
        await asyncio.sleep(1.0)


async def changes(job: Job[Any]) -> None:
    """Emit ``{"Path", "Kind"}`` per change in the container's layer (0 modified, 1 added,
    2 deleted), as ``docker diff``."""
    rt = job.engine[RUNTIME]
    c = rt.get(job.args[0])
    driver = job.engine[GRAPH_DRIVER]
    found = await asyncio.to_thread(driver.changes, c.id, f"{c.id}-init")  # type: ignore[attr-defined]
    kinds = {"modify": 0, "add": 1, "delete": 2}
    for change in sorted(found, key=lambda ch: ch.path):
        job.emit({"Path": change.path, "Kind": kinds.get(str(change.kind), change.kind)})


def install(engine: Engine) -> None:
    """Register containers, container_inspect, top, stats and changes."""
    one = ArgSpec(("container",))
    engine.register("containers", containers, params=ListParams)
    engine.register("container_inspect", container_inspect, args=one)
    engine.register("top", top, params=TopParams, args=one)
    engine.register("stats", stats, params=StatsParams, args=one)
    engine.register("changes", changes, args=one)
