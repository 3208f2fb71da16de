"""Jobs about jobs: ``commands``, ``jobs`` and ``cancel``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from engine import ArgSpec, Engine, Job, JobSummary
from engine.params import schema
from jobs.services import HISTORY


async def commands(job: Job[Any]) -> None:
    """Emit one record per registered job: name, args usage, params schema, one-line doc."""
    engine = job.engine
    for name in engine.names():
        reg = engine.registration(name)
        job.emit(
            {
                "name": name,
                "args": reg.args.usage(),
                "params": schema(reg.params),
                "doc": reg.doc,
                "service": reg.service,
            }
        )


@dataclass(frozen=True, slots=True)
class JobsParams:
    which: Literal["all", "running", "history"] = field(
        default="all", metadata={"doc": "running jobs, finished ones, or both"}
    )
    limit: int = field(default=50, metadata={"doc": "how many finished jobs at most"})


async def jobs(job: Job[JobsParams]) -> None:
    """Emit the running jobs (oldest first), then the newest finished ones from the history."""
    p = job.params
    if p.which in ("all", "running"):
        for running in job.engine.running():
            job.emit(_record(running.summary()))
    if p.which in ("all", "history"):
        history = job.engine[HISTORY]
        for done in await asyncio.to_thread(history.recent, max(0, p.limit)):
            job.emit(_record(done))


async def cancel(job: Job[Any]) -> None:
    """Cancel the running job with the given id; emit its id and name."""
    target = job.engine.cancel(job.args[0])
    await target.wait()
    job.emit({"id": target.id, "name": target.name, "state": target.state})


def _record(s: JobSummary) -> dict[str, object]:
    duration = None if s.started is None else round((s.ended or _now()) - s.started, 6)
    return {
        "id": s.id,
        "name": s.name,
        "args": list(s.args),
        "params": dict(s.params),
        "state": s.state,
        "status": s.status,
        "error": s.error,
        "started": _iso(s.started),
        "ended": _iso(s.ended),
        "duration": duration,
    }


def _now() -> float:
    return datetime.now(UTC).timestamp()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def install(engine: Engine) -> None:
    """Register commands, jobs and cancel."""
    engine.register("commands", commands)
    engine.register("jobs", jobs, params=JobsParams)
    engine.register("cancel", cancel, args=ArgSpec(("id",)))
