"""A test plugin: ``sleep`` (long, cancellable, streams a record first) and ``fail``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from engine import ArgSpec, Engine, FailedPrecondition, Job


@dataclass(frozen=True, slots=True)
class SleepParams:
    seconds: float
    announce: bool = False


async def sleep(job: Job[SleepParams]) -> None:
    """Sleep for the given seconds; with announce, emit a record first."""
    if job.params.announce:
        job.emit({"sleeping": job.params.seconds})
    await asyncio.sleep(job.params.seconds)
    job.emit({"slept": job.params.seconds})


async def fail(job: Job[object]) -> None:
    """Fail with FailedPrecondition."""
    raise FailedPrecondition("this job always fails")


async def wc(job: Job[object]) -> None:
    """Count the bytes of stdin; emit {"bytes": n, "args": [...]}."""
    total = 0
    while chunk := await job.stdin.read(65536):
        total += len(chunk)
    job.emit({"bytes": total, "args": list(job.args)})


def install(engine: Engine) -> None:
    engine.register("sleep", sleep, params=SleepParams)
    engine.register("fail", fail)
    engine.register("wc", wc, args=ArgSpec(rest="arg"))
