"""Legacy links: parsing ``--link``, the parent's variables and hosts lines, inspect, rules."""

from __future__ import annotations

import pytest

from drivers.network.base import LinkRule
from engine.errors import InvalidArgument
from jobs.links import (
    env_prefix,
    hosts_entries,
    inspect_links,
    link_env,
    link_rules,
    parse_link,
    parse_port,
)

FIELD = "HostConfig.Links[0]"
CHILD_ID = "4f1d6c3a9b2e7d8c0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("db", ("db", "db")),
        ("db:database", ("db", "database")),
        ("/db:/web/database", ("db", "database")),
        ("/db", ("db", "db")),
        ("my_db.1:my-alias", ("my_db.1", "my-alias")),
        ("4f1d6c3a9b2e:db", ("4f1d6c3a9b2e", "db")),
    ],
)
def test_parse_link_forms(spec: str, expected: tuple[str, str]) -> None:
    assert parse_link(spec, FIELD) == expected


@pytest.mark.parametrize(
    "spec",
    [
        "a:b:c",
        "",
        ":db",
        "db:",
        "db:a",
        "db:bad alias",
        "db:-x",
        "bad name:db",
        "web/db:x",
        "/db:/",
    ],
)
def test_parse_link_rejects(spec: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_link(spec, FIELD)
    assert str(info.value).startswith(f'{FIELD}: invalid link "{spec}"')


def test_parse_port() -> None:
    assert parse_port("80/tcp") == (80, "tcp")
    assert parse_port("53/UDP") == (53, "udp")
    assert parse_port("8080") == (8080, "tcp")
    for bad in ("http/tcp", "²/tcp", "0/tcp", "65536/tcp", "80/icmp", "", "80-81/tcp"):
        with pytest.raises(InvalidArgument, match="Config.ExposedPorts"):
            parse_port(bad)


def test_env_of_child_exposing_80() -> None:
    env = link_env("db", "web", "172.17.0.5", {"80/tcp": {}}, [])
    assert env == [
        "DB_PORT=tcp://172.17.0.5:80",
        "DB_PORT_80_TCP=tcp://172.17.0.5:80",
        "DB_PORT_80_TCP_ADDR=172.17.0.5",
        "DB_PORT_80_TCP_PORT=80",
        "DB_PORT_80_TCP_PROTO=tcp",
        "DB_NAME=/web/db",
    ]


def test_env_without_ports_has_name_only() -> None:
    assert link_env("db", "/web", "172.17.0.5", [], ["HOME=/root"]) == ["DB_NAME=/web/db"]


def test_env_prefers_tcp_on_same_port() -> None:
    env = link_env("dns", "web", "10.0.0.2", ["53/udp", "53/tcp"], [])
    assert env[0] == "DNS_PORT=tcp://10.0.0.2:53"
    assert env[1:9] == [
        "DNS_PORT_53_TCP=tcp://10.0.0.2:53",
        "DNS_PORT_53_TCP_ADDR=10.0.0.2",
        "DNS_PORT_53_TCP_PORT=53",
        "DNS_PORT_53_TCP_PROTO=tcp",
        "DNS_PORT_53_UDP=udp://10.0.0.2:53",
        "DNS_PORT_53_UDP_ADDR=10.0.0.2",
        "DNS_PORT_53_UDP_PORT=53",
        "DNS_PORT_53_UDP_PROTO=udp",
    ]


def test_env_lowest_port_wins_over_protocol() -> None:
    env = link_env("dns", "web", "10.0.0.2", ["54/tcp", "53/udp"], [])
    assert env[0] == "DNS_PORT=udp://10.0.0.2:53"


def test_env_contiguous_range() -> None:
    env = link_env("app", "web", "10.0.0.3", ["8002/tcp", "8000/tcp", "8001/tcp"], [])
    ranged = [
        "APP_PORT_8000_TCP_START=tcp://10.0.0.3:8000",
        "APP_PORT_8000_TCP_PORT_START=8000",
        "APP_PORT_8000_TCP_END=tcp://10.0.0.3:8002",
        "APP_PORT_8000_TCP_PORT_END=8002",
    ]
    assert env[:5] == ["APP_PORT=tcp://10.0.0.3:8000", *ranged]
    values = dict(entry.split("=", 1) for entry in env)
    # The range's _ADDR and _PROTO are the first port's own variables.
    assert values["APP_PORT_8000_TCP_ADDR"] == "10.0.0.3"
    assert values["APP_PORT_8000_TCP_PROTO"] == "tcp"
    for port in (8000, 8001, 8002):
        assert values[f"APP_PORT_{port}_TCP"] == f"tcp://10.0.0.3:{port}"
        assert values[f"APP_PORT_{port}_TCP_PORT"] == str(port)
    assert len(values) == len(env)  # no variable is set twice


def test_env_range_needs_three_ports_of_one_protocol() -> None:
    two = link_env("app", "web", "10.0.0.3", ["8000/tcp", "8001/tcp"], [])
    mixed = link_env("app", "web", "10.0.0.3", ["8000/tcp", "8001/udp", "8002/tcp"], [])
    assert not [e for e in two + mixed if "_START=" in e or "_END=" in e]
    udp = link_env("app", "web", "10.0.0.3", ["7/tcp", "60/udp", "61/udp", "62/udp", "63/udp"], [])
    assert "APP_PORT_60_UDP_START=udp://10.0.0.3:60" in udp
    assert "APP_PORT_60_UDP_END=udp://10.0.0.3:63" in udp
    assert "APP_PORT=tcp://10.0.0.3:7" in udp


def test_env_copies_child_env_except_home_and_path() -> None:
    child_env = ["HOME=/root", "PATH=/usr/bin", "PASSWORD=gordon", "OPTS=a=b", "EMPTY=", "BARE"]
    env = link_env("db", "web", "172.17.0.5", [], child_env)
    assert env == [
        "DB_NAME=/web/db",
        "DB_ENV_PASSWORD=gordon",
        "DB_ENV_OPTS=a=b",
        "DB_ENV_EMPTY=",
    ]


def test_alias_with_dash_and_dot() -> None:
    assert env_prefix("my-db.v2") == "MY_DB_V2"
    env = link_env("my-db", "web", "172.17.0.5", ["6379/tcp"], [])
    assert env[0] == "MY_DB_PORT=tcp://172.17.0.5:6379"
    assert env[-1] == "MY_DB_NAME=/web/my-db"


def test_env_rejects_bad_port_key() -> None:
    with pytest.raises(InvalidArgument, match="Config.ExposedPorts"):
        link_env("db", "web", "172.17.0.5", ["eighty/tcp"], [])


def test_hosts_entries() -> None:
    other_id = "a" * 64
    entries = hosts_entries(
        [
            ("web-db", "/db", CHILD_ID, "172.17.0.5"),
            ("cache", "cache", other_id, "172.17.0.6"),
            ("gone", "nonet", "b" * 64, ""),
        ]
    )
    assert entries == [
        ("172.17.0.6", "cache aaaaaaaaaaaa"),
        ("172.17.0.5", "web-db 4f1d6c3a9b2e db"),
    ]


def test_hosts_entries_order_does_not_depend_on_input() -> None:
    links = [("b1", "x1", CHILD_ID, "10.0.0.2"), ("a1", "x2", CHILD_ID, "10.0.0.3")]
    assert hosts_entries(links) == hosts_entries(reversed(links))
    assert [names.split()[0] for _, names in hosts_entries(links)] == ["a1", "b1"]


def test_inspect_links() -> None:
    edges = [("/db", "/web/db"), ("cache", "/web/aa-cache")]
    assert inspect_links(edges) == ["/cache:/web/aa-cache", "/db:/web/db"]
    assert inspect_links([]) == []


def test_link_rules() -> None:
    rules = link_rules("172.17.0.2", "172.17.0.5", {"53/udp": {}, "80/tcp": {}, "53/tcp": {}})
    assert rules == [
        LinkRule(parent_ip="172.17.0.2", child_ip="172.17.0.5", port=53, proto="tcp"),
        LinkRule(parent_ip="172.17.0.2", child_ip="172.17.0.5", port=53, proto="udp"),
        LinkRule(parent_ip="172.17.0.2", child_ip="172.17.0.5", port=80, proto="tcp"),
    ]
    assert link_rules("172.17.0.2", "172.17.0.5", []) == []
