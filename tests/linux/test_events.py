"""Container events from real containers: the sequences and attributes dockerd logs for the
lifecycle, exec, copy/export/commit, volumes, restart policies, OOM and a daemon restart.

Each test reads its own window of the log (``since``/``until``) filtered by its container's id,
so the module's tests share one daemon.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.daemon.conftest import Daemon, request, start
from tests.linux.containerkit import (
    DOCKYARD_CMD,
    Containers,
    busybox_tar,
    containers,
    mounts_under,
    needs_root,
    remove_cgroups,
)

pytestmark = needs_root
__all__ = ["containers"]

V = "/v1.45"
TERM_EXITS_7 = 'trap "exit 7" TERM; while :; do sleep 0.1; done'


def now() -> str:
    """The current time as the docker CLI sends it: seconds.nanoseconds."""
    ns = time.time_ns()
    return f"{ns // 10**9}.{ns % 10**9:09d}"


def events(daemon: Daemon, since: str, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The stored events from *since* until now that pass *filters*."""
    query = urlencode({"since": since, "until": now(), "filters": json.dumps(filters)})
    status, headers, body = request(daemon, "GET", f"{V}/events?{query}")
    assert status == 200 and headers["Content-Type"] == "application/json", body
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def of(daemon: Daemon, since: str, cid: str, **more: list[str]) -> list[dict[str, Any]]:
    """The container events of *cid* from *since* until now."""
    return events(daemon, since, {"type": ["container"], "container": [cid], **more})


def actions(found: list[dict[str, Any]]) -> list[str]:
    return [m["Action"] for m in found]


def attrs(found: list[dict[str, Any]], action: str) -> dict[str, str]:
    """The attributes of the first event with *action*."""
    return next(m["Actor"]["Attributes"] for m in found if m["Action"] == action)  # type: ignore[no-any-return]


def settle(containers: Containers, cid: str, action: str, since: str, count: int = 1) -> None:
    """Wait until *count* events *action* of *cid* are logged (exits are applied a moment after
    a client sees them)."""
    deadline = time.monotonic() + 20
    while actions(of(containers.daemon, since, cid)).count(action) < count:
        assert time.monotonic() < deadline, f"no {action} event for {cid}"
        time.sleep(0.05)


def test_create_start_stop_rm_sequence_and_attributes(containers: Containers) -> None:
    since = now()
    name = f"ev-{secrets.token_hex(4)}"
    cid = containers.ok("create", "--name", name, "-l", "app=web", "busybox", "sh", "-c",
                        TERM_EXITS_7).strip()  # fmt: skip
    try:
        containers.ok("start", name)
        containers.ok("stop", "-t", "10", name)
    finally:
        containers.ok("rm", "-f", name)
    found = of(containers.daemon, since, cid)
    assert actions(found) == ["create", "start", "kill", "die", "stop", "destroy"]
    for m in found:
        legacy = (m["status"], m["id"], m["from"], m["scope"], m["Actor"]["ID"])
        assert legacy == (m["Action"], cid, "busybox", "local", cid)
        attributes = m["Actor"]["Attributes"]
        assert {"image": "busybox", "name": name, "app": "web"}.items() <= attributes.items()
    assert attrs(found, "kill")["signal"] == "15"
    die = attrs(found, "die")
    assert die["exitCode"] == "7" and die["execDuration"].isdigit()
    assert [m["timeNano"] for m in found] == sorted(m["timeNano"] for m in found)


def test_run_rm_logs_attach_die_and_destroy(containers: Containers) -> None:
    since = now()
    name = f"ev-{secrets.token_hex(4)}"
    proc = containers.cli("run", "--rm", "--name", name, "busybox", "sh", "-c", "exit 3")
    assert proc.returncode == 3, proc.stderr
    found = events(containers.daemon, since, {"container": [name]})
    assert actions(found) == ["create", "attach", "start", "die", "destroy"]
    assert attrs(found, "die")["exitCode"] == "3"


