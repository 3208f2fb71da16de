"""The daemon's event log: Docker's event messages, a bounded ring of past ones, live readers.

Vocabulary: an *event* is one thing that happened to an object (container ``start``, image
``tag``, volume ``mount``); its *message* is Docker's JSON shape (``Type``, ``Action``,
``Actor{ID, Attributes}``, ``scope``, ``time``, ``timeNano``, plus the legacy ``status``, ``id``
and ``from`` keys that dockerd still fills for containers and images). The *ring* keeps the last
``RING_SIZE`` messages for ``since``/``until`` replays. A *subscription* is one live reader: a
bounded queue the log fills as events happen.

Lifecycle: ``subscribe(match)`` returns the ring as it is and a new subscription, atomically, so
a reader replays then follows with no gap and no duplicate; ``emit`` appends to the ring and
offers the message to every subscription; ``Subscription.close`` (or leaving its ``with``) ends
it. A reader that falls ``QUEUE_SIZE`` messages behind is dropped: its subscription is closed,
keeps what it had queued, and ``next`` returns None once that is read. A slow reader never
blocks ``emit`` and never grows memory without bound.

``emit`` may be called from any thread (an image load applies layers in a worker thread);
messages reach each subscription on its event loop.

Example::

    log = EventLog()
    with log.subscribe(EventFilter.parse({"type": ["container"]})) as (past, live):
        log.emit("container", "start", cid, {"image": "busybox", "name": "web"})
        message = await live.next(timeout=1.0)
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from engine.errors import InvalidArgument
from graph.reference import parse

Message = Mapping[str, object]
RING_SIZE: Final = 1024  # dockerd keeps 256
QUEUE_SIZE: Final = 1024  # messages a live reader may fall behind before it is dropped
LEGACY_TYPES: Final = frozenset({"container", "image"})  # dockerd fills status/id/from for these
# Docker's filter keys for /events. As in dockerd, every event is matched against each of the
# NAMED_TYPES keys given by its actor's id or name (a prefix will do), whatever its type.
FILTERS: Final = frozenset(
    {"config", "container", "daemon", "event", "image", "label", "network", "node", "plugin",
     "scope", "secret", "service", "type", "volume"}
)  # fmt: skip
# ``event=exec_start`` matches ``exec_start: sh -c …``: for these the event filter is a prefix.
PREFIX_EVENTS: Final = frozenset({"exec_create", "exec_start", "health_status"})
NAMED_TYPES: Final = ("config", "container", "daemon", "network", "node", "plugin", "secret",
                      "service", "volume")  # fmt: skip


def message(
    type_: str, action: str, actor: str, attributes: Mapping[str, str], time_ns: int
) -> dict[str, object]:
    """Docker's event message for one event at *time_ns* (nanoseconds since the epoch)."""
    attrs = {str(k): str(v) for k, v in attributes.items()}
    out: dict[str, object] = {}
    if type_ in LEGACY_TYPES:
        out.update(status=action, id=actor)
        if type_ == "container" and attrs.get("image"):
            out["from"] = attrs["image"]
    out.update(Type=type_, Action=action, Actor={"ID": actor, "Attributes": attrs})
    out.update(scope="local", time=time_ns // 1_000_000_000, timeNano=time_ns)
    return out


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Docker's event filters: values of one key are alternatives, keys must all match."""

    args: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, filters: Mapping[str, Sequence[str]]) -> EventFilter:
        """Build a filter from the decoded ``filters`` param; InvalidArgument for unknown keys."""
        unknown = sorted(set(filters) - FILTERS)
        if unknown:
            raise InvalidArgument(f"filters: invalid filter '{unknown[0]}'")
        return cls({k: tuple(v) for k, v in filters.items() if v})

    def __call__(self, m: Message) -> bool:
        """Whether message *m* passes every filter key."""
        actor = m.get("Actor")
        attrs = actor.get("Attributes", {}) if isinstance(actor, Mapping) else {}
        actor_id = str(actor.get("ID", "")) if isinstance(actor, Mapping) else ""
        assert isinstance(attrs, Mapping)
        return (
            self._event(str(m.get("Action", "")))
            and self._exact("type", str(m.get("Type", "")))
            and self._exact("scope", str(m.get("scope", "")))
            and all(self._named(key, actor_id, str(attrs.get("name", ""))) for key in NAMED_TYPES)
            and self._image(str(m.get("Type", "")), actor_id, attrs)
            and self._labels(attrs)
        )

    def _exact(self, key: str, *sources: str) -> bool:
        values = self.args.get(key)
        return not values or any(s in values for s in sources)

    def _fuzzy(self, key: str, *sources: str) -> bool:
        values = self.args.get(key)
        return not values or any(s.startswith(v) for s in sources for v in values)

    def _event(self, action: str) -> bool:
        if PREFIX_EVENTS & set(self.args.get("event", ())):
            return self._fuzzy("event", action)
        return self._exact("event", action)

    def _named(self, key: str, actor_id: str, name: str) -> bool:
        return self._fuzzy(key, actor_id, name)

    def _image(self, type_: str, actor_id: str, attrs: Mapping[str, object]) -> bool:
        name = str(attrs.get("name" if type_ == "image" else "image", ""))
        return self._exact("image", actor_id, name, _repository(actor_id), _repository(name))

    def _labels(self, attrs: Mapping[str, object]) -> bool:
        for item in self.args.get("label", ()):
            key, sep, value = item.partition("=")
            if key not in attrs or (sep and attrs[key] != value):
                return False
        return True


