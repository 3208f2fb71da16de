"""A daemon for registry tests: the ``pulld`` module fixture and the ``PullDaemon`` it yields.

The daemon has its own data root, socket and ``--cgroup-parent dockyard-test-<hex>``, retries
downloads fast (``--download-retry-delay 0.05``) and starts with ``busybox:latest`` imported.
Credentials never touch the host's ``~/.docker``: the CLI runs with ``DOCKER_CONFIG`` set to a
temp dir (``cli_config``) and the daemon is started with its own (``daemon_config``), where
the ``login`` job keeps what it stores. Teardown removes every container, stops the daemon,
removes the cgroup parent, and fails if a mount under the fixture's directory is left.

API (kept small and stable; other registry test modules import it):
``pulld.daemon`` (tests.daemon.conftest.Daemon), ``pulld.env`` (the CLI's environment),
``cli(*argv, env=, input=, timeout=)``, ``ok(...)``, ``job(name, params, args=, check=)``,
``fsck(deep=True)``, ``images()``, ``image(ref)``, ``api(method, path, body=, headers=)``,
``has_image(ref)``, ``layer_dirs()``, ``rmi(*refs)``, ``remove_all()``, ``tail()``, ``sock``,
``cli_config`` / ``daemon_config``. ``start_pull_daemon(base, tar, *extra_flags)`` and
``stop_pull_daemon(kit)`` start and tear down a daemon with other flags (e.g. mirrors).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.conftest import Daemon, request, start
from tests.linux.containerkit import DOCKYARD_CMD, busybox_tar, mounts_under, remove_cgroups

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: a real daemon with mounts, layers and containers"
)


class DaemonError(AssertionError):
    """A command or API call that had to succeed did not."""


class PullDaemon:
    """A daemon for registry tests, with helpers over the dockyard CLI and the API."""

    def __init__(self, daemon: Daemon, cgroup_parent: str, base: Path) -> None:
        self.daemon, self.cgroup_parent, self.base = daemon, cgroup_parent, base
        self.cli_config = base / "cli-docker"
        self.daemon_config = base / "daemon-docker"
        self.cli_config.mkdir(exist_ok=True)
        self.env = {**daemon.env, "DOCKER_CONFIG": str(self.cli_config)}

    @property
    def sock(self) -> Path:
        """The daemon's unix socket."""
        return self.daemon.sock

    def cli(
        self,
        *argv: str,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``dockyard ARGV`` against the daemon (``env`` adds to the CLI's environment)."""
        return subprocess.run(
            [*DOCKYARD_CMD, "-H", self.daemon.hosts[0], *argv],
            capture_output=True, text=True, env={**self.env, **(env or {})}, timeout=timeout,
            input=input, check=False,
        )  # fmt: skip

    def ok(
        self,
        *argv: str,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float = 120,
    ) -> str:
        """Run a command that must succeed; return its stdout."""
        proc = self.cli(*argv, env=env, input=input, timeout=timeout)
        if proc.returncode != 0:
            raise DaemonError(
                f"dockyard {' '.join(argv)}: exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}"
                f"\nstderr: {proc.stderr[-2000:]}\ndaemon log:\n{self.tail()}"
            )
        return proc.stdout

    def api(
        self,
        method: str,
        path: str,
        body: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request on the daemon socket (*body* JSON-encoded unless bytes)."""
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        hdrs = dict(headers or {})
        if data:
            hdrs.setdefault("Content-Type", "application/json")
        return request(self.daemon, method, path, data, hdrs)

    def job(
        self,
        name: str,
        params: Mapping[str, object] | None = None,
        args: Sequence[str] = (),
        check: bool = True,
    ) -> list[dict[str, Any]]:
        """Run job *name* (``POST /jobs/NAME``); its records, the status record last.

        A job refused before its stream starts (an HTTP error) raises, or with ``check=False``
        gives one status-like record ``{"state": "error", "http_status": N, "error": {"kind",
        "message"}}``.
        """
        payload = {"args": list(args), "params": dict(params or {})}
        status, headers, body = self.api("POST", f"/jobs/{name}", payload)
        if status != 200:
            if check:
                raise DaemonError(f"job {name}: HTTP {status}: {body[-2000:]!r}")
            try:
                message = str(json.loads(body)["message"])
            except (ValueError, KeyError, TypeError):
                message = body.decode(errors="replace")
            kind = headers.get("Dockyard-Error", "")
            return [{"state": "error", "http_status": status,
                     "error": {"kind": kind, "message": message}}]  # fmt: skip
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def fsck(self, deep: bool = True) -> list[dict[str, Any]]:
        """The problems the ``fsck`` job reports (``{"Code", "Subject", "Detail"}`` each)."""
        records = self.job("fsck", {"deep": deep})
        problems = [r for r in records if "Code" in r]
        counts = [r["Problems"] for r in records if "Problems" in r]
        status = records[-1] if records else {}
        if status.get("error") or not counts:
            raise DaemonError(f"fsck did not finish: {records[-3:]}\n{self.tail()}")
        assert counts[0] == len(problems), records
        return problems

    def images(self) -> list[dict[str, Any]]:
        """``GET /images/json``: the image summaries."""
        status, _, body = self.api("GET", "/images/json")
        if status != 200:
            raise DaemonError(f"GET /images/json: {status} {body!r}")
        result: list[dict[str, Any]] = json.loads(body)
        return result

    def image(self, ref: str) -> dict[str, Any]:
        """``GET /images/REF/json``: inspect one image (fails if it is missing)."""
        status, _, body = self.api("GET", f"/images/{ref}/json")
        if status != 200:
            raise DaemonError(f"GET /images/{ref}/json: {status} {body!r}")
        result: dict[str, Any] = json.loads(body)
        return result

    def has_image(self, ref: str) -> bool:
        """Whether *ref* names an image of the daemon."""
        return self.api("GET", f"/images/{ref}/json")[0] == 200

    def rmi(self, *refs: str) -> None:
        """Remove images by reference, ignoring those already gone (``rmi -f``)."""
        for ref in refs:
            if self.has_image(ref):
                self.ok("rmi", "-f", ref)

    def layer_dirs(self) -> list[Path]:
        """The graph driver's layer directories (named by a 64-hex layer id) in the data root."""
        for name in DRIVER_DIRS:
            driver = self.daemon.data_root / name
            if driver.is_dir():
                found = [*driver.iterdir(), *driver.glob("*/*")]
                return sorted(p for p in found if p.is_dir() and LAYER_ID.fullmatch(p.name))
        raise DaemonError(f"no graph driver directory under {self.daemon.data_root}")

    def remove_all(self) -> None:
        """Remove every container of the daemon."""
        ids = self.cli("ps", "-aq", "--no-trunc").stdout.split()
        if ids:
            self.cli("rm", "-f", *ids)

    def tail(self) -> str:
        """The end of the daemon's log, for failure messages."""
        return self.daemon.log[-3000:]


DRIVER_DIRS = ("overlay", "overlay2", "vfs", "btrfs", "aufs")
LAYER_ID = re.compile(r"[0-9a-f]{64}")


def start_pull_daemon(base: Path, tar: Path, *extra: str) -> PullDaemon:
    """Start a daemon in *base* with its own credentials dir and busybox imported."""
    parent = f"dockyard-test-{secrets.token_hex(4)}"
    daemon_config = base / "daemon-docker"
    daemon_config.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_CONFIG", str(daemon_config))  # the daemon's own config.json
        daemon = start(
            base / "d", "--cgroup-parent", parent, "--download-retry-delay", "0.05", *extra
        )
    kit = PullDaemon(daemon, parent, base)
    try:
        with open(tar, "rb") as f:
            proc = subprocess.run(
                [*DOCKYARD_CMD, "-H", daemon.hosts[0], "import", "-", "busybox:latest",
                 "-c", 'CMD ["sh"]'],
                stdin=f, capture_output=True, env=kit.env, check=False, timeout=120,
            )  # fmt: skip
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    except BaseException:
        stop_pull_daemon(kit)
        raise
    return kit


def stop_pull_daemon(kit: PullDaemon) -> None:
    """Remove containers, stop the daemon, remove cgroups; fail if mounts are left."""
    try:
        kit.remove_all()
    finally:
        kit.daemon.stop(signal.SIGTERM)
        remove_cgroups(kit.cgroup_parent)
        left = mounts_under(kit.base)
        for mount in reversed(left):
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(kit.base, ignore_errors=True)
        assert not left, f"mounts left behind: {left}"


@pytest.fixture(scope="module")
def pulld(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PullDaemon]:
    """A daemon with ``busybox:latest`` for registry tests, shared by a test module."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a real daemon with mounts, layers and containers")
    base = tmp_path_factory.mktemp("pulld")
    kit = start_pull_daemon(base, busybox_tar(tmp_path_factory.getbasetemp()))
    try:
        yield kit
    finally:
        stop_pull_daemon(kit)


@pytest.fixture
def store_stays_consistent(pulld: PullDaemon) -> Iterator[None]:
    """After the test, the deep fsck of the daemon's store finds no problem (use it with
    ``pytest.mark.usefixtures("store_stays_consistent")``)."""
    yield
    problems = pulld.fsck(deep=True)
    assert problems == [], f"fsck found problems: {problems}"
