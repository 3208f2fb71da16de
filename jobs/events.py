"""Docker's events: the ``events`` job (``GET /events``) and the helpers other jobs log with.

The log itself (ring, subscriptions, filters, message shape) is ``jobs/eventlog.py``; the daemon
provides it as ``engine[EVENTS]`` and hands the same log to the container runtime, so the exits
applied while the daemon restores its containers (before any job is installed) are in the ring
too.

``since`` and ``until`` take what Docker's clients send: unix seconds with an optional fraction
(``1700000000``, ``1700000000.000000001``: the CLI converts every form to this one), and, for
dockyard's own CLI and for hand-written requests, what the docker CLI accepts before converting:
RFC 3339 (local time when it has no zone) and Go durations meaning "that long ago" (``10m``,
``1h30m``).

The ``events`` job first emits ``{"subscribed": true}`` once its params are valid and it is
subscribed (the route sends its headers then, before any event exists), then the stored messages
in [since, until] (only when either is given, as dockerd), then live ones until ``until`` passes,
its client goes away, or it falls too far behind and is dropped.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from engine import Engine, Job
from engine.errors import InvalidArgument, Unavailable
from graph.images import Image
from graph.volumes import Volume
from jobs.eventlog import EventFilter, EventLog, Message
from jobs.services import EVENTS

log = logging.getLogger(__name__)

_SECONDS: Final = re.compile(r"(-?[0-9]+)(?:\.([0-9]+))?")
_NUMBER_UNIT: Final = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)"  # Go durations
_DURATION: Final = re.compile(rf"([+-]?)((?:{_NUMBER_UNIT})+)")
_PART: Final = re.compile(_NUMBER_UNIT)
_UNIT_NS: Final = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9,
                   "m": 60 * 10**9, "h": 3600 * 10**9}  # fmt: skip
_FRACTION: Final = re.compile(r"(.*T[0-9:]+)\.([0-9]+)(.*)")


def parse_time(text: str, now_ns: int, name: str = "since") -> int:
    """Docker's ``since``/``until`` value as nanoseconds since the epoch (see the module
    docstring for the forms); InvalidArgument naming *name* otherwise."""
    text = text.strip()
    if m := _SECONDS.fullmatch(text):
        return int(m[1]) * 10**9 + int((m[2] or "")[:9].ljust(9, "0"))
    if m := _DURATION.fullmatch(text):
        ns = sum(round(float(n) * _UNIT_NS[unit]) for n, unit in _PART.findall(m[2]))
        return now_ns - ns if m[1] != "-" else now_ns + ns
    fraction = _FRACTION.fullmatch(text)
    base, digits = (fraction[1] + fraction[3], fraction[2]) if fraction else (text, "")
    try:
        moment = datetime.fromisoformat(base)
    except ValueError:
        raise InvalidArgument(
            f"{name}: cannot parse {text!r} as a time (unix seconds, RFC 3339) "
            "or a duration (10m, 1h30m)"
        ) from None
    return int(moment.timestamp()) * 10**9 + int(digits[:9].ljust(9, "0"))


@dataclass(frozen=True, slots=True)
class EventsParams:
    since: str = field(
        default="", metadata={"doc": "replay stored events from this time (unix seconds, "
                              "RFC 3339, or a duration ago: 10m)"}
    )  # fmt: skip
    until: str = field(default="", metadata={"doc": "stop streaming at this time (same forms)"})
    filters: dict[str, list[str]] = field(
        default_factory=dict,
        metadata={"doc": "type, event, container, image, volume, network, label, daemon, "
                  "scope (Docker's filters)"},
    )  # fmt: skip


async def events(job: Job[EventsParams]) -> None:
    """Stream Docker's event messages: stored ones in [since, until], then live ones."""
    p, now = job.params, time.time_ns()
    since = parse_time(p.since, now, "since") if p.since else None
    until = parse_time(p.until, now, "until") if p.until else None
    if since is not None and until is not None and until < since:
        raise InvalidArgument(
            f"since: `since` time ({p.since}) cannot be after `until` time ({p.until})"
        )
    match = EventFilter.parse(p.filters)
    low = since or 0
    with job.engine[EVENTS].subscribe(match) as (past, live):
        job.emit({"subscribed": True})
        if since is not None or until is not None:
            for stored in past:
                if _within(stored, low, until) and match(stored):
                    job.emit(stored)
        while until is None or time.time_ns() < until:
            timeout = None if until is None else (until - time.time_ns()) / 1e9
            m = await live.next(timeout)
            if m is None and live.closed:
                log.warning("events: job %s fell too far behind and was dropped", job.id)
                return
            if m is not None and _within(m, low, until):
                job.emit(m)


def _within(m: Message, low: int, high: int | None) -> bool:
    at = m.get("timeNano")
    assert isinstance(at, int)
    return at >= low and (high is None or at <= high)


def log_event(
    engine: Engine, type_: str, action: str, actor: str, attributes: Mapping[str, str] | None = None
) -> None:
    """Log one event on *engine*'s log; nothing when the engine keeps none (a tool, a test)."""
    try:
        events_ = engine[EVENTS]
    except Unavailable:
        return
    events_.emit(type_, action, actor, attributes)


def image_event(engine: Engine, action: str, image: Image | str, name: str = "") -> None:
    """Log an image event as dockerd: actor the image id; attributes its labels and ``name``
    (the reference acted on, else the id). *image* is the image, or its id once deleted."""
    labels: Mapping[str, str] = {}
    if isinstance(image, Image):
        config = image.json().get("config")
        labels = (config.get("Labels") or {}) if isinstance(config, dict) else {}
    image_id = image.id if isinstance(image, Image) else image
    log_event(engine, "image", action, image_id, {**labels, "name": name or image_id})


def volume_event(engine: Engine, action: str, volume: Volume) -> None:
    """Log a volume event as dockerd: actor the volume's name, attribute its ``driver``."""
    log_event(engine, "volume", action, volume.name, {"driver": volume.driver})


def install(engine: Engine) -> None:
    """Register ``events``; provide an event log where the daemon has not (a tool, a test)."""
    try:
        engine[EVENTS]
    except Unavailable:
        engine.provide(EVENTS, EventLog())
    # A stream runs until its client leaves: as a service job it does not hold up shutdown.
    engine.register("events", events, params=EventsParams, service=True)
