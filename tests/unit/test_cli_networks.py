"""The network commands, ``port``, ``rm --link`` and ``run --ip/--network-alias``, without a
daemon: ``Client.request`` is replaced by a fake daemon that records each request (method, path,
JSON body) and answers from a script, so the tests compare what goes out with what the docker
CLI 28 sends and what comes out with what it prints."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from cli import networks
from cli.client import Client
from cli.main import cli
from cli.port import natural_key
from cli.runflags import ENDPOINT
from engine.errors import EngineError, FailedPrecondition, InvalidArgument, NotFound

Call = tuple[str, str, Any]
Reply = bytes | EngineError | Callable[[Any], bytes]
NET_ID = "4f" * 32


class FakeResponse:
    """What ``Client.request`` returns: a body to read."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, _size: int = -1) -> bytes:
        return self.data


class FakeDaemon:
    """Records requests; answers each ``(method, path)`` from *replies* (b"" when not listed)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.replies: dict[tuple[str, str], Reply] = {}

    def request(self, method: str, path: str, body: object = None, *_: Any, **__: Any) -> Any:
        self.calls.append((method, path, body))
        reply = self.replies.get((method, path), b"")
        if isinstance(reply, EngineError):
            raise reply
        return FakeResponse(reply(body) if callable(reply) else reply)


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    fake = FakeDaemon()
    monkeypatch.setattr(Client, "request", lambda _self, *a, **k: fake.request(*a, **k))
    yield fake


def run(argv: list[str], stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, argv, input=stdin)


def create_body(name: str, config: list[dict[str, str]], **changes: Any) -> dict[str, Any]:
    """docker CLI 28's NetworkCreateRequest for ``network create NAME`` plus *changes*."""
    body = {
        "Driver": "bridge", "Scope": "", "IPAM": {"Driver": "default", "Options": {},
                                                 "Config": config},
        "Internal": False, "Attachable": False, "Ingress": False, "ConfigOnly": False,
        "ConfigFrom": None, "Options": {}, "Labels": {}, "Name": name,
    }  # fmt: skip
    return {**body, **changes}


def test_create_without_ipam_sends_an_empty_config(daemon: FakeDaemon) -> None:
    daemon.replies["POST", "/networks/create"] = orjson.dumps({"Id": NET_ID, "Warning": ""})
    result = run(["network", "create", "backend"])
    assert result.exit_code == 0, result.output
    assert result.output == NET_ID + "\n"
    assert daemon.calls == [("POST", "/networks/create", create_body("backend", []))]


def test_create_with_ipam_and_options(daemon: FakeDaemon) -> None:
    daemon.replies["POST", "/networks/create"] = orjson.dumps({"Id": NET_ID, "Warning": ""})
    argv = ["network", "create", "-d", "bridge", "--subnet", "10.20.0.0/16", "--gateway",
            "10.20.0.1", "--ip-range", "10.20.5.0/24", "--internal", "--attachable", "--label",
            "team=db", "--label", "bare", "-o", "com.docker.network.bridge.name=br-db",
            "--opt", "com.docker.network.driver.mtu=1400", "backend"]  # fmt: skip
    result = run(argv)
    assert result.exit_code == 0, result.output
    expected = create_body(
        "backend",
        [{"Subnet": "10.20.0.0/16", "IPRange": "10.20.5.0/24", "Gateway": "10.20.0.1"}],
        Internal=True, Attachable=True, Labels={"team": "db", "bare": ""},
        Options={"com.docker.network.bridge.name": "br-db",
                 "com.docker.network.driver.mtu": "1400"},
    )  # fmt: skip
    assert daemon.calls == [("POST", "/networks/create", expected)]


