"""Docker's own clients against dockyard: the docker CLI (28) and docker-py (7) pull, push and
log in through the daemon socket, and see what they would see with dockerd.

Both clients keep their credentials in a temp ``DOCKER_CONFIG`` of the test, never ``~/.docker``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.registry.daemonkit import PullDaemon, needs_root, pulld, store_stays_consistent
from tests.registry.registries import Registry

docker = pytest.importorskip("docker", reason="docker-py is not installed: pip install docker")

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"
needs_docker_cli = pytest.mark.skipif(
    not Path(DOCKER).exists(), reason="the docker CLI is not installed (/usr/local/bin/docker)"
)
pytestmark = [needs_root, pytest.mark.slow, pytest.mark.usefixtures("store_stays_consistent")]
__all__ = ["pulld", "store_stays_consistent"]


@pytest.fixture
def docker_config(tmp_path: Path) -> Path:
    """A fresh, empty DOCKER_CONFIG directory for one test."""
    path = tmp_path / "docker-config"
    path.mkdir()
    return path


def run_docker(
    pulld: PullDaemon, config: Path, *argv: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``docker -H unix://SOCK ARGV`` with *config* as DOCKER_CONFIG."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CONFIG"] = str(config)
    return subprocess.run(
        [DOCKER, "-H", f"unix://{pulld.sock}", *argv],
        capture_output=True, text=True, env=env, input=input, timeout=120, check=False,
    )  # fmt: skip


def docker_ok(pulld: PullDaemon, config: Path, *argv: str, input: str | None = None) -> str:
    """Run a docker command that must succeed; its stdout."""
    proc = run_docker(pulld, config, *argv, input=input)
    assert proc.returncode == 0, (
        f"docker {' '.join(argv)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}\n"
        f"{pulld.tail()}"
    )
    return proc.stdout


def registry_digest(reg: Registry, name: str, ref: str) -> str:
    """The manifest digest the registry has for NAME:REF."""
    resp = reg.client().manifest(name, ref)
    assert resp.status == 200, resp.body
    return resp.headers["docker-content-digest"]


@needs_docker_cli
def test_docker_cli_push_pull(pulld: PullDaemon, registry: Registry, docker_config: Path) -> None:
    """docker tag, push, rmi, pull, images --digests and run through dockyard."""
    ref = f"{registry.host}/dcli/bb:v1"
    image_id = pulld.image("busybox:latest")["Id"]
    docker_ok(pulld, docker_config, "tag", "busybox:latest", ref)
    try:
        out = docker_ok(pulld, docker_config, "push", ref)
        digest = registry_digest(registry, "dcli/bb", "v1")
        assert f"The push refers to repository [{registry.host}/dcli/bb]" in out
        assert f"v1: digest: {digest} size: " in out, out

        docker_ok(pulld, docker_config, "rmi", ref)
        out = docker_ok(pulld, docker_config, "pull", ref)
        assert f"Digest: {digest}" in out, out
        assert f"Status: Downloaded newer image for {ref}" in out, out
        assert out.strip().splitlines()[-1] == ref
        inspect = docker_ok(pulld, docker_config, "image", "inspect", ref)
        info = json.loads(inspect)[0]
        assert info["Id"] == image_id
        assert f"{registry.host}/dcli/bb@{digest}" in info["RepoDigests"]
        table = docker_ok(
            pulld, docker_config, "images", "--digests", "--format",
            "{{.Repository}} {{.Tag}} {{.Digest}}",
        )  # fmt: skip
        assert f"{registry.host}/dcli/bb v1 {digest}" in table.splitlines(), table
        ran = docker_ok(pulld, docker_config, "run", "--rm", ref, "echo", "docker says hi")
        assert ran == "docker says hi\n"
    finally:
        pulld.rmi(ref)


@needs_docker_cli
def test_docker_cli_pull_missing(
    pulld: PullDaemon, registry: Registry, docker_config: Path
) -> None:
    """docker pull of a missing repository fails with dockerd's message."""
    proc = run_docker(pulld, docker_config, "pull", f"{registry.host}/dcli/nosuch:v1")
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert f"manifest for {registry.host}/dcli/nosuch:v1 not found" in proc.stderr


