"""The dockyard CLI without a daemon: help everywhere, the no-daemon message, exit codes."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cli.exits import ExitStatus, exit_status
from cli.jobs import parse_param
from cli.main import cli
from engine import errors


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            found += all_commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


COMMANDS = all_commands(cli)


def test_every_command_is_covered() -> None:
    names = {" ".join(c) for c in COMMANDS}
    expected = {"", "daemon", "job", "jobs", "jobs ls", "jobs ps", "jobs history", "jobs cancel"}
    assert expected | {"version", "info"} <= names


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "dockyard")
def test_help(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    if command and command != ("jobs",):
        example = result.output.split("Example: ", 1)[1]
        assert "dockyard " in example.splitlines()[0]


@pytest.mark.parametrize(
    "argv", [["info"], ["version"], ["jobs", "ls"], ["job", "commands"], ["jobs", "cancel", "x"]]
)
def test_no_daemon_says_so_in_one_line(tmp_path: Path, argv: list[str]) -> None:
    sock = tmp_path / "nobody.sock"
    result = CliRunner().invoke(cli, ["-H", f"unix://{sock}", *argv])
    assert result.exit_code == ExitStatus.UNAVAILABLE == 69
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert f"cannot connect to the dockyard daemon at unix://{sock}" in lines[0]
    assert "dockyard daemon" in lines[0]


def test_host_from_environment(tmp_path: Path) -> None:
    sock = tmp_path / "env.sock"
    result = CliRunner().invoke(cli, ["info"], env={"DOCKYARD_HOST": f"unix://{sock}"})
    assert result.exit_code == 69 and str(sock) in result.output


def test_refused_tcp_port_is_unreachable() -> None:
    result = CliRunner().invoke(cli, ["-H", "tcp://127.0.0.1:1", "info"])
    assert result.exit_code == 69 and "tcp://127.0.0.1:1" in result.output


def test_bad_host_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["-H", "ftp://x", "info"])
    assert result.exit_code == ExitStatus.USAGE and "host: ftp://x" in result.output


def test_misuse_exits_2() -> None:
    assert CliRunner().invoke(cli, ["jobs", "cancel"]).exit_code == 2
    assert CliRunner().invoke(cli, ["no-such-command"]).exit_code == 2


def test_parse_param() -> None:
    assert parse_param("name=web") == ("name", "web")
    assert parse_param("n:=5") == ("n", 5)
    assert parse_param('tags:=["a"]') == ("tags", ["a"])
    assert parse_param("eq=a=b") == ("eq", "a=b")
    with pytest.raises(errors.InvalidArgument, match="not key=value"):
        parse_param("novalue")
    with pytest.raises(errors.InvalidArgument, match="^n: invalid JSON"):
        parse_param("n:={")


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.JobNotFound("x"), 127),
        (errors.NotFound("x"), 3),
        (errors.InvalidArgument("x"), 2),
        (errors.AlreadyExists("x"), 4),
        (errors.FailedPrecondition("x"), 4),
        (errors.NotSupported("x"), 5),
        (errors.Unavailable("x"), 69),
        (errors.Cancelled("x"), 130),
        (errors.EngineError("x"), 1),
    ],
)
def test_exit_codes_by_class(exc: errors.EngineError, code: int) -> None:
    assert exit_status(exc) == code


def test_error_kinds_round_trip() -> None:
    for name, cls in errors.KINDS.items():
        rebuilt = errors.from_kind(errors.kind_of(cls("m")), "m")
        assert type(rebuilt) is cls and errors.kind_of(rebuilt) == name
    assert type(errors.from_kind("Bogus", "m")) is errors.EngineError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", ("busybox", "")),
        ("busybox:1.36", ("busybox", "1.36")),
        ("localhost:5000/a/b", ("localhost:5000/a/b", "")),
        ("localhost:5000/a/b:tag", ("localhost:5000/a/b", "tag")),
    ],
)
def test_split_reference(text: str, expected: tuple[str, str]) -> None:
    from cli.images import split_reference

    assert split_reference(text) == expected


def test_human_units() -> None:
    from cli.render import human_ago, human_size

    assert [human_size(n) for n in (0, 999, 1000, 4_261_550, 2_000_000_000)] == [
        "0B",
        "999B",
        "1kB",
        "4.26MB",
        "2GB",
    ]
    assert human_ago(100, now=100.5) == "Less than a second ago"
    assert human_ago(0, now=3 * 3600 + 5) == "3 hours ago"
    assert human_ago(0, now=60) == "1 minute ago"