def test_create_two_subnets_keep_command_line_order(daemon: FakeDaemon) -> None:
    daemon.replies["POST", "/networks/create"] = orjson.dumps({"Id": NET_ID, "Warning": ""})
    result = run(["network", "create", "--subnet", "10.9.0.0/24,10.8.0.0/24",
                  "--gateway", "10.8.0.254", "n"])  # fmt: skip
    assert result.exit_code == 0, result.output
    config = daemon.calls[0][2]["IPAM"]["Config"]
    assert config == [{"Subnet": "10.9.0.0/24"}, {"Subnet": "10.8.0.0/24", "Gateway": "10.8.0.254"}]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gateway", "10.0.0.1"], "every ip-range or gateway must have a corresponding subnet"),
        (["--subnet", "10.0.0.0/24", "--gateway", "10.1.0.1"], "no matching subnet for gateway"),
        (["--subnet", "10.0.0.0/24", "--ip-range", "10.1.0.0/28"], "no matching subnet for range"),
        (["--subnet", "10.0.0.0/24", "--ip-range", "nope"], "invalid CIDR address: nope"),
        (["--subnet", "10.0.0.0/16", "--subnet", "10.0.1.0/24"], "multiple overlapping subnet"),
        (["--subnet", "10.0.0.0/24", "--subnet", "bad"], "invalid subnet: invalid CIDR address"),
        (["--label", "=x"], "invalid label '=x': empty name"),
    ],
)
def test_create_refuses_bad_ipam_before_sending(
    daemon: FakeDaemon, flags: list[str], message: str
) -> None:
    result = run(["network", "create", *flags, "n"])
    assert result.exit_code == 2 and message in result.output
    assert daemon.calls == []


def test_create_error_from_the_daemon_is_shown_with_its_exit_code(daemon: FakeDaemon) -> None:
    daemon.replies["POST", "/networks/create"] = FailedPrecondition(
        "operation is not permitted on predefined bridge network"
    )
    result = run(["network", "create", "bridge"])
    assert result.exit_code == 4
    assert "Error: operation is not permitted on predefined bridge network" in result.output


@pytest.mark.parametrize("verb", ["rm", "remove"])
def test_rm_goes_on_past_a_failure_and_exits_1(daemon: FakeDaemon, verb: str) -> None:
    daemon.replies["DELETE", "/networks/ghost"] = NotFound("network ghost not found")
    result = run(["network", verb, "a", "ghost", "b"])
    assert result.exit_code == 1
    assert result.stdout == "a\nb\n"
    assert result.stderr == "Error response from daemon: network ghost not found\n"
    assert [c[:2] for c in daemon.calls] == [
        ("DELETE", "/networks/a"), ("DELETE", "/networks/ghost"), ("DELETE", "/networks/b")
    ]  # fmt: skip


def test_rm_force_ignores_missing_networks(daemon: FakeDaemon) -> None:
    daemon.replies["DELETE", "/networks/ghost"] = NotFound("network ghost not found")
    result = run(["network", "rm", "-f", "ghost", "a"])
    assert result.exit_code == 0 and result.stdout == "a\n" and result.stderr == ""


def test_connect_body_without_options(daemon: FakeDaemon) -> None:
    result = run(["network", "connect", "backend", "web"])
    assert result.exit_code == 0 and result.output == ""
    endpoint = {**ENDPOINT, "IPAMConfig": {}, "Aliases": [], "DriverOpts": {}}
    body = {"Container": "web", "EndpointConfig": endpoint}
    assert daemon.calls == [("POST", "/networks/backend/connect", body)]


def test_connect_body_with_alias_ip_and_links(daemon: FakeDaemon) -> None:
    argv = ["network", "connect", "--alias", "db", "--alias", "pg,sql", "--ip", "10.20.0.5",
            "--link", "cache:c", "--link", "queue", "backend", "web"]  # fmt: skip
    result = run(argv)
    assert result.exit_code == 0, result.output
    endpoint = {**ENDPOINT, "IPAMConfig": {"IPv4Address": "10.20.0.5"}, "DriverOpts": {},
                "Aliases": ["db", "pg", "sql"], "Links": ["cache:c", "queue"]}  # fmt: skip
    assert daemon.calls == [
        ("POST", "/networks/backend/connect", {"Container": "web", "EndpointConfig": endpoint})
    ]


def test_connect_refuses_a_bad_link(daemon: FakeDaemon) -> None:
    result = run(["network", "connect", "--link", "a:b:c", "backend", "web"])
    assert result.exit_code == 2 and "bad format for links: a:b:c" in result.output
    assert daemon.calls == []


