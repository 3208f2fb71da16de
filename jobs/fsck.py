"""The ``fsck`` job: check the running daemon's store against its invariants (``graph.fsck``).

It emits one record per problem, ``{"Code": "I2", "Subject": <id or path>, "Detail": ...}``, then
``{"Problems": n}``; finding problems is a result, not a failure of the job. The daemon is
running, so ``tmp/`` and staged blobs (in-flight work) are not looked at; ``deep`` also re-hashes
every layer tar and cached blob, reading every byte of the store.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from engine import Engine, Job
from graph.fsck import check
from jobs.services import DAEMON, LAYERS


@dataclass(frozen=True, slots=True)
class FsckParams:
    deep: bool = field(
        default=False, metadata={"doc": "also re-hash every layer tar and blob (slow)"}
    )


async def fsck(job: Job[FsckParams]) -> None:
    """Check the store's invariants: one record per problem, then how many were found."""
    layers, data_root = job.engine[LAYERS], job.engine[DAEMON].data_root
    problems = await asyncio.to_thread(
        check, layers.db, layers, data_root, deep=job.params.deep, idle=False
    )
    for problem in problems:
        job.emit({"Code": problem.code, "Subject": problem.subject, "Detail": problem.detail})
    job.emit({"Problems": len(problems)})


def install(engine: Engine) -> None:
    """Register fsck."""
    engine.register("fsck", fsck, params=FsckParams)
