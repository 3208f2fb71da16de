"""dockyard's engine: named jobs with typed params, records out, errors from a closed set.

The engine knows nothing of Linux, HTTP or containers: it registers, looks up, runs, logs and
shuts down jobs. Subsystems register their jobs through an ``install(engine)`` function.
"""

from engine.engine import Engine, Key, Recorder, Registration
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
from engine.job import Input, Job, JobSummary, Output, Record
from engine.params import ArgSpec, NoParams
from engine.version import VERSION

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
