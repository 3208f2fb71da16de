"""The real ``docker`` CLI (28.x) against dockyard: each command's output and exit code as
Docker gives them. The daemon and the cleanup come from ``tests/compat/conftest.py``."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import tarfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.conftest import DOCKER, Compat, needs_docker

pytestmark = needs_docker

LOOP = "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done"


@pytest.fixture
def running(dockyard: Compat) -> Iterator[str]:
    """A detached container that prints ``ready`` and exits 0 on SIGTERM; its name."""
    name = dockyard.unique("bg")
    dockyard.ok("run", "-d", "--name", name, "busybox", "sh", "-c", LOOP)
    wait_log(dockyard, name, "ready")
    yield name
    dockyard.docker("rm", "-f", name)


def wait_log(dockyard: Compat, name: str, text: str, timeout: float = 10) -> str:
    """Poll ``docker logs`` until *text* shows up; return the logs."""
    deadline = time.monotonic() + timeout
    while True:
        out = dockyard.docker("logs", name).stdout
        if text in out:
            return out
        assert time.monotonic() < deadline, f"{text!r} not in logs of {name}: {out!r}"
        time.sleep(0.05)


def pty_run(dockyard: Compat, *argv: str, rows: int = 40, cols: int = 100) -> tuple[int, bytes]:
    """Run ``docker ARGV`` with a pty of *rows* x *cols* as its terminal; exit code and output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    assert DOCKER is not None
    proc = subprocess.Popen(
        [DOCKER, *argv], stdin=slave, stdout=slave, stderr=slave, env=dockyard.env,
        start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every holder of the slave side closed it
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=max(1, deadline - time.monotonic())), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_version_reports_api_versions(dockyard: Compat) -> None:
    out = dockyard.ok(
        "version",
        "--format",
        "{{.Server.APIVersion}} {{.Server.MinAPIVersion}} {{.Client.APIVersion}}",
    )
    assert out.split() == ["1.45", "1.24", "1.45"]
    text = dockyard.ok("version")
    assert re.search(r"^  API version: +1\.45 \(minimum version 1\.24\)$", text, re.M), text


def test_info(dockyard: Compat) -> None:
    info = json.loads(dockyard.ok("info", "--format", "{{json .}}"))
    assert info["OSType"] == "linux"
    assert info["Images"] >= 1
    assert "ServerErrors" not in info, info.get("ServerErrors")
    text = dockyard.docker("info")
    assert text.returncode == 0, text.stderr
    assert "Server Version:" in text.stdout


def test_images_lists_busybox(dockyard: Compat) -> None:
    out = dockyard.ok("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    assert re.search(r"^busybox:latest [0-9a-f]{12}$", out, re.M), out


def test_import_then_run(dockyard: Compat, tmp_path: Path) -> None:
    tar = tmp_path / "rootfs.tar"
    tar.write_bytes(dockyard.docker_bytes("export", dockyard.ok("create", "busybox").strip()))
    out = dockyard.ok("import", "-c", 'CMD ["echo", "imported"]', str(tar), "compat/imported:1")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", out), out
    assert dockyard.ok("run", "--rm", "compat/imported:1") == "imported\n"


def test_run_rm_echo(dockyard: Compat) -> None:
    name = dockyard.unique("echo")
    proc = dockyard.docker("run", "--rm", "--name", name, "busybox", "echo", "hi")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "hi\n", "")
    assert dockyard.ok("ps", "-aq", "--filter", f"name={name}") == ""