@pytest.mark.parametrize(("flags", "force"), [([], False), (["-f"], True)])
def test_disconnect_body(daemon: FakeDaemon, flags: list[str], force: bool) -> None:
    result = run(["network", "disconnect", *flags, "backend", "web"])
    assert result.exit_code == 0 and result.output == ""
    body = {"Container": "web", "Force": force}
    assert daemon.calls == [("POST", "/networks/backend/disconnect", body)]


PRUNE_PATH = "/networks/prune?filters=%7B%7D"


def test_prune_asks_first_and_stops_on_no(daemon: FakeDaemon) -> None:
    result = run(["network", "prune"], stdin="n\n")
    assert result.exit_code == 0
    assert result.stdout.startswith(networks.PRUNE_WARNING + "\n")
    assert "Are you sure you want to continue? [y/N]" in result.stdout
    assert result.stderr == "network prune has been cancelled\n"
    assert daemon.calls == []


def test_prune_on_yes_prints_the_deleted_names(daemon: FakeDaemon) -> None:
    daemon.replies["POST", PRUNE_PATH] = orjson.dumps({"NetworksDeleted": ["a", "b"]})
    result = run(["network", "prune"], stdin="y\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("[y/N]: y\nDeleted Networks:\na\nb\n\n")
    assert daemon.calls == [("POST", PRUNE_PATH, None)]


def test_prune_force_with_filter_and_nothing_deleted(daemon: FakeDaemon) -> None:
    path = "/networks/prune?filters=%7B%22until%22%3A%7B%2224h%22%3Atrue%7D%7D"
    daemon.replies["POST", path] = orjson.dumps({"NetworksDeleted": None})
    result = run(["network", "prune", "-f", "--filter", "until=24h"])
    assert result.exit_code == 0 and result.output == ""
    assert daemon.calls == [("POST", path, None)]


INSPECT = {
    "Id": "c" * 64,
    "NetworkSettings": {
        "Ports": {
            "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"},
                       {"HostIp": "::", "HostPort": "8080"}],
            "9/udp": [{"HostIp": "127.0.0.1", "HostPort": "5353"}],
            "443/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8443"}],
            "81/tcp": None,
        }
    },
}  # fmt: skip


@pytest.fixture
def web(daemon: FakeDaemon) -> FakeDaemon:
    daemon.replies["GET", "/containers/web/json"] = orjson.dumps(INSPECT)
    return daemon


def test_port_lists_every_published_port_in_natural_order(web: FakeDaemon) -> None:
    result = run(["port", "web"])
    assert result.exit_code == 0, result.output
    assert result.output == (
        "9/udp -> 127.0.0.1:5353\n"
        "80/tcp -> 0.0.0.0:8080\n"
        "80/tcp -> [::]:8080\n"
        "443/tcp -> 0.0.0.0:8443\n"
    )
    assert web.calls == [("GET", "/containers/web/json", None)]


@pytest.mark.parametrize(
    ("asked", "output"),
    [("80", "0.0.0.0:8080\n[::]:8080\n"), ("80/tcp", "0.0.0.0:8080\n[::]:8080\n"),
     ("9/udp", "127.0.0.1:5353\n")],
)  # fmt: skip
def test_port_of_one_private_port(web: FakeDaemon, asked: str, output: str) -> None:
    result = run(["port", "web", asked])
    assert result.exit_code == 0 and result.output == output


@pytest.mark.parametrize("asked", ["81/tcp", "80/udp", "22"])
def test_port_not_published_is_an_error(web: FakeDaemon, asked: str) -> None:
    result = run(["port", "web", asked])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"Error: No public port '{asked}' published for web\n"


@pytest.mark.parametrize(
    ("asked", "reason"), [("http", "invalid syntax"), ("70000", "value out of range")]
)
def test_port_refuses_a_bad_port_number(web: FakeDaemon, asked: str, reason: str) -> None:
    result = run(["port", "web", asked])
    assert result.exit_code == 1
    assert f'invalid port ({asked}): strconv.ParseUint: parsing "{asked}": {reason}' in (
        result.stderr
    )


def test_port_of_a_container_without_ports_prints_nothing(daemon: FakeDaemon) -> None:
    daemon.replies["GET", "/containers/idle/json"] = orjson.dumps({"NetworkSettings": {}})
    result = run(["port", "idle"])
    assert result.exit_code == 0 and result.output == ""


