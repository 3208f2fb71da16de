"""The compatibility suite's daemon: real Docker clients (the ``docker`` CLI, docker-py,
docker-compose) drive one dockyard daemon through ``DOCKER_HOST=unix://<its socket>``.

Lifecycle: the session-scoped ``dockyard`` fixture starts a daemon with its own data root, socket
and ``--cgroup-parent``, and imports ``busybox:latest`` with ``docker import`` (the raw API when
the CLI is absent). The autouse ``leave_nothing`` fixture snapshots the containers, volumes and
images before every test and removes whatever the test added, pass or fail. At session end every
container, volume and image goes, the daemon stops, the cgroup parent is removed and no mount may
remain under the daemon's directory.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.daemon.conftest import ROOT, Daemon, start
from tests.daemon.conftest import request as raw_request
from tests.linux.containerkit import busybox_tar, mounts_under, remove_cgroups

DOCKER = shutil.which("docker")
COMPOSE = ROOT / ".venv-compose" / "bin" / "docker-compose"
needs_docker = pytest.mark.skipif(
    DOCKER is None, reason="the docker CLI (28.x) is not installed: no `docker` on PATH"
)
needs_compose = pytest.mark.skipif(
    not COMPOSE.exists(),
    reason=f"docker-compose 1.29.2 is not installed at {COMPOSE}: run `make deps`",
)
# Variables of the calling shell that would point the clients elsewhere or change their flow.
CLIENT_VARS = (
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_API_VERSION",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_CONFIG",
    "COMPOSE_API_VERSION",
    "COMPOSE_PROJECT_NAME",
    "COMPOSE_FILE",
)


@dataclass
class Snapshot:
    """What a daemon holds: container ids, volume names, image ids and image tags."""

    containers: set[str]
    volumes: set[str]
    images: set[str]
    tags: set[str]


class Compat:
    """The daemon under test, with helpers for the real clients and the raw API."""

    def __init__(self, daemon: Daemon, config_dir: Path) -> None:
        self.daemon = daemon
        self.host = f"unix://{daemon.sock}"
        self.env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARS}
        self.env.update(DOCKER_HOST=self.host, DOCKER_CONFIG=str(config_dir))

    def docker(
        self,
        *argv: str,
        timeout: float = 30,
        input: str | bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``docker ARGV`` against the daemon (text output)."""
        assert DOCKER is not None, "the docker CLI is not installed"
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            [DOCKER, *argv], input=data, capture_output=True, timeout=timeout,
            env={**self.env, **(env or {})}, check=False,
        )  # fmt: skip
        return subprocess.CompletedProcess(
            proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )  # fmt: skip

    def docker_bytes(self, *argv: str, timeout: float = 30) -> bytes:
        """Run ``docker ARGV`` that must succeed; return its raw stdout."""
        assert DOCKER is not None, "the docker CLI is not installed"
        proc = subprocess.run(
            [DOCKER, *argv], capture_output=True, timeout=timeout, env=self.env, check=False
        )
        assert proc.returncode == 0, f"docker {argv}: exit {proc.returncode}\n{proc.stderr!r}"
        return proc.stdout

    def ok(self, *argv: str, timeout: float = 30, input: str | bytes | None = None) -> str:
        """Run ``docker ARGV`` that must exit 0; return its stdout."""
        proc = self.docker(*argv, timeout=timeout, input=input)
        assert proc.returncode == 0, (
            f"docker {' '.join(argv)}: exit {proc.returncode}\n{proc.stderr}\n{self.tail()}"
        )
        return proc.stdout

    def api(
        self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One raw API request; a non-bytes *body* is sent as JSON."""
        hdrs = dict(headers or {})
        data: bytes | None
        if body is None or isinstance(body, bytes):
            data = body
        else:
            data = orjson.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        return raw_request(self.daemon, method, path, data, hdrs)

    def api_json(self, method: str, path: str, body: object = None) -> object:
        """A raw API request that must succeed; return its decoded JSON body."""
        status, _, data = self.api(method, path, body)
        assert status < 300, f"{method} {path}: {status} {data[:500]!r}"
        return orjson.loads(data) if data else None

    def snapshot(self) -> Snapshot:
        """What the daemon holds right now."""
        containers = self.api_json("GET", "/containers/json?all=1")
        volumes = self.api_json("GET", "/volumes")
        images = self.api_json("GET", "/images/json?all=1")
        assert isinstance(containers, list) and isinstance(images, list)
        assert isinstance(volumes, dict)
        return Snapshot(
            {str(c["Id"]) for c in containers},
            {str(v["Name"]) for v in volumes.get("Volumes") or []},
            {str(i["Id"]) for i in images},
            {str(t) for i in images for t in i.get("RepoTags") or [] if t != "<none>:<none>"},
        )

    def restore(self, before: Snapshot) -> list[str]:
        """Remove every container, volume, tag and image added since *before*; return what
        could not be removed."""
        now, failed = self.snapshot(), []
        for cid in now.containers - before.containers:
            failed += self._delete(f"/containers/{cid}?force=1&v=1")
        now = self.snapshot()
        for tag in now.tags - before.tags:
            failed += self._delete(f"/images/{urllib.parse.quote(tag, safe='')}?force=1")
        for image in self.snapshot().images - before.images:
            failed += self._delete(f"/images/{image}?force=1")
        for volume in now.volumes - before.volumes:
            failed += self._delete(f"/volumes/{volume}?force=1")
        return failed

    def _delete(self, path: str) -> list[str]:
        status, _, data = self.api("DELETE", path)
        return [] if status < 300 or status == 404 else [f"DELETE {path}: {status} {data!r}"]

    def tail(self) -> str:
        """The end of the daemon's log, for failure messages."""
        return self.daemon.log[-3000:]

    def unique(self, prefix: str) -> str:
        """A name no other test or run uses."""
        return f"{prefix}-{secrets.token_hex(4)}"


def import_busybox(compat: Compat, tar: Path) -> None:
    """Import ``busybox:latest`` with ``docker import`` (the raw API without the CLI)."""
    if DOCKER is not None:
        compat.ok("import", "-c", 'CMD ["sh"]', str(tar), "busybox:latest", timeout=60)
        return
    query = "fromSrc=-&repo=busybox&tag=latest&changes=" + urllib.parse.quote('CMD ["sh"]')
    status, _, data = compat.api(
        "POST", f"/images/create?{query}", tar.read_bytes(), {"Content-Type": "application/x-tar"}
    )
    assert status == 200 and b"error" not in data, data


@pytest.fixture(scope="session")
def dockyard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compat]:
    """A daemon serving the Docker API with ``busybox:latest``, for the whole suite."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the daemon runs real containers (namespaces, mounts, cgroups)")
    base = tmp_path_factory.mktemp("compat")
    tar = busybox_tar(tmp_path_factory.getbasetemp())
    parent = f"dockyard-compat-{secrets.token_hex(4)}"
    (base / "client").mkdir()
    daemon = start(base / "d", "--cgroup-parent", parent)
    compat = Compat(daemon, base / "client")
    try:
        import_busybox(compat, tar)
        yield compat
    finally:
        try:
            left_behind = compat.restore(Snapshot(set(), set(), set(), set()))
        finally:
            daemon.stop(signal.SIGTERM)
            remove_cgroups(parent)
            mounts = mounts_under(base)
            for mount in reversed(mounts):
                subprocess.run(["umount", "-l", mount], check=False)
            shutil.rmtree(base, ignore_errors=True)
        assert not mounts, f"mounts left behind: {mounts}"
        assert not left_behind, f"could not remove: {left_behind}"


@pytest.fixture(autouse=True)
def leave_nothing(request: pytest.FixtureRequest) -> Iterator[None]:
    """Remove the containers, volumes and images a test added, even when it failed."""
    if "dockyard" not in request.fixturenames:
        yield
        return
    compat: Compat = request.getfixturevalue("dockyard")
    before = compat.snapshot()
    yield
    failed = compat.restore(before)
    assert not failed, f"cleanup failed: {failed}"
