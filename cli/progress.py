"""Render a Docker JSON progress stream (pull, push) the way the docker CLI does.

Vocabulary: a *message* is one decoded JSON object of the stream. One with an ``id`` (a short
layer id, or the tag for "Pulling from ...") is a *row*: its ``status`` says where that layer is
("Pulling fs layer", "Downloading", "Pull complete"), and during ``Downloading``, ``Extracting``
and ``Pushing`` its ``progressDetail`` carries ``current`` and ``total`` bytes. One without an
``id`` is a *line* ("Digest: sha256:...", "Status: ..."). Anything else (``aux`` results) is
handed back to the caller.

On a terminal the rows are a live display (rich): one per id with its status, and a bar with
bytes and speed while a transfer runs; lines are printed above the rows as they come. Elsewhere
(a pipe, a file, a log) each row is printed once per change of status, ``afc745890d3e: Pull
complete``, never once per byte count. rich is imported only on a terminal, so that commands
that never draw a bar start fast.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any, Final, TextIO

from engine.errors import EngineError

Message = Mapping[str, object]
BAR_STATUSES: Final = frozenset({"Downloading", "Extracting", "Pushing"})


def _error(message: Message) -> str | None:
    """The in-band error of *message*, if it carries one."""
    detail = message.get("errorDetail")
    if message.get("error"):
        return str(message["error"])
    if isinstance(detail, Mapping) and detail.get("message"):
        return str(detail["message"])
    return None


def _bytes(message: Message) -> tuple[int | None, int | None]:
    """(current, total) of a transfer message; None where it does not say."""
    detail = message.get("progressDetail")
    if not isinstance(detail, Mapping):
        return None, None
    current, total = detail.get("current"), detail.get("total")
    return (
        current if isinstance(current, int) else None,
        total if isinstance(total, int) and total > 0 else None,
    )


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def render(
    messages: Iterable[Message], out: TextIO | None = None, tty: bool | None = None
) -> list[dict[str, object]]:
    """Show *messages* on *out* (stdout), live on a terminal; return the ones that are not
    progress (``aux``); raise EngineError on an in-band error."""
    stream = out if out is not None else sys.stdout
    if tty if tty is not None else _isatty(stream):
        return _Live(stream).run(messages)
    return _plain(messages, stream)


def _plain(messages: Iterable[Message], out: TextIO) -> list[dict[str, object]]:
    rest: list[dict[str, object]] = []
    last: dict[str, str] = {}
    for message in messages:
        if (error := _error(message)) is not None:
            raise EngineError(error)
        status, ident = message.get("status"), message.get("id")
        if isinstance(message.get("stream"), str):
            out.write(str(message["stream"]))
        elif not isinstance(status, str) or "aux" in message:
            rest.append(dict(message))
            continue
        elif ident:
            if last.get(str(ident)) == status:
                continue
            last[str(ident)] = status
            out.write(f"{ident}: {status}\n")
        else:
            out.write(status + "\n")
        out.flush()
    return rest


class _Live:
    """The terminal display: one rich Progress task per id."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TransferSpeedColumn,
        )
        from rich.text import Text

        class WhileTransferring(ProgressColumn):
            """Show *inner* only while the row's status is a transfer."""

            def __init__(self, inner: ProgressColumn) -> None:
                super().__init__()
                self.inner = inner

            def render(self, task: Any) -> Any:
                return self.inner.render(task) if task.fields.get("bar") else Text("")

        self.text = Text
        self.console = Console(file=out, force_terminal=True, highlight=False)
        self.progress = Progress(
            TextColumn("{task.fields[ident]}: {task.description}", markup=False),
            WhileTransferring(BarColumn()),
            WhileTransferring(DownloadColumn()),
            WhileTransferring(TransferSpeedColumn()),
            console=self.console,
            refresh_per_second=8,
        )
        self.tasks: dict[str, Any] = {}
        self.statuses: dict[str, str] = {}

    def run(self, messages: Iterable[Message]) -> list[dict[str, object]]:
        """Show every message; stop the display even when the stream fails."""
        rest: list[dict[str, object]] = []
        with self.progress:
            for message in messages:
                if (error := _error(message)) is not None:
                    raise EngineError(error)
                status, ident = message.get("status"), message.get("id")
                if isinstance(message.get("stream"), str):
                    self.console.print(self.text(str(message["stream"]).rstrip("\n")))
                elif not isinstance(status, str) or "aux" in message:
                    rest.append(dict(message))
                elif ident:
                    self._row(str(ident), status, message)
                else:
                    self.console.print(self.text(status))
        return rest

    def _row(self, ident: str, status: str, message: Message) -> None:
        current, total = _bytes(message)
        bar = status in BAR_STATUSES and current is not None
        task = self.tasks.get(ident)
        if task is None:
            task = self.tasks[ident] = self.progress.add_task(status, ident=ident, total=None)
        if bar and self.statuses.get(ident) != status:  # a new transfer: fresh bytes and speed
            self.progress.reset(
                task, total=total, completed=current or 0, description=status, ident=ident, bar=True
            )
        else:
            self.progress.update(task, total=total, completed=current, description=status, bar=bar)
        self.statuses[ident] = status
