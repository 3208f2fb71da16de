"""An example dockyard job plugin.

Install it next to dockyard (``pip install -e contrib/plugins/dockyard-example``) and restart the
daemon: ``hello`` and ``countdown`` are then jobs like any other, over HTTP
(``POST /jobs/hello``) and from the CLI (``dockyard job hello world -p shout:=true``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from engine import ArgSpec, Engine, InvalidArgument, Job


@dataclass(frozen=True, slots=True)
class HelloParams:
    shout: bool = field(default=False, metadata={"doc": "upper-case the greeting"})


async def hello(job: Job[HelloParams]) -> None:
    """Greet each name given as an argument."""
    for name in job.args or ("world",):
        greeting = f"hello, {name}"
        job.emit({"greeting": greeting.upper() if job.params.shout else greeting})


@dataclass(frozen=True, slots=True)
class CountdownParams:
    start: int = field(default=3, metadata={"doc": "the number to count down from"})
    interval: float = field(default=1.0, metadata={"doc": "seconds between numbers"})


async def countdown(job: Job[CountdownParams]) -> None:
    """Emit start, start-1, ... 0, one record per interval (stop it: `dockyard jobs cancel`)."""
    p = job.params
    if p.start < 0 or p.interval < 0:
        raise InvalidArgument("start and interval must not be negative")
    for n in range(p.start, -1, -1):
        job.emit({"remaining": n})
        if n:
            await asyncio.sleep(p.interval)


def install(engine: Engine) -> None:
    """Register hello and countdown."""
    engine.register("hello", hello, params=HelloParams, args=ArgSpec(rest="name"))
    engine.register("countdown", countdown, params=CountdownParams)
