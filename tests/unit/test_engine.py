"""The Engine and Job, in the style of Docker's engine_test.go."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from engine import (
    AlreadyExists,
    ArgSpec,
    Engine,
    FailedPrecondition,
    InvalidArgument,
    Job,
    JobNotFound,
    JobSummary,
    Key,
    NotFound,
    Unavailable,
)
from jobs import introspect

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass(frozen=True, slots=True)
class SleepParams:
    seconds: float
    label: str = ""


async def sleep(job: Job[SleepParams]) -> None:
    """Sleep, then emit one record."""
    await asyncio.sleep(job.params.seconds)
    job.emit({"slept": job.params.seconds})


async def noop(job: Job[Any]) -> None:
    """Do nothing."""


class ListRecorder:
    def __init__(self) -> None:
        self.jobs: list[JobSummary] = []

    def record(self, job: JobSummary) -> None:
        self.jobs.append(job)


def test_register_twice_fails() -> None:
    engine = Engine()
    engine.register("noop", noop)
    with pytest.raises(AlreadyExists):
        engine.register("noop", noop)


def test_names_must_be_snake_case() -> None:
    with pytest.raises(InvalidArgument, match="snake_case"):
        Engine().register("Bad-Name", noop)


def test_unknown_job_gives_127() -> None:
    engine = Engine()
    job = engine.job("nosuchjob", "a")
    with pytest.raises(JobNotFound, match="no such job: nosuchjob"):
        run(job.run())
    assert job.status == 127 and job.state == "not found"


def test_ok_job_status_and_records() -> None:
    engine = Engine()
    engine.register("sleep", sleep, params=SleepParams)
    records = run(engine.call("sleep", seconds=0))
    assert records == [{"slept": 0.0}]


def test_job_runs_once() -> None:
    engine = Engine()
    engine.register("noop", noop)
    job = engine.job("noop")

    async def twice() -> None:
        await job.run()
        await job.run()

    with pytest.raises(Exception, match="already run"):
        run(twice())
    assert job.status == 0


def test_failing_job_has_status_1_and_reraises() -> None:
    async def fail(job: Job[Any]) -> None:
        raise FailedPrecondition("in use")

    engine = Engine()
    engine.register("fail", fail)
    job = engine.job("fail")
    with pytest.raises(FailedPrecondition):
        run(job.run())
    assert (job.state, job.status, str(job.error)) == ("error", 1, "in use")


def test_commands_lists_names_and_schemas() -> None:
    engine = Engine()
    introspect.install(engine)
    engine.register("sleep", sleep, params=SleepParams)
    records = run(engine.call("commands"))
    by_name = {r["name"]: r for r in records}
    assert sorted(by_name) == engine.names() == ["cancel", "commands", "jobs", "sleep"]
    schema = by_name["sleep"]["params"]
    assert schema["required"] == ["seconds"]  # type: ignore[index]
    assert schema["properties"]["seconds"] == {"type": "number"}  # type: ignore[index]
    assert by_name["sleep"]["doc"] == "Sleep, then emit one record."
    assert by_name["cancel"]["args"] == "ID"


def test_invalid_params_name_the_field() -> None:
    engine = Engine()
    engine.register("sleep", sleep, params=SleepParams)
    with pytest.raises(InvalidArgument, match="^seconds: expected number"):
        engine.job("sleep", seconds="soon")
    with pytest.raises(InvalidArgument, match="^seconds: required"):
        engine.job("sleep")
    with pytest.raises(InvalidArgument, match="^colour: unknown param"):
        engine.job("sleep", seconds=1, colour="red")
    with pytest.raises(InvalidArgument, match="^label: expected string"):
        engine.job("sleep", seconds=1, label=3)


def test_args_are_checked() -> None:
    engine = Engine()
    engine.register("one", noop, args=ArgSpec(("id",)))
    engine.register("many", noop, args=ArgSpec(rest="name"))
    with pytest.raises(InvalidArgument, match="^args: job one takes ID, got 0"):
        engine.job("one")
    with pytest.raises(InvalidArgument, match="got 2"):
        engine.job("one", "a", "b")
    assert engine.job("many", "a", "b", "c").args == ("a", "b", "c")


def test_job_after_shutdown_is_refused() -> None:
    engine = Engine()
    engine.register("noop", noop)

    async def scenario() -> None:
        await engine.shutdown(grace=1)
        await engine.job("noop").run()

    with pytest.raises(Unavailable, match="shutting down"):
        run(scenario())


def test_shutdown_waits_for_running_job_within_grace() -> None:
    engine = Engine()
    engine.register("sleep", sleep, params=SleepParams)
    order: list[str] = []

    async def hook() -> None:
        order.append("hook")

    engine.on_shutdown(hook)

    async def scenario() -> Job[Any]:
        job = engine.job("sleep", seconds=0.3)
        job.stdout.attach(lambda r: order.append("record"))
        task = asyncio.ensure_future(job.run())
        await asyncio.sleep(0.05)
        await engine.shutdown(grace=5)
        await task
        return job

    job = run(scenario())
    assert job.state == "ok"
    assert order == ["record", "hook"]  # the job finished before the hooks ran


def test_shutdown_cancels_jobs_past_the_grace() -> None:
    engine = Engine()
    engine.register("sleep", sleep, params=SleepParams)

    async def scenario() -> tuple[Job[Any], float]:
        job = engine.job("sleep", seconds=30)
        task = asyncio.ensure_future(job.run())
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await engine.shutdown(grace=0.2)
        await asyncio.wait([task])
        return job, loop.time() - start

    job, took = run(scenario())
    assert job.state == "cancelled" and job.status == 1
    assert took < 5


def test_service_jobs_run_until_the_others_drained() -> None:
    engine = Engine()
    engine.register("sleep", sleep, params=SleepParams)
    seen: list[str] = []

    async def service(job: Job[Any]) -> None:
        """Run until cancelled."""
        try:
            await asyncio.Future()
        finally:
            seen.append(f"service stopped, sleep {sleeper.state}")

    engine.register("service", service, service=True)
    sleeper = engine.job("sleep", seconds=0.2)

    async def scenario() -> None:
        svc = asyncio.ensure_future(engine.job("service").run())
        task = asyncio.ensure_future(sleeper.run())
        await asyncio.sleep(0.05)
        await engine.shutdown(grace=5)
        await asyncio.wait([svc, task])

    run(scenario())
    assert seen == ["service stopped, sleep ok"]


def test_cancel_stops_a_long_job() -> None:
    recorder = ListRecorder()
    engine = Engine(recorder=recorder)
    engine.register("sleep", sleep, params=SleepParams)
    introspect.install(engine)

    async def scenario() -> tuple[Job[Any], list[Any]]:
        job = engine.job("sleep", seconds=30)
        task = asyncio.ensure_future(job.run())
        await asyncio.sleep(0.05)
        assert [j.id for j in engine.running()] == [job.id]
        records = await engine.call("cancel", job.id)
        await asyncio.wait([task])
        return job, records

    job, records = run(scenario())
    assert job.state == "cancelled" and "cancelled" in str(job.error)
    assert records == [{"id": job.id, "name": "sleep", "state": "cancelled"}]
    assert [(j.name, j.state) for j in recorder.jobs] == [("sleep", "cancelled"), ("cancel", "ok")]
    assert engine.running() == []


def test_cancel_unknown_id() -> None:
    with pytest.raises(NotFound):
        Engine().cancel("feedface")


def test_service_keys() -> None:
    engine = Engine()
    key: Key[list[int]] = Key("numbers", list)
    with pytest.raises(Unavailable, match="numbers is not available"):
        engine[key]
    engine.provide(key, [1])
    assert engine[key] == [1]
    with pytest.raises(AlreadyExists):
        engine.provide(key, [2])


def test_history_gets_every_finished_job() -> None:
    recorder = ListRecorder()
    engine = Engine(recorder=recorder)
    engine.register("sleep", sleep, params=SleepParams)
    run(engine.call("sleep", seconds=0, label="x"))
    with pytest.raises(JobNotFound):
        run(engine.call("nope"))
    first, second = recorder.jobs
    assert (first.name, first.state, first.status, dict(first.params)) == (
        "sleep",
        "ok",
        0,
        {"seconds": 0.0, "label": "x"},
    )
    assert first.started is not None and first.ended is not None and first.ended >= first.started
    assert (second.name, second.state, second.status) == ("nope", "not found", 127)