@needs_docker_cli
def test_docker_cli_login_push(
    pulld: PullDaemon, basic_registry: Registry, docker_config: Path
) -> None:
    """docker login against a basic-auth registry saves credentials; docker push uses them."""
    reg = basic_registry
    ref = f"{reg.host}/dcli/private:v1"
    docker_ok(pulld, docker_config, "tag", "busybox:latest", ref)
    try:
        proc = run_docker(pulld, docker_config, "push", ref)
        assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
        assert "unauthorized" in proc.stderr.lower() or "denied" in proc.stderr.lower()

        bad = run_docker(
            pulld, docker_config, "login", "-u", str(reg.user), "--password-stdin", reg.host,
            input="wrong\n",
        )  # fmt: skip
        assert bad.returncode == 1, (bad.returncode, bad.stdout, bad.stderr)
        assert "unauthorized" in bad.stderr.lower(), bad.stderr
        assert not (docker_config / "config.json").exists() or reg.host not in json.loads(
            (docker_config / "config.json").read_text()
        ).get("auths", {})

        out = docker_ok(
            pulld, docker_config, "login", "-u", str(reg.user), "--password-stdin", reg.host,
            input=f"{reg.password}\n",
        )  # fmt: skip
        assert "Login Succeeded" in out
        auths = json.loads((docker_config / "config.json").read_text())["auths"]
        assert base64.b64decode(auths[reg.host]["auth"]).decode() == f"{reg.user}:{reg.password}"

        out = docker_ok(pulld, docker_config, "push", ref)
        digest = registry_digest(reg, "dcli/private", "v1")
        assert f"v1: digest: {digest} size: " in out, out
        docker_ok(pulld, docker_config, "rmi", ref)
        out = docker_ok(pulld, docker_config, "pull", ref)
        assert f"Digest: {digest}" in out
        docker_ok(pulld, docker_config, "logout", reg.host)
        auths = json.loads((docker_config / "config.json").read_text()).get("auths", {})
        assert reg.host not in auths
    finally:
        pulld.rmi(ref)


@pytest.fixture
def docker_client(pulld: PullDaemon, docker_config: Path) -> Iterator[docker.DockerClient]:
    """A docker-py client on the daemon socket that reads no credentials of the host."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_CONFIG", str(docker_config))
        client = docker.DockerClient(base_url=f"unix://{pulld.sock}", timeout=120)
    try:
        yield client
    finally:
        client.close()


def test_docker_py_pull_push(
    pulld: PullDaemon, registry: Registry, docker_client: docker.DockerClient
) -> None:
    """images.push streams the digest; images.pull returns the Image with the same id."""
    repo = f"{registry.host}/dpy/bb"
    image_id = pulld.image("busybox:latest")["Id"]
    assert docker_client.images.get("busybox:latest").tag(repo, "v1")
    try:
        text = docker_client.images.push(repo, tag="v1")
        digest = registry_digest(registry, "dpy/bb", "v1")
        assert f"v1: digest: {digest} size: " in text, text
        assert '"error"' not in text, text
        events = [json.loads(line) for line in text.splitlines() if line.strip()]
        aux = [e["aux"] for e in events if "aux" in e]
        assert aux and aux[-1]["Tag"] == "v1" and aux[-1]["Digest"] == digest, events

        docker_client.images.remove(f"{repo}:v1")
        image = docker_client.images.pull(repo, tag="v1")
        assert image.id == image_id
        assert f"{repo}:v1" in image.tags
        assert f"{repo}@{digest}" in image.attrs["RepoDigests"]
        by_digest = docker_client.images.pull(repo, tag=digest)
        assert by_digest.id == image_id
    finally:
        pulld.rmi(f"{repo}:v1")


def test_docker_py_login_push(
    pulld: PullDaemon, basic_registry: Registry, docker_client: docker.DockerClient
) -> None:
    """client.login checks credentials through the daemon; push then carries them."""
    reg = basic_registry
    with pytest.raises(docker.errors.APIError) as refused:
        docker_client.login(username=str(reg.user), password="wrong", registry=reg.host)
    assert refused.value.status_code == 401
    result = docker_client.login(
        username=str(reg.user), password=str(reg.password), registry=reg.host, reauth=True
    )
    assert result["Status"] == "Login Succeeded"
    repo = f"{reg.host}/dpy/private{secrets.token_hex(2)}"
    docker_client.images.get("busybox:latest").tag(repo, "v1")
    try:
        text = docker_client.images.push(repo, tag="v1")
        assert '"error"' not in text, text
        name = repo.split("/", 1)[1]
        assert f"v1: digest: {registry_digest(reg, name, 'v1')} size: " in text, text
        docker_client.images.remove(f"{repo}:v1")
        image = docker_client.images.pull(repo, tag="v1")
        assert image.id == pulld.image("busybox:latest")["Id"]
    finally:
        pulld.rmi(f"{repo}:v1")
