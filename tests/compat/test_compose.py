"""docker-compose 1.29.2 against dockyard: a two-service project goes up, runs, stops, starts
and comes down with its volume. The daemon and the cleanup come from
``tests/compat/conftest.py``."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.compat.conftest import COMPOSE, Compat, needs_compose

pytestmark = [needs_compose, pytest.mark.slow]

# Both services exit 0 on SIGTERM (within 0.2 s), so stop and down take no stop timeout.
COMPOSE_FILE = """\
version: "3.8"
services:
  db:
    image: busybox
    network_mode: none
    command:
      - sh
      - -c
      - trap 'exit 0' TERM; echo db up $$GREETING; while true; do sleep 0.2; done
    environment:
      GREETING: hello-from-env
    labels:
      compat.role: db
    volumes:
      - data:/data
  web:
    image: busybox
    network_mode: none
    depends_on:
      - db
    command:
      - sh
      - -c
      - trap 'exit 0' TERM; echo web up; while true; do sleep 0.2; done
    labels:
      compat.role: web
volumes:
  data: {}
"""


class Project:
    """A compose project in a temp directory with a name of its own."""

    def __init__(self, dockyard: Compat, path: Path) -> None:
        self.dockyard, self.path = dockyard, path
        self.name = dockyard.unique("compat").replace("-", "")
        self.env = {**dockyard.env, "COMPOSE_PROJECT_NAME": self.name}

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``docker-compose ARGV`` in the project directory."""
        return subprocess.run(
            [str(COMPOSE), "--ansi", "never", *argv], cwd=self.path, env=self.env,
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def ok(self, *argv: str, timeout: float = 60) -> str:
        """Run a compose command that must succeed; return its stdout."""
        proc = self.run(*argv, timeout=timeout)
        assert proc.returncode == 0, (
            f"docker-compose {' '.join(argv)}: exit {proc.returncode}\n{proc.stdout}\n"
            f"{proc.stderr}\n{self.dockyard.tail()}"
        )
        return proc.stdout

    def states(self) -> dict[str, str]:
        """Service container name → its State column in ``docker-compose ps``."""
        rows = self.ok("ps").splitlines()[2:]
        return {row.split()[0]: row.split()[-1] for row in rows if row.strip()}

    def containers(self) -> list[str]:
        """Names of every container of the project, by its label."""
        out = self.dockyard.ok(
            "ps", "-a", "--filter", f"label=com.docker.compose.project={self.name}",
            "--format", "{{.Names}}",
        )  # fmt: skip
        return sorted(out.split())


def test_compose_lifecycle(dockyard: Compat, tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text(COMPOSE_FILE)
    project = Project(dockyard, tmp_path)
    db, web, volume = f"{project.name}_db_1", f"{project.name}_web_1", f"{project.name}_data"
    try:
        project.ok("up", "-d")
        assert project.containers() == [db, web]
        assert project.states() == {db: "Up", web: "Up"}
        labels = dockyard.ok("inspect", "-f", '{{index .Config.Labels "compat.role"}}', db, web)
        assert labels.split() == ["db", "web"]
        assert volume in dockyard.ok("volume", "ls", "-q").split()

        deadline = time.monotonic() + 10
        while "web up" not in (logs := project.ok("logs")) or "db up" not in logs:
            assert time.monotonic() < deadline, logs
            time.sleep(0.1)
        assert "db up hello-from-env" in logs

        assert project.ok(
            "exec", "-T", "db", "sh", "-c", "echo $GREETING > /data/f; cat /data/f"
        ) == ("hello-from-env\n")
        assert project.run("exec", "-T", "web", "sh", "-c", "exit 4").returncode == 4

        project.ok("stop")
        states = project.states()
        assert set(states) == {db, web} and all(s != "Up" for s in states.values()), states
        assert dockyard.ok("inspect", "-f", "{{.State.ExitCode}}", db, web).split() == ["0", "0"]

        project.ok("start")
        assert project.states() == {db: "Up", web: "Up"}
        assert project.ok("exec", "-T", "db", "cat", "/data/f") == "hello-from-env\n"

        project.ok("down", "-v")
        assert project.containers() == []
        assert volume not in dockyard.ok("volume", "ls", "-q").split()
    finally:
        project.run("down", "-v", "-t", "1")
