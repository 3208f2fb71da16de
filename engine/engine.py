"""The Engine: a registry of named jobs that runs them and owns shutdown.

Glossary: a *handler* is an ``async def handler(job)``; its *params* are a frozen dataclass decoded
at the boundary; a *service* job (``serveapi``) runs until shutdown; a *service key* names a typed
object the daemon provides to handlers (``job.engine[GRAPHDB]``) so no handler needs a global.

Example::

    engine = Engine()
    engine.register("sleep", sleep, params=SleepParams)
    job = engine.job("sleep", seconds=1)
    await job.run()
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeVar, cast

from engine.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from engine.job import Handler, Job, JobSummary
from engine.params import ArgSpec, NoParams, decode

log = logging.getLogger("engine")

P = TypeVar("P")
T = TypeVar("T")
_NAME = re.compile(r"[a-z][a-z0-9_]*")
NO_ARGS: Final = ArgSpec()


class Key(Generic[T]):
    """A typed name for an object the daemon provides to handlers."""

    def __init__(self, name: str, type_: type[T]) -> None:
        self.name, self.type = name, type_

    def __repr__(self) -> str:
        return f"Key({self.name})"


class Recorder(Protocol):
    """Keeps the history of finished jobs (the GraphDB's ``jobs`` table in the daemon)."""

    def record(self, job: JobSummary) -> None:
        """Remember one finished job; must not block the event loop."""
        ...


@dataclass(frozen=True, slots=True)
class Registration:
    """A registered job: its handler, params type, args, one-line doc."""

    name: str
    handler: Handler[Any]
    params: type[object]
    args: ArgSpec
    doc: str
    service: bool


class Engine:
    """Registry of named jobs; runs them; owns shutdown."""

    def __init__(self, recorder: Recorder | None = None) -> None:
        self.recorder = recorder
        self._handlers: dict[str, Registration] = {}
        self._services: dict[Key[Any], object] = {}
        self._running: dict[str, Job[Any]] = {}
        self._hooks: list[Callable[[], Awaitable[None]]] = []
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.counts: dict[str, int] = {}

    def register(
        self,
        name: str,
        handler: Handler[P],
        *,
        params: type[P] = NoParams,  # type: ignore[assignment]
        args: ArgSpec = NO_ARGS,
        service: bool = False,
    ) -> None:
        """Register *handler* under *name*; AlreadyExists if the name is taken."""
        if not _NAME.fullmatch(name):
            raise InvalidArgument(f"name: job names are snake_case, got {name!r}")
        if name in self._handlers:
            raise AlreadyExists(f"job {name} is already registered")
        doc = (handler.__doc__ or "").strip().splitlines()
        self._handlers[name] = Registration(
            name, handler, params, args, doc[0] if doc else "", service
        )

    def unregister(self, name: str) -> None:
        """Forget job *name* (a plugin that failed half-way); NotFound if absent."""
        if self._handlers.pop(name, None) is None:
            raise NotFound(f"no such job: {name}")

    def names(self) -> list[str]:
        """Return every registered job name, sorted."""
        return sorted(self._handlers)

    def registration(self, name: str) -> Registration:
        """Return how job *name* was registered; NotFound if it was not."""
        try:
            return self._handlers[name]
        except KeyError:
            raise NotFound(f"no such job: {name}") from None

    def job(self, name: str, /, *args: str, **params: object) -> Job[Any]:
        """Build a job; InvalidArgument for bad args or params (unknown name: 127 on run)."""
        reg = self._handlers.get(name)
        if reg is None:
            return Job(self, secrets.token_hex(8), name, args, NoParams(), None)
        reg.args.check(name, args)
        return Job(self, secrets.token_hex(8), name, args, decode(reg.params, params), reg.handler)

    async def call(self, name: str, /, *args: str, **params: object) -> list[Mapping[str, object]]:
        """Run job *name* to its end and return the records it emitted."""
        job = self.job(name, *args, **params)
        records: list[Mapping[str, object]] = []
        job.stdout.attach(records.append)
        await job.run()
        return records

    def provide(self, key: Key[T], value: T) -> None:
        """Make *value* available to handlers as ``engine[key]``; AlreadyExists if set."""
        if key in self._services:
            raise AlreadyExists(f"{key.name} is already provided")
        self._services[key] = value

    def __getitem__(self, key: Key[T]) -> T:
        try:
            value = self._services[key]
        except KeyError:
            raise Unavailable(f"{key.name} is not available in this daemon") from None
        return cast(T, value)

    def running(self) -> list[Job[Any]]:
        """Return the jobs running now, oldest first."""
        return list(self._running.values())

    def cancel(self, job_id: str) -> Job[Any]:
        """Cancel the running job *job_id*; NotFound if no such job runs."""
        job = self._running.get(job_id)
        if job is None or not job.cancel():
            raise NotFound(f"no running job with id {job_id}")
        return job

    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run *hook* during shutdown, after jobs have drained."""
        self._hooks.append(hook)

    @property
    def closing(self) -> bool:
        """True once shutdown has begun: new jobs are refused."""
        return self._closing

    async def shutdown(self, grace: float = 15.0) -> None:
        """Refuse new jobs, wait up to *grace* for running ones, cancel the rest, run hooks."""
        if self._closing:
            return
        self._closing = True
        busy = [j for j in self._running.values() if not self._is_service(j)]
        if busy:
            log.info("shutdown: waiting up to %.1fs for %d job(s)", grace, len(busy))
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except TimeoutError:
                await self._cancel(j for j in self._running.values() if not self._is_service(j))
        await self._cancel(list(self._running.values()))
        results = await asyncio.gather(*(hook() for hook in self._hooks), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("shutdown hook failed: %s", result, exc_info=result)

    async def _cancel(self, jobs: Iterable[Job[Any]]) -> None:
        victims = [j for j in jobs if j.cancel()]
        for job in victims:
            log.info("shutdown: cancelled %s (%s)", job.name, job.id)
        if victims:
            await asyncio.wait([asyncio.ensure_future(j.wait()) for j in victims])

    def _is_service(self, job: Job[Any]) -> bool:
        reg = self._handlers.get(job.name)
        return reg is not None and reg.service

    def _admit(self, job: Job[Any]) -> None:
        if self._closing:
            raise Unavailable("the engine is shutting down; no new jobs are accepted")
        self._running[job.id] = job
        if not self._is_service(job):
            self._idle.clear()

    def _release(self, job: Job[Any]) -> None:
        self._running.pop(job.id, None)
        self.counts[job.state] = self.counts.get(job.state, 0) + 1
        if not any(not self._is_service(j) for j in self._running.values()):
            self._idle.set()
        if self.recorder is not None:
            self.recorder.record(job.summary())