@pytest.mark.slow
def test_pause_rename_update_top_restart_kill(containers: Containers) -> None:
    since = now()
    name, new = f"ev-{secrets.token_hex(4)}", f"ev-{secrets.token_hex(4)}"
    cid = containers.ok("run", "-d", "--name", name, "busybox", "sh", "-c", TERM_EXITS_7).strip()
    try:
        for argv in (("pause", name), ("unpause", name), ("rename", name, new),
                     ("update", "--cpu-shares", "512", new), ("top", new),
                     ("restart", "-t", "10", new), ("kill", new)):  # fmt: skip
            containers.ok(*argv)
        settle(containers, cid, "die", since, count=2)
    finally:
        containers.ok("rm", "-f", cid)
    found = of(containers.daemon, since, cid)
    assert actions(found) == [
        "create", "start", "pause", "unpause", "rename", "update", "top",
        "kill", "die", "stop", "start", "restart", "kill", "die", "destroy",
    ]  # fmt: skip
    assert attrs(found, "rename") == {"image": "busybox", "name": new, "oldName": f"/{name}"}
    kills = [m["Actor"]["Attributes"]["signal"] for m in found if m["Action"] == "kill"]
    assert kills == ["15", "9"]
    dies = [m["Actor"]["Attributes"]["exitCode"] for m in found if m["Action"] == "die"]
    assert dies == ["7", "137"]


def test_exec_events_carry_the_command_and_exec_id(containers: Containers) -> None:
    since = now()
    cid = containers.ok("run", "-d", "busybox", "sleep", "60").strip()
    try:
        assert containers.ok("exec", cid, "echo", "hi").strip() == "hi"
        assert containers.cli("exec", cid, "sh", "-c", "exit 4").returncode == 4
        settle(containers, cid, "exec_die", since, count=2)
    finally:
        containers.ok("rm", "-f", cid)
    found = of(containers.daemon, since, cid)
    execs = [m for m in found if m["Action"].startswith("exec_")]
    assert actions(execs) == [
        "exec_create: echo hi", "exec_start: echo hi", "exec_die",
        "exec_create: sh -c exit 4", "exec_start: sh -c exit 4", "exec_die",
    ]  # fmt: skip
    ids = [m["Actor"]["Attributes"]["execID"] for m in execs]
    assert ids[0] == ids[1] == ids[2] != ids[3] == ids[4] == ids[5]
    dies = [m["Actor"]["Attributes"] for m in execs if m["Action"] == "exec_die"]
    assert [d["exitCode"] for d in dies] == ["0", "4"]
    started = of(containers.daemon, since, cid, event=["exec_start"])  # a prefix, as dockerd
    assert actions(started) == ["exec_start: echo hi", "exec_start: sh -c exit 4"]


@pytest.mark.slow
def test_copy_export_commit_events(containers: Containers, tmp_path: Path) -> None:
    since = now()
    repo = f"evsnap{secrets.token_hex(3)}"
    cid = containers.ok("run", "-d", "busybox", "sleep", "60").strip()
    (tmp_path / "f").write_text("x")
    try:
        containers.ok("cp", str(tmp_path / "f"), f"{cid}:/tmp/")
        containers.ok("cp", f"{cid}:/tmp/f", str(tmp_path / "g"))
        containers.ok("export", "-o", str(tmp_path / "e.tar"), cid)
        image = containers.ok("commit", cid, f"{repo}:1").strip()
    finally:
        containers.ok("rm", "-f", cid)
    found = of(containers.daemon, since, cid)
    assert actions(found)[2:6] == ["extract-to-dir", "archive-path", "export", "commit"]
    commit = attrs(found, "commit")
    assert commit["imageRef"] == f"{repo}:1"
    assert commit["imageID"].endswith(image.removeprefix("sha256:"))
    images = events(containers.daemon, since, {"type": ["image"], "image": [repo]})
    assert [(m["Action"], m["Actor"]["Attributes"]["name"]) for m in images] == [
        ("tag", f"{repo}:1")
    ]
    containers.ok("rmi", f"{repo}:1")