def _repository(name: str) -> str:
    """The familiar repository of an image name, without tag or digest (``busybox``)."""
    if not name:
        return name
    try:
        ref = parse(name)
    except InvalidArgument:
        return name
    return dataclasses.replace(ref, tag="", digest="").familiar


class Subscription:
    """One live reader of the log; see the module docstring."""

    def __init__(self, log: EventLog, match: Callable[[Message], bool], limit: int) -> None:
        self._log, self._match = log, match
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Message] = asyncio.Queue(limit)
        self.dropped = False  # it fell too far behind and was closed
        self.closed = False

    def offer(self, m: Message) -> None:
        """Queue *m* if it matches; drop this reader if its queue is full (event loop only)."""
        if self.closed or not self._match(m):
            return
        try:
            self._queue.put_nowait(m)
        except asyncio.QueueFull:
            self.dropped = True
            self.close()

    def deliver(self, m: Message) -> None:
        """Offer *m* from any thread."""
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self.offer(m)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.offer, m)

    async def next(self, timeout: float | None = None) -> Message | None:
        """The next message; None after *timeout* seconds, or once closed and read empty."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        if self.closed:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        """Stop receiving messages (what is queued can still be read)."""
        self.closed = True
        self._log.unsubscribe(self)


class EventLog:
    """The ring of past messages and the live subscriptions; see the module docstring."""

    def __init__(self, size: int = RING_SIZE, queue_size: int = QUEUE_SIZE) -> None:
        self._ring: collections.deque[Message] = collections.deque(maxlen=size)
        self._subscriptions: list[Subscription] = []
        self._queue_size = queue_size
        self._lock = threading.Lock()

    def emit(
        self, type_: str, action: str, actor: str, attributes: Mapping[str, str] | None = None
    ) -> Message:
        """Record one event now and hand it to every live reader; return its message."""
        with self._lock:
            m = message(type_, action, actor, attributes or {}, time.time_ns())
            self._ring.append(m)
            readers = list(self._subscriptions)
        for reader in readers:
            reader.deliver(m)
        return m

    def past(self) -> list[Message]:
        """The messages in the ring, oldest first."""
        with self._lock:
            return list(self._ring)

    @contextmanager
    def subscribe(
        self, match: Callable[[Message], bool] = lambda m: True
    ) -> Iterator[tuple[list[Message], Subscription]]:
        """The ring now and a live subscription to what *match* accepts, closed on exit."""
        with self._lock:
            reader = Subscription(self, match, self._queue_size)
            self._subscriptions.append(reader)
            past = list(self._ring)
        try:
            yield past, reader
        finally:
            reader.close()

    def unsubscribe(self, reader: Subscription) -> None:
        """Forget *reader* (no error if it is gone already)."""
        with self._lock:
            if reader in self._subscriptions:
                self._subscriptions.remove(reader)

    @property
    def readers(self) -> int:
        """How many live subscriptions there are."""
        with self._lock:
            return len(self._subscriptions)
