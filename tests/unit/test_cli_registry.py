"""pull, push, login and logout without a daemon: ``Client.request`` is replaced by a fake that
records each request (method, path, JSON body, headers) and answers from a script, and the
user's config.json lives in a temporary ``$DOCKER_CONFIG``."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
from click.testing import CliRunner, Result

from cli import registry as registry_cli
from cli.client import Client
from cli.main import DockyardGroup
from engine import errors
from registry.credentials import DOCKER_HUB_KEY, AuthConfig, decode_header

DIGEST = "sha256:" + "ab" * 32
Unauthenticated: type[errors.EngineError] = getattr(errors, "Unauthenticated", errors.EngineError)


class FakeResponse:
    """What ``Client.request`` returns: a body to read, or lines to iterate."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, _size: int = -1) -> bytes:
        return self.data

    def read1(self, size: int = -1) -> bytes:
        data, self.data = self.data[:size], self.data[size:]
        return data

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.data.splitlines(keepends=True))


class FakeDaemon:
    """Records requests; answers each path (without its query) from *replies*."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, dict[str, str]]] = []
        self.replies: dict[str, bytes | errors.EngineError] = {}

    def request(self, method: str, path: str, body: object = None, *_: Any, **kw: Any) -> Any:
        self.calls.append((method, path, body, dict(kw.get("headers") or {})))
        reply = self.replies.get(path.split("?", 1)[0], b"")
        if isinstance(reply, errors.EngineError):
            raise reply
        return FakeResponse(reply)

    def auth(self, call: int = 0) -> AuthConfig:
        """The credentials sent with request number *call*."""
        return decode_header(self.calls[call][3]["X-Registry-Auth"])


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    fake = FakeDaemon()
    monkeypatch.setattr(Client, "request", lambda _self, *a, **k: fake.request(*a, **k))
    yield fake


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "dockercfg" / "config.json"


@click.group(cls=DockyardGroup)
@click.pass_context
def app(ctx: click.Context) -> None:
    ctx.obj = Client("unix:///nonexistent.sock")


for _command in registry_cli.COMMANDS:
    app.add_command(_command)


def run(config: Path, argv: list[str], stdin: str | None = None) -> Result:
    env = {"DOCKER_CONFIG": str(config.parent), "HOME": str(config.parent / "home")}
    return CliRunner().invoke(app, argv, input=stdin, env=env)


def stream(*messages: dict[str, object]) -> bytes:
    return b"".join(orjson.dumps(m) + b"\r\n" for m in messages)


def saved(config: Path, auths: dict[str, str]) -> None:
    config.parent.mkdir(parents=True, exist_ok=True)
    encoded = {k: {"auth": base64.b64encode(v.encode()).decode()} for k, v in auths.items()}
    config.write_text(json.dumps({"credsStore": "", "auths": encoded}))


PULL_STREAM = stream(
    {"status": "Pulling from library/busybox", "id": "latest"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "afc745890d3e"},
    {"status": "Downloading", "progressDetail": {"current": 5, "total": 9}, "id": "afc745890d3e"},
    {"status": "Downloading", "progressDetail": {"current": 9, "total": 9}, "id": "afc745890d3e"},
    {"status": "Pull complete", "progressDetail": {}, "id": "afc745890d3e"},
    {"status": f"Digest: {DIGEST}"},
    {"status": "Status: Downloaded newer image for busybox:latest"},
)


def test_pull_from_docker_hub(daemon: FakeDaemon, config: Path) -> None:
    daemon.replies["/images/create"] = PULL_STREAM
    saved(config, {DOCKER_HUB_KEY: "alice:pa:ss", "127.0.0.1:5000": "bob:x"})
    result = run(config, ["pull", "busybox"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "Using default tag: latest",
        "latest: Pulling from library/busybox",
        "afc745890d3e: Pulling fs layer",
        "afc745890d3e: Downloading",
        "afc745890d3e: Pull complete",
        f"Digest: {DIGEST}",
        "Status: Downloaded newer image for busybox:latest",
        "docker.io/library/busybox:latest",
    ]
    [(method, path, body, _)] = daemon.calls
    assert (method, path, body) == ("POST", "/images/create?fromImage=busybox&tag=latest", None)
    assert daemon.auth() == AuthConfig("alice", "pa:ss", DOCKER_HUB_KEY)


def test_pull_by_digest_quiet_with_platform(daemon: FakeDaemon, config: Path) -> None:
    daemon.replies["/images/create"] = PULL_STREAM
    saved(config, {"https://127.0.0.1:5000/v2/": "bob:secret", DOCKER_HUB_KEY: "alice:pw"})
    result = run(
        config, ["pull", "-q", "--platform", "linux/arm64/v8", f"127.0.0.1:5000/bb@{DIGEST}"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"127.0.0.1:5000/bb@{DIGEST}\n"
    path = daemon.calls[0][1]
    assert path == (
        "/images/create?fromImage=127.0.0.1%3A5000%2Fbb&tag=sha256%3A"
        + "ab" * 32
        + "&platform=linux%2Farm64%2Fv8"
    )
    assert daemon.auth() == AuthConfig("bob", "secret", "https://127.0.0.1:5000/v2/")


def test_pull_anonymous_sends_an_empty_auth(daemon: FakeDaemon, config: Path) -> None:
    daemon.replies["/images/create"] = PULL_STREAM
    result = run(config, ["pull", "-q", "localhost:5000/team/app:1.0"])
    assert result.exit_code == 0 and result.stdout == "localhost:5000/team/app:1.0\n"
    assert daemon.calls[0][1] == "/images/create?fromImage=localhost%3A5000%2Fteam%2Fapp&tag=1.0"
    assert daemon.calls[0][3] == {"X-Registry-Auth": "e30="}
    assert not config.exists()


def test_pull_in_band_error_exits_1(daemon: FakeDaemon, config: Path) -> None:
    message = "127.0.0.1:5000: filesystem layer verification failed for digest " + DIGEST
    daemon.replies["/images/create"] = stream(
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "afc745890d3e"},
        {"errorDetail": {"message": message}, "error": message},
    )
    result = run(config, ["pull", "127.0.0.1:5000/bb:v1"])
    assert result.exit_code == 1
    assert result.stdout == "afc745890d3e: Pulling fs layer\n"
    assert result.stderr == f"Error: {message}\n"


def test_pull_bad_reference_is_a_usage_error(daemon: FakeDaemon, config: Path) -> None:
    result = run(config, ["pull", "Busybox"])
    assert result.exit_code == 2 and "invalid reference format" in result.stderr
    assert daemon.calls == []


def test_pull_malformed_config_names_the_file(daemon: FakeDaemon, config: Path) -> None:
    config.parent.mkdir(parents=True)
    config.write_text("{oops")
    result = run(config, ["pull", "busybox"])
    assert result.exit_code == 2 and str(config) in result.stderr
    assert daemon.calls == []


PUSH_STREAM = stream(
    {"status": "The push refers to repository [localhost:5000/bb]"},
    {"status": "Preparing", "progressDetail": {}, "id": "4a4fba2ed90c"},
    {"status": "Pushing", "progressDetail": {"current": 1, "total": 2}, "id": "4a4fba2ed90c"},
    {"status": "Pushed", "progressDetail": {}, "id": "4a4fba2ed90c"},
    {"status": f"v1: digest: {DIGEST} size: 527"},
    {"progressDetail": {}, "aux": {"Tag": "v1", "Digest": DIGEST, "Size": 527}},
)


def test_push_one_tag(daemon: FakeDaemon, config: Path) -> None:
    daemon.replies["/images/localhost:5000/bb/push"] = PUSH_STREAM
    saved(config, {"localhost:5000": "carol:pw"})
    result = run(config, ["push", "localhost:5000/bb:v1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "The push refers to repository [localhost:5000/bb]",
        "4a4fba2ed90c: Preparing",
        "4a4fba2ed90c: Pushing",
        "4a4fba2ed90c: Pushed",
        f"v1: digest: {DIGEST} size: 527",
    ]
    assert daemon.calls[0][:3] == ("POST", "/images/localhost:5000/bb/push?tag=v1", None)
    assert daemon.auth() == AuthConfig("carol", "pw", "localhost:5000")


def test_push_default_tag_quiet_and_all_tags(daemon: FakeDaemon, config: Path) -> None:
    daemon.replies["/images/alice/app/push"] = PUSH_STREAM
    result = run(config, ["push", "alice/app"])
    assert result.exit_code == 0 and result.stdout.startswith("Using default tag: latest\n")
    result = run(config, ["push", "-q", "docker.io/alice/app:v2"])
    assert result.exit_code == 0 and result.stdout == "docker.io/alice/app:v2\n"
    result = run(config, ["push", "-a", "alice/app"])
    assert result.exit_code == 0 and "Using default tag" not in result.stdout
    paths = [call[1] for call in daemon.calls]
    assert paths == [
        "/images/alice/app/push?tag=latest",
        "/images/alice/app/push?tag=v2",
        "/images/alice/app/push?tag=",
    ]
    assert all(call[3] == {"X-Registry-Auth": "e30="} for call in daemon.calls)


@pytest.mark.parametrize("argv", [["push", f"h:1/bb@{DIGEST}"], ["push", "-a", "h:1/bb:v1"]])
def test_push_refuses(daemon: FakeDaemon, config: Path, argv: list[str]) -> None:
    result = run(config, argv)
    assert result.exit_code == 2 and daemon.calls == []


def auths(config: Path) -> dict[str, Any]:
    return dict(json.loads(config.read_text())["auths"])


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_login_with_password_flag(daemon: FakeDaemon, config: Path) -> None:
    daemon.replies["/auth"] = orjson.dumps({"Status": "Login Succeeded", "IdentityToken": ""})
    saved(config, {"other:1": "x:y"})
    result = run(config, ["login", "-u", "alice", "-p", "s3:cret", "https://127.0.0.1:5000"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "Login Succeeded\n"
    assert result.stderr == registry_cli.PASSWORD_WARNING + "\n"
    body = {"username": "alice", "password": "s3:cret", "serveraddress": "https://127.0.0.1:5000"}
    assert daemon.calls == [("POST", "/auth", body, {})]
    assert auths(config) == {
        "other:1": {"auth": b64("x:y")},
        "127.0.0.1:5000": {"auth": b64("alice:s3:cret")},
    }
    assert json.loads(config.read_text())["credsStore"] == ""


@pytest.mark.parametrize("server", [[], ["docker.io"], [DOCKER_HUB_KEY]])
def test_login_password_stdin_docker_hub(
    daemon: FakeDaemon, config: Path, server: list[str]
) -> None:
    result = run(config, ["login", "--username", "al", "--password-stdin", *server], "pw\r\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Login Succeeded\n" and result.stderr == ""
    assert daemon.calls[0][2] == {
        "username": "al",
        "password": "pw",
        "serveraddress": DOCKER_HUB_KEY,
    }
    assert auths(config) == {DOCKER_HUB_KEY: {"auth": b64("al:pw")}}


def test_login_identity_token_replaces_the_password(daemon: FakeDaemon, config: Path) -> None:
    daemon.replies["/auth"] = orjson.dumps({"Status": "Login Succeeded", "IdentityToken": "tok"})
    result = run(config, ["login", "-u", "al", "--password-stdin", "h:1"], "pw\n")
    assert result.exit_code == 0, result.output
    assert auths(config) == {"h:1": {"auth": b64("al:"), "identitytoken": "tok"}}


def test_login_prompts_on_a_terminal(
    daemon: FakeDaemon, config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_cli, "_stdin_is_tty", lambda: True)
    result = run(config, ["login", "h:1"], "alice\nhidden\n")
    assert result.exit_code == 0, result.output
    assert "Username: alice" in result.stdout and "hidden" not in result.stdout
    assert daemon.calls[0][2] == {"username": "alice", "password": "hidden", "serveraddress": "h:1"}


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["login", "-u", "a", "-p", "x", "--password-stdin"], "y", "mutually exclusive"),
        (["login", "--password-stdin"], "y", "Must provide --username"),
        (["login", "-u", "a", "h:1"], "", "non TTY device"),
        (["login", "h:1"], "", "non TTY device"),
    ],
)
def test_login_refuses(
    daemon: FakeDaemon, config: Path, argv: list[str], stdin: str, message: str
) -> None:
    result = run(config, argv, stdin)
    assert result.exit_code == 2 and message in result.stderr
    assert daemon.calls == [] and not config.exists()


def test_login_rejected_by_the_daemon(daemon: FakeDaemon, config: Path) -> None:
    message = "127.0.0.1:5000: unauthorized: incorrect username or password"
    daemon.replies["/auth"] = Unauthenticated(message)
    result = run(config, ["login", "-u", "a", "--password-stdin", "127.0.0.1:5000"], "bad\n")
    assert result.exit_code == 1
    assert result.stdout == "" and result.stderr == f"Error: {message}\n"
    assert not config.exists()


def test_logout(daemon: FakeDaemon, config: Path) -> None:
    saved(config, {"https://h:1": "a:b", "h:1": "a:b", DOCKER_HUB_KEY: "c:d"})
    result = run(config, ["logout", "h:1"])
    assert result.exit_code == 0 and result.stdout == "Removing login credentials for h:1\n"
    assert auths(config) == {DOCKER_HUB_KEY: {"auth": b64("c:d")}}
    result = run(config, ["logout", "http://h:1/v2/"])
    assert result.exit_code == 0 and result.stdout == "Not logged in to h:1\n"
    result = run(config, ["logout"])
    assert result.stdout == f"Removing login credentials for {DOCKER_HUB_KEY}\n"
    assert auths(config) == {}
    assert json.loads(config.read_text())["credsStore"] == ""
    assert daemon.calls == []


def test_logout_without_a_config_file(config: Path) -> None:
    result = run(config, ["logout", "docker.io"])
    assert result.exit_code == 0 and result.stdout == f"Not logged in to {DOCKER_HUB_KEY}\n"
    assert not config.exists()


@pytest.mark.parametrize("command", registry_cli.COMMANDS, ids=lambda c: str(c.name))
def test_help_has_an_example(command: click.Command) -> None:
    result = CliRunner().invoke(app, [str(command.name), "--help"])
    assert result.exit_code == 0 and "Example: dockyard " in result.output
