"""Start real ``dockyard daemon`` processes for tests, each with its own data root and socket."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cli.client import Client, TLSConfig

ROOT = Path(__file__).resolve().parents[2]
DOCKYARD = [sys.executable, "-m", "cli"]


@dataclass
class Daemon:
    """A daemon process and where it keeps things."""

    proc: subprocess.Popen[bytes]
    base: Path
    hosts: list[str]
    env: dict[str, str]
    tls: TLSConfig | None = None
    log_offset: int = field(default=0)

    @property
    def sock(self) -> Path:
        return self.base / "dockyard.sock"

    @property
    def data_root(self) -> Path:
        return self.base / "data"

    @property
    def exec_root(self) -> Path:
        return self.base / "exec"

    @property
    def log(self) -> str:
        return (self.base / "daemon.log").read_text()

    def client(self, host: str | None = None) -> Client:
        return Client(host or self.hosts[0], self.tls)

    def raw(self) -> http.client.HTTPConnection:
        """A plain http.client connection over the unix socket."""
        conn = http.client.HTTPConnection("localhost", timeout=30)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.sock))
        conn.sock = sock
        return conn

    def cli(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run the dockyard CLI against this daemon."""
        return subprocess.run(
            [*DOCKYARD, "-H", self.hosts[0], *argv],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def spawn(base: Path, *extra: str, hosts: list[str] | None = None) -> subprocess.Popen[bytes]:
    """Start a daemon in *base* without waiting for it."""
    base.mkdir(parents=True, exist_ok=True)
    hosts = hosts or [f"unix://{base / 'dockyard.sock'}"]
    argv = [
        *DOCKYARD,
        "daemon",
        "--data-root",
        str(base / "data"),
        "--exec-root",
        str(base / "exec"),
    ]
    for host in hosts:
        argv += ["-H", host]
    argv += network_args(base, extra)
    log = open(base / "daemon.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [*argv, "--debug", *extra], stdout=log, stderr=log, env=test_env(), cwd=ROOT
        )
    finally:
        log.close()


def network_args(base: Path, extra: Sequence[str]) -> list[str]:
    """A test daemon's own default bridge (``dyt<8 hex>``) on its own /24 of 10.214.0.0/16,
    both derived from its *base* directory (a restart on the same data root gets the same ones),
    with forwarding left as it is and no iptables rules; without root, no bridge at all
    (``--network-driver none``)."""
    if any(a.startswith(("--bridge", "--network-driver", "-b")) for a in extra):
        return []
    if os.geteuid() != 0:
        return ["--network-driver", "none", "--iptables=false", "--ip-forward=false"]
    digest = hashlib.sha256(str(base.resolve()).encode()).hexdigest()
    bridge = "dyt" + digest[:8]
    taken = _routed_elsewhere(bridge)
    start = int(digest[8:12], 16) % 250
    free = [(start + i) % 250 for i in range(250) if f"10.214.{(start + i) % 250}.0" not in taken]
    n = free[0] if free else start
    # No iptables by default: a daemon's chains cost some 40 iptables runs over its life, and
    # only the network tests look at them (they ask for ``--iptables=true``).
    return [
        "--bridge",
        bridge,
        "--bip",
        f"10.214.{n}.1/24",
        "--ip-forward=false",
        "--iptables=false",
    ]


def _routed_elsewhere(bridge: str) -> set[str]:
    """Destinations of the host's IPv4 routes on interfaces other than *bridge*."""
    taken = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 1 and fields[0] != bridge:
                taken.add(socket.inet_ntoa(bytes.fromhex(fields[1])[::-1]))
    return taken


def test_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("DOCKYARD_HOST", None)
    return env


def wait_ready(daemon: Daemon, timeout: float = 15) -> None:
    """Wait until every listener answers /_ping; fail with the daemon's log if it died."""
    deadline = time.monotonic() + timeout
    pending = list(daemon.hosts)
    while pending:
        if daemon.proc.poll() is not None:
            pytest.fail(f"daemon exited with {daemon.proc.returncode}:\n{daemon.log}")
        try:
            daemon.client(pending[0]).request("GET", "/_ping", timeout=2).read()
            pending.pop(0)
        except Exception:
            if time.monotonic() > deadline:
                pytest.fail(f"daemon did not answer on {pending[0]}:\n{daemon.log}")
            time.sleep(0.05)


def start(
    base: Path, *extra: str, hosts: list[str] | None = None, tls: TLSConfig | None = None
) -> Daemon:
    """Start a daemon and wait until it serves."""
    proc = spawn(base, *extra, hosts=hosts)
    daemon = Daemon(proc, base, hosts or [f"unix://{base / 'dockyard.sock'}"], test_env(), tls)
    try:
        wait_ready(daemon)
    except BaseException:
        daemon.stop(signal.SIGKILL)
        raise
    return daemon


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    """Daemons a test started; all are stopped at teardown, even when the test failed."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.stop()


@pytest.fixture
def daemon(tmp_path: Path, daemons: list[Daemon]) -> Daemon:
    """One daemon with the test plugins loaded."""
    d = start(tmp_path / "d", "--plugin", "tests.plugins.slow")
    daemons.append(d)
    return d


def request(
    daemon: Daemon,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request over the daemon's unix socket: status, headers, body."""
    conn = daemon.raw()
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