def test_volume_create_mount_unmount_destroy(containers: Containers) -> None:
    since = now()
    named = f"evvol{secrets.token_hex(3)}"
    cid = containers.ok("run", "-d", "-v", "/anon", "-v", f"{named}:/named", "busybox",
                        "sh", "-c", TERM_EXITS_7).strip()  # fmt: skip
    try:
        containers.ok("stop", cid)
        anonymous = containers.inspect(cid, ".Mounts")
    finally:
        containers.ok("rm", "-f", "-v", cid)
    vols = [m for m in events(containers.daemon, since, {"type": ["volume"]})
            if m["Actor"]["ID"] == named or m["Actor"]["ID"] in anonymous]  # fmt: skip
    by_volume = {v: [m["Action"] for m in vols if m["Actor"]["ID"] == v]
                 for v in {m["Actor"]["ID"] for m in vols}}  # fmt: skip
    assert by_volume.pop(named) == ["create", "mount", "unmount"]  # named volumes stay
    assert list(by_volume.values()) == [["create", "mount", "unmount", "destroy"]]
    mount = attrs(vols, "mount")
    assert mount["container"] == cid and mount["driver"] == "local"
    assert mount["destination"] in ("/anon", "/named") and mount["read/write"] == "true"
    assert attrs(vols, "unmount") == {"driver": "local", "container": cid}
    whole = actions(events(containers.daemon, since, {"container": [cid], "type": ["container"]}))
    assert whole == ["create", "start", "kill", "die", "stop", "destroy"]
    containers.ok("volume", "rm", named)


def test_restart_policy_logs_each_die_and_start(containers: Containers) -> None:
    since = now()
    cid = containers.ok("run", "-d", "--restart", "on-failure:2", "busybox", "sh", "-c",
                        "exit 3").strip()  # fmt: skip
    try:
        settle(containers, cid, "die", since, count=3)
        containers.wait_for(cid, ".State.Status", "exited")
    finally:
        containers.ok("rm", "-f", cid)
    found = of(containers.daemon, since, cid)
    assert actions(found) == ["create", "start", "die", "start", "die", "start", "die", "destroy"]


def test_resize_logs_height_and_width(containers: Containers) -> None:
    since = now()
    cid = containers.ok("run", "-d", "-t", "busybox", "sleep", "60").strip()
    try:
        status, _, body = request(
            containers.daemon, "POST", f"{V}/containers/{cid}/resize?h=30&w=90"
        )
        assert status == 200, body
    finally:
        containers.ok("rm", "-f", cid)
    resize = attrs(of(containers.daemon, since, cid), "resize")
    assert (resize["height"], resize["width"]) == ("30", "90")


@pytest.mark.slow
def test_oom_kill_logs_oom_before_die(containers: Containers) -> None:
    since = now()
    name = f"ev-{secrets.token_hex(4)}"
    proc = containers.cli("run", "--name", name, "--memory", "32m", "busybox", "sh", "-c",
                          "a=a; while true; do a=$a$a; done", timeout=60)  # fmt: skip
    try:
        assert proc.returncode == 137, proc.stderr
    finally:
        containers.cli("rm", "-f", name)
    found = events(containers.daemon, since, {"container": [name]})
    assert actions(found)[-3:] == ["oom", "die", "destroy"]
    assert attrs(found, "die")["exitCode"] == "137"


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Containers]:
    """A daemon of the test's own, which it may stop and start again."""
    parent = f"dockyard-test-{secrets.token_hex(4)}"
    base = tmp_path / "d"
    kit = Containers(start(base, "--cgroup-parent", parent), parent)
    try:
        with open(busybox_tar(tmp_path.parent)) as f:
            subprocess.run([*DOCKYARD_CMD, "-H", kit.daemon.hosts[0], "import", "-",
                            "busybox:latest", "-c", 'CMD ["sh"]'], stdin=f, capture_output=True,
                           env=kit.daemon.env, check=True, timeout=120)  # fmt: skip
        yield kit
    finally:
        try:
            if kit.daemon.proc.poll() is None:
                kit.remove_all()
        finally:
            kit.daemon.stop(signal.SIGTERM)
            remove_cgroups(parent)
            left = mounts_under(tmp_path)
            for mount in reversed(left):
                subprocess.run(["umount", "-l", mount], check=False)
            shutil.rmtree(base, ignore_errors=True)
            assert not left, f"mounts left behind: {left}"


@pytest.mark.slow
def test_exit_while_the_daemon_is_away_is_logged_on_restore(own: Containers) -> None:
    cid = own.ok("run", "-d", "busybox", "sleep", "1").strip()
    own.daemon.stop(signal.SIGTERM)
    time.sleep(2)  # the container exits meanwhile; its monitor keeps the status
    since = now()
    own.daemon = start(own.daemon.base, "--cgroup-parent", own.cgroup_parent)
    found = of(own.daemon, "0", cid)  # the new daemon's log holds only what it did
    assert actions(found) == ["die"]
    assert attrs(found, "die")["exitCode"] == "0"
    assert found[0]["timeNano"] >= int(float(since) * 10**9) - 10**9
