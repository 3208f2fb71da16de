"""The engine's closed set of error classes.

Every failure a caller can act on is one of these classes (or a domain subclass that puts the
noun first, e.g. ``ImageNotFound(NotFound)``). They are mapped in exactly two places: ``server/``
turns them into HTTP statuses and the CLI turns them into exit codes. Nothing matches message text.
"""

from __future__ import annotations

from typing import Final


class EngineError(Exception):
    """Base for failures a caller can act on."""


class NotFound(EngineError):
    """The named object does not exist."""


class JobNotFound(NotFound):
    """No handler is registered under the job's name (job status 127)."""


class AlreadyExists(EngineError):
    """An object with that name or id exists already."""


class InvalidArgument(EngineError):
    """A value given by the caller is malformed; the message names the field."""


class FailedPrecondition(EngineError):
    """The object is in the wrong state for the request (running, in use, shutting down)."""


class Unavailable(EngineError):
    """A service the request needs cannot be reached or is not accepting work now."""


class Unauthenticated(EngineError):
    """The caller's credentials (or their absence) were refused, e.g. by a registry."""


class NotSupported(EngineError):
    """The feature or driver cannot work on this host; skippable when choosing drivers."""


class Cancelled(EngineError):
    """The job was cancelled before it finished (by id, by its client hanging up, or shutdown)."""


# The names that travel on the wire (HTTP header ``Dockyard-Error``, in-band error records) so a
# client can rebuild the class without looking at the message.
KINDS: Final[dict[str, type[EngineError]]] = {
    cls.__name__: cls
    for cls in (
        EngineError,
        NotFound,
        JobNotFound,
        AlreadyExists,
        InvalidArgument,
        FailedPrecondition,
        Unavailable,
        Unauthenticated,
        NotSupported,
        Cancelled,
    )
}


def kind_of(exc: BaseException) -> str:
    """Return the wire name of the nearest class of *exc* in the closed set ("EngineError" else)."""
    for cls in type(exc).__mro__:
        if cls.__name__ in KINDS and KINDS[cls.__name__] is cls:
            return cls.__name__
    return EngineError.__name__


def from_kind(kind: str, message: str) -> EngineError:
    """Rebuild an error from its wire name; unknown names give a plain EngineError."""
    return KINDS.get(kind, EngineError)(message)
