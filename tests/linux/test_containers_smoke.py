"""The first container tests: run, exit codes, output, and a clean teardown."""

from __future__ import annotations

from tests.linux.containerkit import Containers, containers, needs_root

pytestmark = needs_root
__all__ = ["containers"]


def test_run_prints_and_exits_zero(containers: Containers) -> None:
    assert containers.ok("run", "--rm", "busybox", "echo", "hello from dockyard") == (
        "hello from dockyard\n"
    )


def test_exit_code_is_the_container_s(containers: Containers) -> None:
    proc = containers.cli("run", "--rm", "busybox", "sh", "-c", "exit 3")
    assert proc.returncode == 3, proc.stderr