def test_run_with_env_workdir_user_volume_and_name(dockyard: Compat, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from host\n")
    tmp_path.chmod(0o777)  # the container's user 1000 reads and writes the bind mount
    name = dockyard.unique("opts")
    script = "echo $FOO; pwd; id -u; id -g; cat /mnt/in.txt; echo out > /mnt/out.txt; hostname"
    out = dockyard.ok(
        "run", "--name", name, "-e", "FOO=bar baz", "-w", "/tmp", "-u", "1000:1000",
        "-v", f"{tmp_path}:/mnt", "busybox", "sh", "-c", script,
    )  # fmt: skip
    lines = out.splitlines()
    assert lines[:5] == ["bar baz", "/tmp", "1000", "1000", "from host"], out
    assert (tmp_path / "out.txt").read_text() == "out\n"
    assert dockyard.ok("inspect", "-f", "{{.Name}} {{.State.ExitCode}}", name) == f"/{name} 0\n"


def test_exit_code_is_the_container_s(dockyard: Compat) -> None:
    proc = dockyard.docker("run", "--rm", "busybox", "sh", "-c", "exit 3")
    assert proc.returncode == 3, proc.stderr


def test_missing_command_exits_127(dockyard: Compat) -> None:
    name = dockyard.unique("nocmd")
    proc = dockyard.docker("run", "--name", name, "busybox", "nosuchcmd")
    assert proc.returncode == 127, proc.stderr
    assert proc.stderr.startswith("docker: Error response from daemon: "), proc.stderr
    assert 'exec: "nosuchcmd": executable file not found in $PATH' in proc.stderr
    assert "Run 'docker run --help' for more information" in proc.stderr


def test_missing_command_with_rm_exits_127_and_removes(dockyard: Compat) -> None:
    # The CLI waits (condition=removed) for the engine to remove the container after a failed
    # start, as dockerd does for AutoRemove containers.
    name = dockyard.unique("nocmdrm")
    proc = dockyard.docker("run", "--rm", "--name", name, "busybox", "nosuchcmd", timeout=15)
    assert proc.returncode == 127, proc.stderr
    assert "executable file not found in $PATH" in proc.stderr
    assert dockyard.ok("ps", "-aq", "--filter", f"name={name}") == ""


def test_detached_logs_follow_stop_rm(dockyard: Compat) -> None:
    name = dockyard.unique("logs")
    cid = dockyard.ok("run", "-d", "--name", name, "busybox", "sh", "-c", LOOP).strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid), cid
    assert DOCKER is not None
    follow = subprocess.Popen(
        [DOCKER, "logs", "-f", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dockyard.env,
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        assert follow.stdout.readline() == b"ready\n"
        assert dockyard.ok("stop", "-t", "5", name) == f"{name}\n"
        out, err = follow.communicate(timeout=10)
        assert follow.returncode == 0, err
        assert out == b"bye\n"
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert dockyard.ok("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name) == (
        "exited 0\n"
    )
    assert dockyard.ok("rm", name) == f"{name}\n"
    assert dockyard.docker("inspect", name).returncode == 1


def test_run_interactive_with_piped_stdin(dockyard: Compat) -> None:
    proc = dockyard.docker(
        "run", "--rm", "-i", "busybox", "sh", "-c", "cat; exit 4", input="line one\nline two\n"
    )
    assert (proc.returncode, proc.stdout) == (4, "line one\nline two\n"), proc.stderr


def test_run_tty_under_a_pty(dockyard: Compat) -> None:
    code, out = pty_run(dockyard, "run", "--rm", "-t", "busybox", "sh", "-c", "tty; stty size")
    assert code == 0, out
    # The CLI leaves the terminal cooked without -i: both ptys add a CR to every newline.
    lines = out.decode(errors="replace").replace("\r", "").split("\n")
    assert lines[1] == "40 100", out
    assert re.fullmatch(r"/dev/pts/\d+", lines[0]), out


def test_exec_with_and_without_tty(dockyard: Compat, running: str) -> None:
    proc = dockyard.docker("exec", running, "sh", "-c", "echo hi; echo err >&2; tty")
    assert proc.stdout == "hi\nnot a tty\n" and proc.stderr == "err\n", proc
    assert proc.returncode == 1  # tty's own status without a terminal
    code, out = pty_run(dockyard, "exec", "-t", running, "tty")
    assert code == 0, out
    assert re.fullmatch(rb"/dev/pts/\d+\r+\n", out), out


def test_exec_exit_code(dockyard: Compat, running: str) -> None:
    assert dockyard.docker("exec", running, "sh", "-c", "exit 5").returncode == 5
    proc = dockyard.docker("exec", "-i", running, "sh", "-c", "cat; exit 6", input="piped\n")
    assert (proc.returncode, proc.stdout) == (6, "piped\n")


def test_ps_filters(dockyard: Compat, running: str) -> None:
    done = dockyard.unique("done")
    dockyard.ok("run", "--name", done, "--label", "compat.role=done", "busybox", "true")
    fmt = ["--format", "{{.Names}}"]
    assert dockyard.ok("ps", "-a", "--filter", f"name={done}", *fmt) == f"{done}\n"
    exited = dockyard.ok("ps", "-a", "--filter", "status=exited", *fmt).split()
    assert done in exited and running not in exited
    labelled = dockyard.ok("ps", "-a", "--filter", "label=compat.role=done", *fmt)
    assert labelled == f"{done}\n"
    assert running in dockyard.ok("ps", *fmt).split()
    assert done not in dockyard.ok("ps", *fmt).split()


def test_inspect_template(dockyard: Compat, running: str) -> None:
    assert dockyard.ok("inspect", "-f", "{{.State.Status}}", running) == "running\n"
    out = dockyard.ok("inspect", "-f", "{{.Config.Image}} {{.HostConfig.LogConfig.Type}}", running)
    assert out == "busybox json-file\n"


def test_cp_both_ways(dockyard: Compat, running: str, tmp_path: Path) -> None:
    src = tmp_path / "to.txt"
    src.write_text("to the container\n")
    dockyard.ok("cp", str(src), f"{running}:/tmp/")
    assert dockyard.ok("exec", running, "cat", "/tmp/to.txt") == "to the container\n"
    dockyard.ok("exec", running, "sh", "-c", "echo back > /tmp/from.txt")
    dockyard.ok("cp", f"{running}:/tmp/from.txt", str(tmp_path / "got.txt"))
    assert (tmp_path / "got.txt").read_text() == "back\n"
    raw = dockyard.docker_bytes("cp", f"{running}:/tmp/from.txt", "-")
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        member = tar.getmember("from.txt")
        data = tar.extractfile(member)
        assert data is not None and data.read() == b"back\n"


def test_commit_diff_export(dockyard: Compat, tmp_path: Path) -> None:
    name = dockyard.unique("changed")
    dockyard.ok("run", "--name", name, "busybox", "sh", "-c", "echo made > /tmp/made.txt")
    diff = dockyard.ok("diff", name).splitlines()
    assert "C /tmp" in diff and "A /tmp/made.txt" in diff, diff
    image_id = dockyard.ok("commit", "-c", 'CMD ["cat", "/tmp/made.txt"]', name, "compat/c:1")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", image_id), image_id
    assert dockyard.ok("run", "--rm", "compat/c:1") == "made\n"
    with tarfile.open(fileobj=io.BytesIO(dockyard.docker_bytes("export", name))) as tar:
        names = set(tar.getnames())
    assert {"bin/busybox", "tmp/made.txt"} <= {n.lstrip("./") for n in names}


def test_save_load_tag_rmi(dockyard: Compat, tmp_path: Path) -> None:
    assert dockyard.ok("tag", "busybox", "compat/saved:v1") == ""
    tags = dockyard.ok("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").splitlines()
    ids = {t.split()[0]: t.split()[1] for t in tags}
    assert ids["compat/saved:v1"] == ids["busybox:latest"]
    archive = tmp_path / "saved.tar"
    dockyard.ok("save", "-o", str(archive), "compat/saved:v1")
    with tarfile.open(archive) as tar:
        assert "manifest.json" in tar.getnames()
    assert dockyard.ok("rmi", "compat/saved:v1") == "Untagged: compat/saved:v1\n"
    assert dockyard.ok("load", "-i", str(archive)) == "Loaded image: compat/saved:v1\n"
    with open(archive, "rb") as f:
        assert dockyard.ok("load", input=f.read()) == "Loaded image: compat/saved:v1\n"
    assert "compat/saved:v1" in dockyard.ok("images", "--format", "{{.Repository}}:{{.Tag}}")
    dockyard.ok("rmi", "compat/saved:v1")
    assert dockyard.ok("run", "--rm", "busybox", "echo", "still") == "still\n"


def test_top_and_stats(dockyard: Compat, running: str) -> None:
    top = dockyard.ok("top", running).splitlines()
    assert top[0].split()[:3] == ["UID", "PID", "PPID"] and top[0].split()[-1] == "CMD", top
    assert any("while true" in line for line in top[1:]), top
    stats = dockyard.ok("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", running)
    name, pids = stats.split()
    assert name == running and int(pids) >= 1


def test_pause_unpause(dockyard: Compat, running: str) -> None:
    assert dockyard.ok("pause", running) == f"{running}\n"
    assert dockyard.ok("inspect", "-f", "{{.State.Status}} {{.State.Paused}}", running) == (
        "paused true\n"
    )
    assert dockyard.ok("unpause", running) == f"{running}\n"
    assert dockyard.ok("inspect", "-f", "{{.State.Status}}", running) == "running\n"


def test_wait_and_rename(dockyard: Compat) -> None:
    name, new = dockyard.unique("waited"), dockyard.unique("renamed")
    dockyard.ok("run", "-d", "--name", name, "busybox", "sh", "-c", "sleep 0.3; exit 7")
    assert dockyard.ok("wait", name) == "7\n"
    assert dockyard.ok("rename", name, new) == ""
    assert dockyard.ok("inspect", "-f", "{{.Name}}", new) == f"/{new}\n"
    assert dockyard.docker("inspect", "--type", "container", name).returncode == 1


def test_events_since_until(dockyard: Compat) -> None:
    name = dockyard.unique("evt")
    since = int(time.time()) - 1
    dockyard.ok("run", "--rm", "--name", name, "busybox", "true")
    until = int(time.time()) + 1
    proc = dockyard.docker(
        "events", "--since", str(since), "--until", str(until), "--filter", f"container={name}",
        timeout=15,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    actions = re.findall(r" container (\w+) [0-9a-f]{64} \((.*)\)$", proc.stdout, re.M)
    assert [a for a, _ in actions if a in ("create", "start", "die", "destroy")] == [
        "create",
        "start",
        "die",
        "destroy",
    ], proc.stdout
    assert all(f"name={name}" in attrs for _, attrs in actions), proc.stdout
    assert any("exitCode=0" in attrs for a, attrs in actions if a == "die"), proc.stdout


def test_volume_create_ls_inspect_rm(dockyard: Compat) -> None:
    name = dockyard.unique("vol")
    assert dockyard.ok("volume", "create", "--label", "compat=1", name) == f"{name}\n"
    assert name in dockyard.ok("volume", "ls", "-q").split()
    out = dockyard.ok("volume", "inspect", "-f", "{{.Name}} {{.Driver}} {{.Labels}}", name)
    assert out == f"{name} local map[compat:1]\n"
    dockyard.ok("run", "--rm", "-v", f"{name}:/data", "busybox", "sh", "-c", "echo v > /data/f")
    assert dockyard.ok("run", "--rm", "-v", f"{name}:/data", "busybox", "cat", "/data/f") == "v\n"
    assert dockyard.ok("volume", "rm", name) == f"{name}\n"
    assert name not in dockyard.ok("volume", "ls", "-q").split()


def test_system_df(dockyard: Compat) -> None:
    out = dockyard.ok("system", "df")
    lines = out.splitlines()
    assert lines[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], out
    assert [line.split()[0] for line in lines[1:]] == ["Images", "Containers", "Local", "Build"]


def test_container_prune(dockyard: Compat, running: str) -> None:
    stopped = dockyard.unique("stopped")
    cid = dockyard.ok("create", "--name", stopped, "busybox", "true").strip()
    out = dockyard.ok("container", "prune", "-f")
    assert out.startswith("Deleted Containers:\n"), out
    assert cid in out.splitlines() and "Total reclaimed space:" in out
    names = dockyard.ok("ps", "-a", "--format", "{{.Names}}").split()
    assert running in names and stopped not in names


def test_image_prune(dockyard: Compat) -> None:
    name = dockyard.unique("dangle")
    dockyard.ok("run", "--name", name, "busybox", "touch", "/x")
    image = dockyard.ok("commit", name).strip()
    dockyard.ok("rm", name)
    out = dockyard.ok("image", "prune", "-f")
    assert f"deleted: {image}" in out.splitlines(), out
    assert "Total reclaimed space:" in out
    assert dockyard.docker("image", "inspect", image).returncode == 1
    assert dockyard.docker("image", "inspect", "busybox").returncode == 0


def test_network_ls(dockyard: Compat) -> None:
    rows = dockyard.ok("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}")
    assert {"none null local", "host host local"} <= set(rows.splitlines()), rows


def test_inspect_missing_object(dockyard: Compat) -> None:
    proc = dockyard.docker("inspect", "nosuch")
    assert proc.returncode == 1
    assert proc.stderr == "Error: No such object: nosuch\n", proc.stderr


def test_legacy_api_run_rm(dockyard: Compat) -> None:
    # Below 1.25 the CLI waits through /events and removes the container itself.
    name = dockyard.unique("legacy")
    proc = dockyard.docker(
        "run", "--rm", "--name", name, "busybox", "echo", "hi",
        env={"DOCKER_API_VERSION": "1.24"}, timeout=20,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, "hi\n"), proc.stderr
    # The CLI stops at the destroy event, which the daemon sends before its DELETE answer (as
    # dockerd does): the CLI may then log that its own DELETE was cancelled. Nothing else.
    benign = "error removing container: Delete"
    assert all(benign in line and "context canceled" in line for line in proc.stderr.splitlines())
    assert dockyard.ok("ps", "-aq", "--filter", f"name={name}") == ""


def test_api_version_too_new(dockyard: Compat) -> None:
    proc = dockyard.docker("version", env={"DOCKER_API_VERSION": "1.99"})
    assert proc.returncode == 1
    assert (
        "Error response from daemon: client version 1.99 is too new. "
        "Maximum supported API version is 1.45"
    ) in proc.stderr, proc.stderr
