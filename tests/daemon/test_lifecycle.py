"""The daemon process: socket permissions, listeners, TLS, the data-root lock, clean shutdown."""

from __future__ import annotations

import grp
import json
import os
import signal
import socket
import ssl
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trustme

from cli.client import Client, DaemonUnreachable, TLSConfig
from tests.daemon.conftest import Daemon, free_port, spawn, start


def test_unix_socket_is_0660_with_the_group(tmp_path: Path, daemons: list[Daemon]) -> None:
    group = next((g for g in grp.getgrall() if g.gr_gid != 0), None)
    if group is None:
        pytest.skip("no group other than root on this machine")
    if os.geteuid() != 0:
        pytest.skip("needs root: changing a socket's group to one we are not in")
    d = start(tmp_path / "d", "--group", group.gr_name)
    daemons.append(d)
    st = d.sock.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == group.gr_gid
    assert [p.name for p in d.sock.parent.iterdir() if p.name.startswith(".dockyard-sock")] == []


def test_default_group_is_root(daemon: Daemon) -> None:
    st = daemon.sock.stat()
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 0


def test_unknown_group_is_refused(tmp_path: Path) -> None:
    proc = spawn(tmp_path / "d", "--group", "no-such-group-here")
    assert proc.wait(30) != 0
    assert "group: no such group: no-such-group-here" in (tmp_path / "d/daemon.log").read_text()


def test_tcp_without_tls_is_refused(tmp_path: Path) -> None:
    host = f"tcp://127.0.0.1:{free_port()}"
    proc = spawn(tmp_path / "d", hosts=[host])
    assert proc.wait(30) != 0
    log = (tmp_path / "d/daemon.log").read_text()
    assert f"{host} needs --tlscert and --tlskey (or --insecure-tcp" in log
    assert not (tmp_path / "d/exec/dockyard.pid").exists()


def test_insecure_tcp_works_and_warns(tmp_path: Path, daemons: list[Daemon]) -> None:
    unix = f"unix://{tmp_path / 'd' / 'dockyard.sock'}"
    tcp = f"tcp://127.0.0.1:{free_port()}"
    d = start(tmp_path / "d", "--insecure-tcp", hosts=[unix, tcp])
    daemons.append(d)
    info: Any = d.client(tcp).get("/info")
    assert any("without TLS is insecure" in w and tcp in w for w in info["Warnings"])
    assert "WARNING" in d.log and f"Binding to {tcp} without TLS is insecure" in d.log
    assert d.client(unix).get("/version")["ApiVersion"] == "1.45"  # type: ignore[index]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    files = {
        "ca": ca.cert_pem,
        "server": ca.issue_cert("127.0.0.1", "localhost"),
        "client": ca.issue_cert("dockyard-client"),
        "stranger": other_ca.issue_cert("dockyard-client"),
    }
    paths: dict[str, str] = {}
    for name, item in files.items():
        if isinstance(item, trustme.LeafCert):
            paths[f"{name}.pem"] = str(base / f"{name}.pem")
            item.private_key_and_cert_chain_pem.write_to_path(paths[f"{name}.pem"])
        else:
            paths[name] = str(base / f"{name}.pem")
            item.write_to_path(paths[name])
    return paths


def test_mutual_tls(tmp_path: Path, daemons: list[Daemon], pki: dict[str, str]) -> None:
    tcp = f"tcp://127.0.0.1:{free_port()}"
    server = pki["server.pem"]
    tls = TLSConfig(cacert=pki["ca"], cert=pki["client.pem"], key=pki["client.pem"])
    d = start(
        tmp_path / "d",
        "--tlscert",
        server,
        "--tlskey",
        server,
        "--tlscacert",
        pki["ca"],
        "--tlsverify",
        hosts=[tcp],
        tls=tls,
    )
    daemons.append(d)
    assert d.client().get("/version")["ApiVersion"] == "1.45"  # type: ignore[index]
    assert "without TLS" not in d.log
    # The CLI, with the same certificates.
    result = d.cli(
        "--tlsverify",
        "--tlscacert",
        pki["ca"],
        "--tlscert",
        pki["client.pem"],
        "--tlskey",
        pki["client.pem"],
        "version",
    )
    assert result.returncode == 0, result.stderr
    assert "ApiVersion: 1.45" in result.stdout
    # No client certificate, or one from another CA: the handshake fails.
    for cert in ("", pki["stranger.pem"]):
        client = Client(tcp, TLSConfig(cacert=pki["ca"], cert=cert, key=cert))
        with pytest.raises(DaemonUnreachable):
            client.get("/version")
    # Plain HTTP to the TLS port gets nothing useful.
    with pytest.raises(DaemonUnreachable):
        Client(tcp).get("/version")


