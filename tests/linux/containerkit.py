"""Shared fixtures for the container tests: a real daemon with a busybox image, torn down clean.

Each daemon gets its own data root, socket and ``--cgroup-parent``; teardown removes every
container (they outlive the daemon on purpose), stops the daemon, removes the cgroup parent and
checks that no mount under the test's directory remains.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import ROOT, Daemon, start

BUSYBOX_SH = ROOT / "contrib" / "mkimage" / "busybox.sh"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: namespaces, mounts and cgroups of real containers"
)


def busybox_tar(cache: Path) -> Path:
    """The busybox rootfs tar, built once per session into *cache*."""
    path = cache / "busybox.tar"
    if not path.exists():
        if not Path("/bin/busybox").exists():
            pytest.skip("busybox-static is not installed (apt-get install -y busybox-static)")
        with open(path, "wb") as out:
            subprocess.run(["bash", str(BUSYBOX_SH)], stdout=out, check=True)
    return path


class Containers:
    """A daemon for container tests, with helpers that drive it through the dockyard CLI."""

    def __init__(self, daemon: Daemon, cgroup_parent: str) -> None:
        self.daemon, self.cgroup_parent = daemon, cgroup_parent

    def cli(
        self, *argv: str, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``dockyard ARGV`` against the daemon."""
        return subprocess.run(
            [*DOCKYARD_CMD, "-H", self.daemon.hosts[0], *argv],
            capture_output=True, text=True, env=self.daemon.env, timeout=timeout,
            input=input, check=False,
        )  # fmt: skip

    def ok(self, *argv: str, timeout: float = 60, input: str | None = None) -> str:
        """Run a command that must succeed; return its stdout."""
        proc = self.cli(*argv, timeout=timeout, input=input)
        assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stderr}\n{self.tail()}"
        return proc.stdout

    def inspect(self, name: str, field: str) -> str:
        """One field of inspect, as ``-f '{{.A.B}}'``."""
        return self.ok("inspect", "-f", "{{" + field + "}}", name).strip()

    def wait_for(self, name: str, field: str, value: str, timeout: float = 20) -> None:
        """Poll inspect until *field* equals *value*."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.inspect(name, field)
            if got == value:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} {field} = {got!r}, wanted {value!r}")
            time.sleep(0.1)

    def tail(self) -> str:
        """The end of the daemon's log, for failure messages."""
        return self.daemon.log[-3000:]

    def remove_all(self) -> None:
        """Remove every container of the daemon."""
        ids = self.cli("ps", "-aq", "--no-trunc").stdout.split()
        if ids:
            self.cli("rm", "-f", *ids)


DOCKYARD_CMD = [sys.executable, "-m", "cli"]


def cgroup_dirs(parent: str) -> list[Path]:
    """Every directory named *parent* in the cgroup hierarchies (ours to remove)."""
    found = []
    for base in Path("/sys/fs/cgroup").iterdir():
        for path in base.rglob(parent) if base.is_dir() else []:
            if path.is_dir():
                found.append(path)
    return found


def remove_cgroups(parent: str) -> None:
    """Remove the test's cgroup parent directories (children first)."""
    for top in cgroup_dirs(parent):
        for path in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                with contextlib.suppress(OSError):
                    path.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def http_get(port: int, path: str = "/", timeout: float = 15) -> str:
    """GET http://127.0.0.1:*port*/*path* (no proxy), retried until the server answers or
    *timeout* passes; the body."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with opener.open(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
                return str(response.read().decode())
        except OSError as exc:  # URLError, refused, reset, timed out
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer on 127.0.0.1:{port}{path}: {exc!r}") from exc
            time.sleep(0.1)


def bridge_of(daemon: Daemon) -> str:
    """The default bridge a test daemon was started with (``--bridge``), or ""."""
    args = [str(a) for a in daemon.proc.args]  # type: ignore[union-attr]
    return args[args.index("--bridge") + 1] if "--bridge" in args else ""


def network_leftovers(bridge: str) -> list[str]:
    """What a stopped daemon with default bridge *bridge* left on the host: its bridge, veths
    still on a bridge it made, its iptables chains and rules (``DY-<bridge>``)."""
    if not bridge:
        return []
    left = []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False)
    for line in links.stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name == bridge or f"master {bridge} " in line:
            left.append(f"link {name}")
    for table in ("filter", "nat"):
        rules = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True,
                               text=True, check=False)  # fmt: skip
        left += [f"{table}: {r}" for r in rules.stdout.splitlines() if f"DY-{bridge}" in r
                 or f" {bridge} " in f"{r} "]  # fmt: skip
    return left


def mounts_under(path: Path) -> list[str]:
    """Mount points of the host under *path*."""
    text = Path("/proc/self/mountinfo").read_text()
    return [line.split()[4] for line in text.splitlines() if line.split()[4].startswith(str(path))]


@pytest.fixture(scope="module")
def containers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containers]:
    """A daemon with ``busybox:latest``, shared by a test module."""
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces, mounts and cgroups of real containers")
    base = tmp_path_factory.mktemp("containers")
    tar = busybox_tar(tmp_path_factory.getbasetemp())
    parent = f"dockyard-test-{secrets.token_hex(4)}"
    daemon = start(base / "d", "--cgroup-parent", parent, "--iptables=true")
    kit = Containers(daemon, parent)
    try:
        with open(tar) as f:
            proc = subprocess.run(
                [*DOCKYARD_CMD, "-H", daemon.hosts[0], "import", "-", "busybox:latest",
                 "-c", 'CMD ["sh"]'],
                stdin=f, capture_output=True, text=True, env=daemon.env, check=False,
            )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        yield kit
    finally:
        try:
            kit.remove_all()
        finally:
            daemon.stop(signal.SIGTERM)
            network_left = network_leftovers(bridge_of(daemon))
            remove_cgroups(parent)
            left = mounts_under(base)
            for mount in reversed(left):
                subprocess.run(["umount", "-l", mount], check=False)
            shutil.rmtree(base, ignore_errors=True)
            assert not left, f"mounts left behind: {left}"
            assert not network_left, f"network left behind: {network_left}"
