"""A daemon killed in the middle of a pull leaves nothing visible, and the next pull works.

Each test starts its own daemon with ``ENGINE_CRASHPOINT=<point>`` in its environment (that start
only), pulls a kit-made image (a busybox layer and a second layer, unique to the test) from the
hostile registry, and expects the daemon to SIGKILL itself at the point. It then starts a daemon
on the same data root without the variable and checks: no image, no tag, no new layer directory,
no ``tmp/pull-*`` and no staged layer tar, a clean deep fsck; and the same pull then completes
and the image runs. The last point is after the database commit: there the image is either
wholly there or not at all.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon.conftest import start
from tests.linux.containerkit import busybox_tar
from tests.registry.daemonkit import PullDaemon, needs_root, start_pull_daemon, stop_pull_daemon
from tests.registry.hostile import HostileRegistry
from tests.registry.test_faults import Case, Snapshot, good_image, pull_dirs, staged_tars

pytestmark = [needs_root, pytest.mark.slow]

CRASH_WAIT = 60


@pytest.fixture
def tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox rootfs tar the kit imports (built once per session)."""
    return busybox_tar(tmp_path_factory.getbasetemp())


def start_crashing(base: Path, tar: Path, point: str) -> PullDaemon:
    """A pull daemon with ``ENGINE_CRASHPOINT=point`` in its environment (not in the CLI's)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ENGINE_CRASHPOINT", point)
        kit = start_pull_daemon(base, tar)
    kit.env.pop("ENGINE_CRASHPOINT", None)
    kit.daemon.env.pop("ENGINE_CRASHPOINT", None)
    return kit


def restart(kit: PullDaemon) -> PullDaemon:
    """A daemon on *kit*'s data root, started as the kit starts one, without the crash point."""
    assert "ENGINE_CRASHPOINT" not in os.environ
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_CONFIG", str(kit.daemon_config))
        daemon = start(
            kit.daemon.base, "--cgroup-parent", kit.cgroup_parent, "--download-retry-delay", "0.05"
        )
    return PullDaemon(daemon, kit.cgroup_parent, kit.base)


@pytest.fixture
def server() -> Iterator[HostileRegistry]:
    """A started hostile registry serving correctly."""
    with HostileRegistry() as reg:
        yield reg


def crash_and_recover(tmp_path: Path, tar: Path, server: HostileRegistry, point: str) -> None:
    """Pull into a daemon that dies at *point*; restart it; check; pull again and run."""
    token = secrets.token_hex(6)
    image = good_image(token)
    name = f"crash/{point.replace('.', '-').replace('_', '-')}-{token[:6]}"
    server.add_image(name, "v1", image)
    case = Case(server, name, "v1", image, token)
    kit = start_crashing(tmp_path / "pull", tar, point)
    current = kit
    try:
        before = Snapshot.take(kit)
        proc = kit.cli("pull", case.ref, timeout=CRASH_WAIT)
        try:
            code = kit.daemon.proc.wait(CRASH_WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the daemon did not die at {point}:\n{proc.stdout}{proc.stderr}")
        assert code == -signal.SIGKILL, f"the daemon exited with {code}, not SIGKILL"

        current = restart(kit)
        assert pull_dirs(current) == [], "tmp/pull-* survived the restart"
        assert staged_tars(current) == [], "staged layer tars survived the restart"
        problems = current.fsck(deep=True)
        assert problems == [], f"fsck after the crash at {point}: {problems}"
        committed = point == "pull.after_db_before_tag" and current.has_image(case.ref)
        if committed:  # killed after the commit: all of it is there
            assert current.image(case.ref)["Id"] == image.config_digest
        else:
            assert not current.has_image(case.ref)
            assert not current.has_image(image.config_digest)
            refs = [
                t
                for i in current.images()
                for t in (i.get("RepoTags") or []) + (i.get("RepoDigests") or [])
            ]
            assert not [t for t in refs if name in t], refs
            after = Snapshot.take(current)
            assert after.ids == before.ids
            assert after.layers == before.layers, "layer directories left by the killed pull"

        again = current.cli("pull", case.ref, timeout=90)
        assert again.returncode == 0, f"{again.stdout}{again.stderr}\n{current.tail()}"
        assert current.image(case.ref)["Id"] == image.config_digest
        assert current.ok("run", "--rm", case.ref, "cat", "/etc/marker").strip() == token
        assert current.ok("run", "--rm", case.ref, "echo", "ok").strip() == "ok"
        assert current.fsck(deep=True) == []
        assert pull_dirs(current) == []
        # checked last, so that the store's recovery is checked even when the CLI is wrong
        assert proc.returncode != 0, (
            f"the CLI reported success for a pull whose daemon was killed:\n{proc.stdout}"
        )
    finally:
        if current is not kit and kit.daemon.proc.poll() is None:
            kit.daemon.stop(signal.SIGKILL)
        stop_pull_daemon(current)


@pytest.mark.parametrize(
    "point",
    [
        "pull.blob_midstream",
        "pull.mid_extract",
        "pull.after_extract_before_db",
        "pull.after_manifest",
        "pull.after_db_before_tag",
    ],
)
def test_killed_pull_leaves_nothing_and_the_next_one_works(
    tmp_path: Path, tar: Path, server: HostileRegistry, point: str
) -> None:
    crash_and_recover(tmp_path, tar, server, point)
