"""docker-compose 1.29.2 against dockyard's networking: a two-service project on its default
network (``<project>_default``, with an explicit subnet so no default pool is taken). ``web``
finds ``db`` by its service name through the embedded DNS and publishes its own page on
127.0.0.1; ``down`` removes the containers, the network and its bridge. The daemon and the
container cleanup come from ``tests/compat/conftest.py``; the project is brought down (and its
network removed) even when the test fails.

Traffic goes only to 127.0.0.1 (the published port) and between the project's containers.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.compat.conftest import Compat, needs_compose, needs_docker
from tests.compat.test_compose import Project
from tests.linux.containerkit import http_get, network_leftovers

pytestmark = [needs_compose, needs_docker, pytest.mark.slow]

SUBNET = "10.215.30.0/24"

# Both services exit 0 on SIGTERM at once (the servers run in the background of a trapping
# shell), so stop and down take no stop timeout. busybox wget is bounded by the timeout
# applet: Debian's static busybox crashes on wget's own -T.
COMPOSE_FILE = """\
version: "3.8"
services:
  db:
    image: busybox
    command:
      - sh
      - -c
      - >-
        trap 'exit 0' TERM;
        mkdir -p /www && echo page-from-db > /www/index.html;
        httpd -f -p 8080 -h /www & wait
  web:
    image: busybox
    depends_on: [db]
    ports: ["127.0.0.1:{port}:80"]
    command:
      - sh
      - -c
      - >-
        trap 'exit 0' TERM;
        mkdir -p /www && echo page-from-web > /www/index.html;
        httpd -f -p 80 -h /www &
        while true; do
        timeout 5 wget -q -O - http://db:8080/ || echo fetch failed;
        sleep 0.3;
        done
networks:
  default:
    ipam:
      config:
        - subnet: {subnet}
"""


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def host_links(bridge: str) -> list[str]:
    """The host's interface *bridge* and the interfaces enslaved to it, if any."""
    out = subprocess.run(
        ["ip", "-o", "link"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
    return [
        name
        for name, line in zip(names, out.splitlines(), strict=True)
        if name == bridge or f"master {bridge} " in line
    ]


def test_compose_default_network_dns_ports_and_down(dockyard: Compat, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "docker-compose.yml").write_text(COMPOSE_FILE.format(port=port, subnet=SUBNET))
    project = Project(dockyard, tmp_path)
    db, web, network = f"{project.name}_db_1", f"{project.name}_web_1", f"{project.name}_default"
    try:
        project.ok("up", "-d")
        assert project.containers() == [db, web]
        assert network in dockyard.ok("network", "ls", "--format", "{{.Name}}").split()
        (info,) = json.loads(dockyard.ok("network", "inspect", network))
        assert info["IPAM"]["Config"][0]["Subnet"] == SUBNET, info["IPAM"]
        assert info["Labels"].get("com.docker.compose.project") == project.name, info["Labels"]
        assert info["Labels"].get("com.docker.compose.network") == "default", info["Labels"]
        assert sorted(c["Name"] for c in info["Containers"].values()) == [db, web], info
        bridge = f"br-{info['Id'][:12]}"
        assert bridge in host_links(bridge), f"no bridge {bridge} for {network}"

        deadline = time.monotonic() + 15
        while "page-from-db" not in (logs := project.ok("logs", "web")):
            assert time.monotonic() < deadline, f"{logs}\n{dockyard.tail()}"
            time.sleep(0.2)
        aliases = dockyard.ok(
            "inspect", "-f", f'{{{{json (index .NetworkSettings.Networks "{network}").Aliases}}}}',
            db,
        )  # fmt: skip
        assert "db" in json.loads(aliases), aliases

        assert http_get(port) == "page-from-web\n"
        rows = project.ok("ps").splitlines()
        assert rows[0].split() == ["Name", "Command", "State", "Ports"], rows
        by_name = {row.split()[0]: row for row in rows[2:] if row.strip()}
        assert set(by_name) == {db, web}, rows
        assert " Up " in f"{by_name[db]} " and " Up " in f"{by_name[web]} ", rows
        assert f"127.0.0.1:{port}->80/tcp" in by_name[web], rows
        assert dockyard.ok("port", web, "80").splitlines() == [f"127.0.0.1:{port}"]

        project.ok("down")
        assert project.containers() == []
        assert network not in dockyard.ok("network", "ls", "--format", "{{.Name}}").split()
        assert dockyard.docker("network", "inspect", network).returncode == 1
        left = network_leftovers(bridge)
        assert left == [], f"left on the host after down: {left}"
        names = dockyard.ok("ps", "-a", "--format", "{{.Names}}").split()
        assert not [n for n in names if n.startswith(f"{project.name}_")], names
    finally:
        project.run("down", "-t", "1")
        if dockyard.docker("network", "inspect", network).returncode == 0:
            dockyard.docker("network", "rm", network)
