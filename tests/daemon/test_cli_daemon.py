"""The dockyard CLI against a real daemon: output, exit codes, plugin jobs with no other code."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.daemon.conftest import DOCKYARD, Daemon, start


def test_info_and_version(daemon: Daemon) -> None:
    info = daemon.cli("info")
    assert info.returncode == 0, info.stderr
    assert f"DockerRootDir: {daemon.data_root}" in info.stdout
    version = daemon.cli("version")
    assert version.returncode == 0 and "ApiVersion: 1.45" in version.stdout
    as_json = json.loads(daemon.cli("info", "--json").stdout)
    assert as_json["ExecRoot"] == str(daemon.exec_root)


def test_job_commands_lists_every_job(daemon: Daemon) -> None:
    result = daemon.cli("job", "commands", "--json")
    assert result.returncode == 0, result.stderr
    names = {json.loads(line)["name"] for line in result.stdout.splitlines()}
    assert {"commands", "jobs", "cancel", "version", "info", "serveapi", "sleep"} <= names
    table = daemon.cli("jobs", "ls")
    assert table.stdout.splitlines()[0].split() == ["NAME", "ARGS", "PARAMS", "DOC"]
    assert any(
        line.startswith("sleep ") and "seconds announce?" in line
        for line in table.stdout.splitlines()
    )


@pytest.mark.parametrize(
    ("argv", "code", "stderr"),
    [
        (["job", "nosuch"], 127, "no such job: nosuch"),
        (["job", "fail"], 4, "this job always fails"),
        (["job", "sleep"], 2, "seconds: required param is missing"),
        (["job", "sleep", "-p", "seconds=soon"], 2, "seconds: expected number"),
        (["job", "sleep", "-p", "seconds"], 2, "not key=value"),
        (["jobs", "cancel", "feedface"], 3, "no running job with id feedface"),
    ],
)
def test_errors_become_exit_codes(daemon: Daemon, argv: list[str], code: int, stderr: str) -> None:
    result = daemon.cli(*argv)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert stderr in result.stderr
    assert "Traceback" not in result.stderr


def test_job_records_and_params(daemon: Daemon) -> None:
    result = daemon.cli("job", "sleep", "-p", "seconds:=0", "-p", "announce=true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["0.0", "0.0"]
    as_json = daemon.cli("job", "sleep", "-p", "seconds=0", "--json")
    assert [json.loads(x) for x in as_json.stdout.splitlines()] == [{"slept": 0.0}]


def test_jobs_ps_history_and_cancel(daemon: Daemon) -> None:
    long = subprocess.Popen(
        [*DOCKYARD, "-H", daemon.hosts[0], "job", "sleep", "-p", "seconds=60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=daemon.env,
    )
    try:
        job_id = ""
        deadline = time.monotonic() + 10
        while not job_id and time.monotonic() < deadline:
            ps = daemon.cli("jobs", "ps", "--json")
            job_id = next(
                (
                    json.loads(x)["id"]
                    for x in ps.stdout.splitlines()
                    if json.loads(x)["name"] == "sleep"
                ),
                "",
            )
        assert job_id, "the sleep job never showed in jobs ps"
        ps_table = daemon.cli("jobs", "ps").stdout
        assert ps_table.split()[:4] == ["ID", "NAME", "ARGS", "STARTED"] and job_id in ps_table
        cancel = daemon.cli("jobs", "cancel", job_id)
        assert cancel.returncode == 0 and cancel.stdout.strip() == job_id
        _, err = long.communicate(timeout=10)
        assert long.returncode == 130 and "was cancelled" in err
    finally:
        if long.poll() is None:
            long.kill()
            long.wait()
    history = daemon.cli("jobs", "history", "-n", "3").stdout
    assert "cancelled" in history and job_id in history


def test_entry_point_plugin_runs_over_http_and_cli(daemon: Daemon) -> None:
    pytest.importorskip("dockyard_example", reason="the example plugin is installed by make test")
    jobs = {c["name"] for c in daemon.client().get("/jobs")}  # type: ignore[union-attr]
    assert {"hello", "countdown"} <= jobs
    records = list(daemon.client().run_job("hello", ["dock", "yard"], {"shout": True}))
    assert records[:2] == [{"greeting": "HELLO, DOCK"}, {"greeting": "HELLO, YARD"}]
    cli = daemon.cli("job", "hello", "world")
    assert cli.returncode == 0 and cli.stdout.strip() == "hello, world"
    countdown = daemon.cli("job", "countdown", "-p", "start=2", "-p", "interval=0")
    assert countdown.stdout.split() == ["2", "1", "0"]


def test_broken_plugins_do_not_stop_the_daemon(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = start(
        tmp_path / "d",
        "--plugin",
        "tests.plugins.broken",
        "--plugin",
        "tests.plugins.halfbroken",
        "--plugin",
        "tests.plugins.slow",
    )
    daemons.append(d)
    assert (
        "plugin tests.plugins.broken failed to load: ImportError: this plugin is broken on purpose"
        in d.log
    )
    assert "plugin tests.plugins.halfbroken failed to load" in d.log
    assert "loaded " in d.log and "plugin(s)" in d.log
    info = d.client().get("/info")
    failed = info["JobPlugins"]["Failed"]  # type: ignore[index]
    assert sorted(failed) == ["tests.plugins.broken", "tests.plugins.halfbroken"]
    names = {c["name"] for c in d.client().get("/jobs")}  # type: ignore[union-attr]
    assert "sleep" in names and "orphan" not in names
