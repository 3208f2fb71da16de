"""Registry authentication: basic (htpasswd) and bearer (token server) registries, the CLI's
``login``/``logout`` and its ``config.json``, ``POST /auth``, and the daemon's own ``login`` job.

The CLI keeps credentials in ``$DOCKER_CONFIG/config.json`` (a temp dir of the fixture); the
daemon's ``login`` job keeps them in the daemon's own config dir, also a temp dir. Each test
starts and ends with both files absent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.registry.daemonkit import PullDaemon, needs_root, pulld
from tests.registry.registries import Registry

pytestmark = [needs_root, pytest.mark.slow]
__all__ = ["pulld"]
ROOT_CONFIG = Path("/root/.docker/config.json")


def digest_of_file(path: Path) -> str | None:
    """sha256 of a file, or None when it is missing."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.fixture(autouse=True)
def clean_credentials(pulld: PullDaemon) -> Iterator[None]:
    """No stored credentials before or after a test; the host's own config is never touched."""
    files = (pulld.cli_config / "config.json", pulld.daemon_config / "config.json")
    for path in files:
        path.unlink(missing_ok=True)
    before = digest_of_file(ROOT_CONFIG)
    yield
    for path in files:
        path.unlink(missing_ok=True)
    assert digest_of_file(ROOT_CONFIG) == before, f"{ROOT_CONFIG} was changed"
    problems = pulld.fsck(deep=True)
    assert problems == [], f"fsck found problems: {problems}"


def cli_auths(pulld: PullDaemon) -> dict[str, dict[str, str]]:
    """The ``auths`` of the CLI's config.json ({} when there is no file)."""
    path = pulld.cli_config / "config.json"
    if not path.exists():
        return {}
    auths: dict[str, dict[str, str]] = json.loads(path.read_text()).get("auths", {})
    return auths


def basic(user: str | None, password: str | None) -> str:
    """base64 of ``user:password``, as config.json keeps it."""
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def login(pulld: PullDaemon, reg: Registry, password: str | None = None) -> str:
    """``dockyard login -u USER --password-stdin HOST``; its stdout."""
    assert reg.user
    return pulld.ok(
        "login", "-u", reg.user, "--password-stdin", reg.host, input=(password or reg.password)
    )


REFUSED = re.compile(r"unauthorized|denied|authentication required|no basic auth", re.I)


def test_basic_push_needs_login(pulld: PullDaemon, basic_registry: Registry) -> None:
    """Without credentials, push and pull are refused with exit 1 and an auth message."""
    ref = f"{basic_registry.host}/secret/bb:v1"
    pulld.ok("tag", "busybox:latest", ref)
    try:
        proc = pulld.cli("push", ref)
        assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
        assert REFUSED.search(proc.stderr), proc.stderr
        assert basic_registry.client().manifest("secret/bb", "v1").status == 404
        proc = pulld.cli("pull", ref)
        assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
        assert REFUSED.search(proc.stderr), proc.stderr
    finally:
        pulld.rmi(ref)


def test_basic_login_push_pull_logout(pulld: PullDaemon, basic_registry: Registry) -> None:
    """login saves base64(user:password) for the host; push and pull then work; logout forgets."""
    reg = basic_registry
    out = login(pulld, reg)
    assert out.strip().splitlines()[-1] == "Login Succeeded"
    auths = cli_auths(pulld)
    assert auths[reg.host]["auth"] == basic(reg.user, reg.password)
    assert (pulld.cli_config / "config.json").stat().st_mode & 0o077 == 0, "config.json is private"

    ref = f"{reg.host}/private/bb:v1"
    pulld.ok("tag", "busybox:latest", ref)
    try:
        pushed = pulld.ok("push", ref)
        assert "v1: digest: sha256:" in pushed, pushed
        assert reg.client().manifest("private/bb", "v1").status == 200
        pulld.ok("rmi", ref)
        pulled = pulld.ok("pull", ref)
        assert f"Status: Downloaded newer image for {ref}" in pulled, pulled
        assert pulld.image(ref)["Id"] == pulld.image("busybox:latest")["Id"]

        out = pulld.ok("logout", reg.host)
        assert f"Removing login credentials for {reg.host}" in out
        assert reg.host not in cli_auths(pulld)
        pulld.ok("rmi", ref)
        proc = pulld.cli("pull", ref)
        assert proc.returncode == 1 and REFUSED.search(proc.stderr), proc.stderr
        assert "Not logged in to" in pulld.ok("logout", reg.host)
    finally:
        pulld.rmi(ref)


def test_basic_login_wrong_password(pulld: PullDaemon, basic_registry: Registry) -> None:
    """A wrong password fails with exit 1 and leaves config.json as it was."""
    reg = basic_registry
    config = pulld.cli_config / "config.json"
    proc = pulld.cli("login", "-u", str(reg.user), "--password-stdin", reg.host, input="wrong")
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Login Succeeded" not in proc.stdout
    assert re.search(r"unauthorized|401", proc.stderr, re.I), proc.stderr
    assert not config.exists(), "a failed login must not create config.json"

    login(pulld, reg)
    saved = config.read_bytes()
    proc = pulld.cli("login", "-u", str(reg.user), "--password-stdin", reg.host, input="wrong")
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert config.read_bytes() == saved, "a failed login must not change config.json"


