"""Docker's JSON progress messages, as pull and push send them.

A message is ``{"status": …}`` for a line of its own, or ``{"status", "id", "progressDetail",
"progress"}`` for a line about one layer (its short id), which a client redraws in place.
Byte counts are shown as Docker shows them (``1.024kB``, decimal units, four digits), with a
50-column bar. ``Throttle`` lets through at most one byte-count message per layer every 100 ms
(and always the last), so a fast download does not flood the client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

_UNITS: Final = ("B", "kB", "MB", "GB", "TB", "PB")
_WIDTH: Final = 50
INTERVAL: Final = 0.1

Emit = Callable[[dict[str, object]], None]


def human_size(size: float) -> str:
    """Bytes in Docker's decimal units with four significant digits (``1.024kB``)."""
    unit = 0
    while size >= 1000 and unit < len(_UNITS) - 1:
        size /= 1000
        unit += 1
    return f"{size:.4g}{_UNITS[unit]}"


def bar(current: int, total: int) -> str:
    """Docker's progress text: ``[=====>     ] 1.024kB/2.048kB``."""
    if total <= 0:
        return human_size(current)
    filled = min(_WIDTH, int(current * _WIDTH / total))
    box = "=" * filled + (">" + " " * (_WIDTH - filled - 1) if filled < _WIDTH else "")
    return f"[{box}] {human_size(current)}/{human_size(total)}"


def short(digest: str) -> str:
    """A layer's id in messages: the first 12 hex digits of its digest."""
    return digest.removeprefix("sha256:")[:12]


def status(text: str, id: str = "") -> dict[str, object]:
    """A status message (about one layer when *id* is given)."""
    if not id:
        return {"status": text}
    return {"status": text, "progressDetail": {}, "id": id}


def counted(text: str, id: str, current: int, total: int) -> dict[str, object]:
    """A byte-count message: ``Downloading``, ``Extracting``, ``Pushing``."""
    return {
        "status": text,
        "progressDetail": {"current": current, "total": total},
        "progress": bar(current, total),
        "id": id,
    }


class Throttle:
    """Byte-count messages for one layer, at most one per ``INTERVAL`` (and the last one)."""

    def __init__(self, emit: Emit, text: str, id: str, total: int) -> None:
        self._emit, self._text, self._id, self._total = emit, text, id, total
        self._last = 0.0

    def __call__(self, current: int) -> None:
        now = time.monotonic()
        if current < self._total and now - self._last < INTERVAL:
            return
        self._last = now
        self._emit(counted(self._text, self._id, current, self._total))
