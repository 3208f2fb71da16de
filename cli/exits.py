"""Exit codes, from one enum, and the one place errors become them."""

from __future__ import annotations

import enum
from typing import Final

import click

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


class ExitStatus(enum.IntEnum):
    """What a dockyard command's exit code means."""

    OK = 0
    ERROR = 1  # the daemon reported an internal error
    USAGE = 2  # bad command line or invalid argument
    NOT_FOUND = 3  # the named object does not exist
    CONFLICT = 4  # already exists, or in the wrong state
    NOT_SUPPORTED = 5  # not possible on this host
    UNAVAILABLE = 69  # no daemon answered, or it is shutting down (sysexits EX_UNAVAILABLE)
    NO_SUCH_JOB = 127  # no job of that name, like a shell's "command not found"
    CANCELLED = 130  # the job was cancelled


EXIT_CODES: Final[dict[type[EngineError], ExitStatus]] = {
    JobNotFound: ExitStatus.NO_SUCH_JOB,
    NotFound: ExitStatus.NOT_FOUND,
    InvalidArgument: ExitStatus.USAGE,
    AlreadyExists: ExitStatus.CONFLICT,
    FailedPrecondition: ExitStatus.CONFLICT,
    NotSupported: ExitStatus.NOT_SUPPORTED,
    Unavailable: ExitStatus.UNAVAILABLE,
    Cancelled: ExitStatus.CANCELLED,
}


def exit_status(exc: EngineError) -> ExitStatus:
    """Return the exit status for *exc* by its class."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return ExitStatus.ERROR


class CommandError(click.ClickException):
    """An engine error on its way out of the CLI: message on stderr, exit code by class."""

    def __init__(self, exc: EngineError) -> None:
        super().__init__(str(exc))
        # click declares exit_code on the class; each instance carries its own here.
        self.exit_code = int(exit_status(exc))  # type: ignore[misc]