def test_tls_without_verify_accepts_any_client(
    tmp_path: Path, daemons: list[Daemon], pki: dict[str, str]
) -> None:
    tcp = f"tcp://127.0.0.1:{free_port()}"
    server = pki["server.pem"]
    d = start(
        tmp_path / "d",
        "--tlscert",
        server,
        "--tlskey",
        server,
        hosts=[tcp],
        tls=TLSConfig(cacert=pki["ca"]),
    )
    daemons.append(d)
    assert d.client().get("/version")["ApiVersion"] == "1.45"  # type: ignore[index]
    ctx = ssl.create_default_context(cafile=pki["ca"])
    with (
        socket.create_connection(("127.0.0.1", int(tcp.rsplit(":", 1)[1]))) as raw,
        ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
    ):
        assert s.version() in ("TLSv1.2", "TLSv1.3")


def test_second_daemon_on_the_same_data_root_is_refused(daemon: Daemon, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    proc = spawn(other, "--data-root", str(daemon.data_root), hosts=[f"unix://{other / 's.sock'}"])
    # the later --data-root wins in click, so this one points at the first daemon's data root
    assert proc.wait(30) != 0
    log = (other / "daemon.log").read_text()
    assert f"another dockyard daemon (pid {daemon.proc.pid}) is using the data root" in log
    assert daemon.client().get("/version")  # the first one is unharmed


def test_a_live_socket_is_not_stolen(daemon: Daemon, tmp_path: Path) -> None:
    proc = spawn(tmp_path / "second", hosts=[f"unix://{daemon.sock}"])
    assert proc.wait(30) != 0
    assert (
        f"another daemon is listening on unix://{daemon.sock}"
        in (tmp_path / "second/daemon.log").read_text()
    )
    assert daemon.client().get("/version")


def test_a_stale_socket_is_replaced(tmp_path: Path, daemons: list[Daemon]) -> None:
    base = tmp_path / "d"
    base.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(base / "dockyard.sock"))
    stale.close()  # bound, never listening: what a crashed daemon leaves
    daemons.append(start(base))


def test_sigterm_drains_running_jobs_then_cleans_up(daemon: Daemon) -> None:
    pidfile = daemon.exec_root / "dockyard.pid"
    assert pidfile.read_text().strip() == str(daemon.proc.pid)
    result: dict[str, Any] = {}

    def run() -> None:
        records = list(daemon.client().run_job("sleep", [], {"seconds": 1.5, "announce": True}))
        result["records"] = records

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)
    assert daemon.stop(signal.SIGTERM) == 0
    thread.join(10)
    assert result["records"][-1]["state"] == "ok"  # it finished, it was not cut off
    assert not daemon.sock.exists()
    assert not pidfile.exists()
    assert "shutting down" in daemon.log


def test_sigint_stops_an_idle_daemon(daemon: Daemon) -> None:
    assert daemon.stop(signal.SIGINT) == 0
    assert not daemon.sock.exists()


def test_jobs_past_the_shutdown_timeout_are_cancelled(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    d = start(tmp_path / "d", "--plugin", "tests.plugins.slow", "--shutdown-timeout", "0.5")
    daemons.append(d)
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.update(
            r=list(d.client().run_job("sleep", [], {"seconds": 60, "announce": True}))
        )
    )
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < 10
    thread.join(10)
    assert result["r"][-1]["state"] == "cancelled"


def test_history_survives_a_restart(tmp_path: Path, daemons: list[Daemon]) -> None:
    d = start(tmp_path / "d", "--plugin", "tests.plugins.slow")
    daemons.append(d)
    ran = list(d.client().run_job("sleep", [], {"seconds": 0}))
    job_id = ran[-1]["job"]
    assert d.stop() == 0
    d2 = start(tmp_path / "d")
    daemons.append(d2)
    rows: Any = d2.client().get("/jobs/history", limit=50)
    assert job_id in [r["id"] for r in rows]


def test_no_world_access_to_the_data_root(daemon: Daemon) -> None:
    assert stat.S_IMODE(daemon.exec_root.stat().st_mode) == 0o700
    assert stat.S_IMODE(daemon.data_root.stat().st_mode) & 0o004 == 0
    lock = daemon.data_root / "dockyard.lock"
    assert lock.read_text().strip() == str(daemon.proc.pid)
    assert json.loads(json.dumps(daemon.client().get("/info")))["ID"]
