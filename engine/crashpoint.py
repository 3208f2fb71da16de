"""Crash points: named places where a test can make the daemon die at once (SIGKILL).

``ENGINE_CRASHPOINT=<name>[:<n>]`` in the daemon's environment makes the n-th arrival (the
first by default) at ``reach(name)`` kill the process, so crash-consistency tests can stop it
at an exact step (after the manifest, mid-blob, mid-extract, …) instead of at a random time.
Without the variable, ``reach`` costs a dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Final

_counts: dict[str, int] = {}
_lock: Final = threading.Lock()


def reach(name: str) -> None:
    """Die by SIGKILL here if ``ENGINE_CRASHPOINT`` names this point (and its count is due)."""
    wanted = os.environ.get("ENGINE_CRASHPOINT", "")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        due = _counts[name] == (int(nth) if nth.isdigit() else 1)
    if due:
        os.kill(os.getpid(), signal.SIGKILL)