def test_natural_key_orders_numbers_by_value() -> None:
    words = ["a10", "a9", "a09", "a", "b1", "1b", "a009"]
    assert sorted(words, key=natural_key) == ["1b", "a", "a9", "a09", "a009", "a10", "b1"]


def test_rm_link_sends_the_path_with_link_1(daemon: FakeDaemon) -> None:
    result = run(["rm", "--link", "/web/db"])
    assert result.exit_code == 0 and result.output == "/web/db\n"
    assert daemon.calls == [("DELETE", "/containers/web/db?force=0&v=0&link=1", None)]
    run(["rm", "-l", "web/cache"])
    assert daemon.calls[-1][1] == "/containers/web/cache?force=0&v=0&link=1"


def test_rm_without_link_is_unchanged(daemon: FakeDaemon) -> None:
    assert run(["rm", "web"]).exit_code == 0
    assert daemon.calls == [("DELETE", "/containers/web?force=0&v=0", None)]


CREATED = orjson.dumps({"Id": "d" * 64, "Warnings": []})


def created_endpoints(daemon: FakeDaemon, argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Run ``dockyard create ARGV busybox``; return the NetworkMode and EndpointsConfig sent."""
    daemon.replies["POST", "/containers/create"] = CREATED
    result = run(["create", *argv, "busybox"])
    assert result.exit_code == 0, result.output
    assert [c[:2] for c in daemon.calls] == [("POST", "/containers/create")]
    body = daemon.calls[0][2]
    return body["HostConfig"]["NetworkMode"], body["NetworkingConfig"]["EndpointsConfig"]


def endpoint(**changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(ENDPOINT), **changes}


def test_run_ip_and_alias_keep_the_lone_network_endpoint(daemon: FakeDaemon) -> None:
    argv = ["--network", "backend", "--ip", "10.20.0.9", "--network-alias", "db",
            "--network-alias", "pg"]  # fmt: skip
    mode, endpoints = created_endpoints(daemon, argv)
    assert mode == "backend"
    assert endpoints == {
        "backend": endpoint(IPAMConfig={"IPv4Address": "10.20.0.9"}, Aliases=["db", "pg"])
    }


def test_run_lone_network_without_options_has_no_endpoint(daemon: FakeDaemon) -> None:
    assert created_endpoints(daemon, ["--network", "backend"]) == ("backend", {})


def test_run_link_on_a_user_defined_network_is_an_endpoint_link(daemon: FakeDaemon) -> None:
    _, endpoints = created_endpoints(daemon, ["--network", "backend", "--link", "db:d"])
    assert endpoints == {"backend": endpoint(Links=["db:d"])}
    assert daemon.calls[0][2]["HostConfig"]["Links"] == ["db:d"]


def test_run_options_apply_to_the_first_of_several_networks(daemon: FakeDaemon) -> None:
    argv = ["--network", "a", "--network", "b", "--network-alias", "x"]
    assert created_endpoints(daemon, argv) == ("a", {"a": endpoint(Aliases=["x"]), "b": ENDPOINT})


def test_run_ip_on_the_default_network(daemon: FakeDaemon) -> None:
    mode, endpoints = created_endpoints(daemon, ["--ip", "172.17.0.9", "--link", "db"])
    assert mode == "default"  # a link on the default bridge stays a legacy link only
    assert endpoints == {"default": endpoint(IPAMConfig={"IPv4Address": "172.17.0.9"})}


@pytest.mark.parametrize("network", [[], ["--network", "bridge"], ["--network", "host"]])
def test_run_alias_needs_a_user_defined_network(daemon: FakeDaemon, network: list[str]) -> None:
    result = run(["create", *network, "--network-alias", "x", "busybox"])
    assert result.exit_code == 2
    assert "network-scoped aliases are only supported for user-defined networks" in result.output
    assert daemon.calls == []


def test_client_side_errors_are_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="no matching subnet for gateway 10.0.0.1/8"):
        networks.ipam_configs(["192.168.0.0/24"], [], ["10.0.0.1/8"])
    assert networks.ipam_configs(["192.168.0.0/24"], [], ["192.168.0.1"]) == [
        {"Subnet": "192.168.0.0/24", "Gateway": "192.168.0.1"}
    ]