def test_token_login_push_pull(pulld: PullDaemon, token_registry: Registry) -> None:
    """Against a bearer-token registry, login, push and pull work with the right scopes."""
    reg = token_registry
    assert reg.token_server is not None
    assert login(pulld, reg).strip().endswith("Login Succeeded")
    assert cli_auths(pulld)[reg.host]["auth"] == basic(reg.user, reg.password)
    ref = f"{reg.host}/tok/bb:v1"
    pulld.ok("tag", "busybox:latest", ref)
    try:
        pulld.ok("push", ref)
        scopes = reg.token_server.scopes_asked()
        assert "repository:tok/bb:pull,push" in scopes, scopes
        pulld.ok("rmi", ref)
        pulld.ok("pull", ref)
        assert "repository:tok/bb:pull" in reg.token_server.scopes_asked()
        assert pulld.image(ref)["Id"] == pulld.image("busybox:latest")["Id"]
        accounts = {r.account for r in reg.token_server.requests if r.account}
        assert accounts <= {reg.user}, accounts
    finally:
        pulld.rmi(ref)


def test_token_push_without_login(pulld: PullDaemon, token_registry: Registry) -> None:
    """Without credentials the token server grants nothing and the push is refused."""
    ref = f"{token_registry.host}/tok/anon:v1"
    pulld.ok("tag", "busybox:latest", ref)
    try:
        proc = pulld.cli("push", ref)
        assert proc.returncode == 1, (proc.returncode, proc.stderr)
        assert REFUSED.search(proc.stderr), proc.stderr
    finally:
        pulld.rmi(ref)


@pytest.mark.parametrize("kind", ["basic", "token"])
def test_post_auth(
    pulld: PullDaemon, basic_registry: Registry, token_registry: Registry, kind: str
) -> None:
    """``POST /auth`` answers 200 Login Succeeded for good credentials and 401 for bad ones."""
    reg = basic_registry if kind == "basic" else token_registry
    body = {"username": reg.user, "password": reg.password, "serveraddress": reg.host}
    status, _, data = pulld.api("POST", "/auth", body)
    assert status == 200, data
    assert json.loads(data)["Status"] == "Login Succeeded"
    status, _, data = pulld.api("POST", "/auth", {**body, "password": "wrong"})
    assert status == 401, (status, data)
    assert "unauthorized" in json.loads(data)["message"].lower()
    assert not (pulld.cli_config / "config.json").exists(), "POST /auth stores nothing"
    assert not (pulld.daemon_config / "config.json").exists(), "POST /auth stores nothing"


def daemon_docker_config(pulld: PullDaemon) -> str:
    """The DOCKER_CONFIG of the daemon process's environment ('' when unset)."""
    pid = pulld.daemon.proc.pid
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for item in env:
        if item.startswith(b"DOCKER_CONFIG="):
            return item.split(b"=", 1)[1].decode()
    return ""


def test_daemon_login_job(pulld: PullDaemon, basic_registry: Registry) -> None:
    """The ``login`` job keeps credentials in the daemon's config.json; pulls fall back to it."""
    if daemon_docker_config(pulld) != str(pulld.daemon_config):
        pytest.skip("the daemon's config.json would be the host's ~/.docker: not touching it")
    reg = basic_registry
    params = {"username": reg.user, "password": "wrong"}
    records = pulld.job("login", params, args=[reg.host], check=False)
    assert records[-1]["error"] and records[-1]["error"]["kind"] == "Unauthenticated", records
    assert "unauthorized" in records[-1]["error"]["message"].lower(), records
    assert not (pulld.daemon_config / "config.json").exists()

    records = pulld.job("login", {**params, "password": reg.password}, args=[reg.host])
    assert records[-1]["error"] is None, records
    assert {"Status": "Login Succeeded", "IdentityToken": ""} in records
    saved = json.loads((pulld.daemon_config / "config.json").read_text())
    assert saved["auths"][reg.host]["auth"] == basic(reg.user, reg.password)

    ref = f"{reg.host}/daemonauth/bb:v1"
    pulld.ok("tag", "busybox:latest", ref)
    try:
        assert not cli_auths(pulld), "the CLI sends no credentials of its own"
        pulld.ok("push", ref)
        pulld.ok("rmi", ref)
        pulld.ok("pull", ref)

        records = pulld.job("logout", args=[reg.host])
        assert records[-1]["error"] is None, records
        assert {"Status": f"Removing login credentials for {reg.host}"} in records
        saved = json.loads((pulld.daemon_config / "config.json").read_text())
        assert reg.host not in saved.get("auths", {})
        pulld.ok("rmi", ref)
        proc = pulld.cli("pull", ref)
        assert proc.returncode == 1 and REFUSED.search(proc.stderr), proc.stderr
    finally:
        pulld.rmi(ref)
