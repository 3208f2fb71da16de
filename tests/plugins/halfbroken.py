"""A plugin that registers one job, then fails: the job must be unregistered again."""

from __future__ import annotations

from engine import Engine, Job


async def orphan(job: Job[object]) -> None:
    """Should never be callable."""


def install(engine: Engine) -> None:
    engine.register("orphan", orphan)
    raise RuntimeError("failed half-way through install")
