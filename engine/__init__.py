"""dockyard's engine: named jobs with typed params, records out, errors from a closed set.

The engine knows nothing of Linux, HTTP or containers: it registers, looks up, runs, logs and
shuts down jobs. Subsystems register their jobs through an ``install(engine)`` function.

The error classes load at once; the rest loads on first use, so that a client that only needs
the errors (the ``dockyard`` CLI) does not pay for importing asyncio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from engine.errors import (
    AlreadyExists,
    Cancelled,
    EngineError,
    FailedPrecondition,
    InvalidArgument,
    JobNotFound,
    NotFound,
    NotSupported,
    Unavailable,
)
from engine.version import VERSION

if TYPE_CHECKING:
    from engine.engine import Engine, Key, Recorder, Registration
    from engine.job import Input, Job, JobSummary, Output, Record
    from engine.params import ArgSpec, NoParams

_LAZY = {
    "Engine": "engine.engine",
    "Key": "engine.engine",
    "Recorder": "engine.engine",
    "Registration": "engine.engine",
    "Input": "engine.job",
    "Job": "engine.job",
    "JobSummary": "engine.job",
    "Output": "engine.job",
    "Record": "engine.job",
    "ArgSpec": "engine.params",
    "NoParams": "engine.params",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = [
    "VERSION",
    "AlreadyExists",
    "ArgSpec",
    "Cancelled",
    "Engine",
    "EngineError",
    "FailedPrecondition",
    "Input",
    "InvalidArgument",
    "Job",
    "JobNotFound",
    "JobSummary",
    "Key",
    "NoParams",
    "NotFound",
    "NotSupported",
    "Output",
    "Record",
    "Recorder",
    "Registration",
    "Unavailable",
]
