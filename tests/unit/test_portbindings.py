"""``HostConfig.PortBindings`` / ``PublishAllPorts`` / ``Config.ExposedPorts``: parsing, errors
naming the field, and the ``NetworkSettings.Ports`` and ps ``Ports`` shapes."""

from __future__ import annotations

import pytest

from drivers.network.base import PortMap
from engine.errors import InvalidArgument, NotSupported
from jobs.portbindings import Binding, parse_port_bindings, port_map_json, ps_ports

B = Binding

VALID = [
    ({"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}, [B("tcp", 80, "", 8080)]),
    ({"80": [{"HostPort": "8080"}]}, [B("tcp", 80, "", 8080)]),
    ({"53/udp": [{"HostIp": "127.0.0.1", "HostPort": "53"}]}, [B("udp", 53, "127.0.0.1", 53)]),
    ({"80/tcp": [{"HostIp": "::1", "HostPort": ""}]}, [B("tcp", 80, "::1", 0)]),
    ({"80/tcp": [{"HostIp": "2001:db8::68", "HostPort": "0"}]}, [B("tcp", 80, "2001:db8::68", 0)]),
    ({"80/tcp": [{}]}, [B("tcp", 80, "", 0)]),
    ({"80/tcp": [None]}, [B("tcp", 80, "", 0)]),
    ({"80/tcp": [{"HostPort": "8000-8010"}]}, [B("tcp", 80, "", 8000, 8010)]),
    ({"80/tcp": [{"HostPort": "8000-8000"}]}, [B("tcp", 80, "", 8000)]),
    ({"80/tcp": [{"HostPort": "08080"}]}, [B("tcp", 80, "", 8080)]),
    ({"80/tcp": [{"HostPort": "65535"}]}, [B("tcp", 80, "", 65535)]),
    ({"80/tcp": None}, []),
    ({"80/tcp": []}, []),
    ({"3456/sctp": []}, []),
    (None, []),
    ({}, []),
    (
        {"80/tcp": [{"HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": "9090"}]},
        [B("tcp", 80, "", 8080), B("tcp", 80, "127.0.0.1", 9090)],
    ),
]


@pytest.mark.parametrize(("raw", "want"), VALID)
def test_valid_forms(raw: object, want: list[Binding]) -> None:
    assert parse_port_bindings(raw, {}, publish_all=False) == want


K = 'HostConfig.PortBindings["80/tcp"]'
INVALID = [
    ("x", "HostConfig.PortBindings: expected object, got string"),
    ({"80/tcp": "8080"}, f"{K}: expected array, got string"),
    ({"80/tcp": {"HostPort": "1"}}, f"{K}: expected array, got object"),
    ({"80/tcp": ["8080"]}, f"{K}[0]: expected object, got string"),
    ({"80/tcp": [{"HostPort": 8080}]}, f"{K}[0].HostPort: expected string, got integer"),
    ({"80/tcp": [{"HostIp": 1}]}, f"{K}[0].HostIp: expected string, got integer"),
    ({"80/tcp": [{"HostPort": "x"}]}, f'{K}[0].HostPort: invalid port specification: "x"'),
    ({"80/tcp": [{"HostPort": "-1"}]}, f'{K}[0].HostPort: invalid port specification: "-1"'),
    ({"80/tcp": [{"HostPort": "65536"}]}, f'{K}[0].HostPort: invalid port specification: "65536"'),
    ({"80/tcp": [{"HostPort": "123456"}]}, f'{K}[0].HostPort: invalid port specification: '
     '"123456"'),
    ({"80/tcp": [{"HostPort": "8010-8000"}]}, f'{K}[0].HostPort: invalid port specification: '
     '"8010-8000"'),
    ({"80/tcp": [{"HostPort": "0-10"}]}, f'{K}[0].HostPort: invalid port specification: "0-10"'),
    ({"80/tcp": [{"HostPort": "8000-"}]}, f'{K}[0].HostPort: invalid port specification: "8000-"'),
    ({"80/tcp": [{"HostPort": " 80"}]}, f'{K}[0].HostPort: invalid port specification: " 80"'),
    ({"80/tcp": [{"HostPort": "٨٠"}]}, f'{K}[0].HostPort: invalid port specification: "٨٠"'),
    ({"80/tcp": [{"HostPort": "80/tcp"}]}, f'{K}[0].HostPort: invalid port specification: '
     '"80/tcp"'),
    ({"80/tcp": [{}, {"HostIp": "localhost"}]}, f"{K}[1].HostIp: invalid IP address: localhost"),
    ({"80/tcp": [{"HostIp": "[::1]"}]}, f"{K}[0].HostIp: invalid IP address: [::1]"),
    ({"80/tcp": [{"HostIp": "1.2.3"}]}, f"{K}[0].HostIp: invalid IP address: 1.2.3"),
    ({"80-81/tcp": []}, 'HostConfig.PortBindings["80-81/tcp"]: invalid port specification: '
     '"80-81"'),
    ({"asdf": []}, 'HostConfig.PortBindings["asdf"]: invalid port specification: "asdf"'),
    ({"": []}, 'HostConfig.PortBindings[""]: invalid port specification: ""'),
    ({"/tcp": []}, 'HostConfig.PortBindings["/tcp"]: invalid port specification: ""'),
    ({"0/tcp": []}, 'HostConfig.PortBindings["0/tcp"]: invalid port specification: "0"'),
    ({"65536/tcp": []}, 'HostConfig.PortBindings["65536/tcp"]: invalid port specification: '
     '"65536"'),
    ({"80/foo": []}, 'HostConfig.PortBindings["80/foo"]: invalid proto: foo'),
    ({"80/TCP": []}, 'HostConfig.PortBindings["80/TCP"]: invalid proto: TCP'),
    ({"80/": []}, 'HostConfig.PortBindings["80/"]: invalid proto: '),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "message"), INVALID)
def test_invalid_forms(raw: object, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_port_bindings(raw, {}, publish_all=False)
    assert str(err.value) == message


def test_bad_exposed_key_names_config_field() -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_port_bindings({}, {"80/foo": {}}, publish_all=True)
    assert str(err.value) == 'Config.ExposedPorts["80/foo"]: invalid proto: foo'


def test_sctp_binding_is_not_supported() -> None:
    with pytest.raises(NotSupported) as err:
        parse_port_bindings({"3456/sctp": [{"HostPort": "3456"}]}, {}, publish_all=False)
    assert str(err.value).startswith('HostConfig.PortBindings["3456/sctp"]: sctp ports cannot')


def test_sctp_with_publish_all_is_not_supported() -> None:
    with pytest.raises(NotSupported) as err:
        parse_port_bindings(None, {"3456/sctp": {}}, publish_all=True)
    assert str(err.value).startswith("HostConfig.PublishAllPorts: cannot publish 3456/sctp")
    assert parse_port_bindings(None, {"3456/sctp": {}}, publish_all=False) == []


def test_default_ip_fills_empty_host_ip() -> None:
    raw = {"80/tcp": [{"HostPort": "1"}, {"HostIp": "127.0.0.1", "HostPort": "2"}]}
    got = parse_port_bindings(raw, {}, publish_all=False, default_ip="10.0.0.1")
    assert got == [B("tcp", 80, "10.0.0.1", 1), B("tcp", 80, "127.0.0.1", 2)]


def test_publish_all_binds_every_exposed_port_without_binding() -> None:
    exposed: dict[str, object] = {
        "90/tcp": {},
        "80/tcp": {},
        "53/udp": {},
        "7000-7001/tcp": {},
        "22": {},
    }
    raw = {"80/tcp": [{"HostPort": "8080"}], "100/udp": None}
    got = parse_port_bindings(raw, exposed, publish_all=True, default_ip="0.0.0.0")
    assert got == [
        B("tcp", 22, "0.0.0.0", 0),
        B("udp", 53, "0.0.0.0", 0),
        B("tcp", 80, "0.0.0.0", 8080),
        B("tcp", 90, "0.0.0.0", 0),
        B("udp", 100, "0.0.0.0", 0),  # a key of PortBindings counts as exposed
        B("tcp", 7000, "0.0.0.0", 0),
        B("tcp", 7001, "0.0.0.0", 0),
    ]
    assert parse_port_bindings(raw, exposed, publish_all=False) == [B("tcp", 80, "", 8080)]


def test_sorted_by_container_port_then_proto() -> None:
    raw = {
        "9000/udp": [{"HostPort": "1"}],
        "53/udp": [{"HostPort": "2"}],
        "53/tcp": [{"HostPort": "3"}],
        "1000": [{"HostPort": "4"}],
    }
    got = parse_port_bindings(raw, {}, publish_all=False)
    assert [(b.container_port, b.proto, b.host_port) for b in got] == [
        (53, "tcp", 3),
        (53, "udp", 2),
        (1000, "tcp", 4),
        (9000, "udp", 1),
    ]


def test_binding_key_and_mapped() -> None:
    b = B("udp", 53, "127.0.0.1", 0)
    assert b.key == "53/udp"
    assert b.mapped("172.17.0.2", 40000) == PortMap("udp", "127.0.0.1", 40000, "172.17.0.2", 53)


PUBLISHED = [
    PortMap("tcp", "0.0.0.0", 8080, "172.17.0.2", 80),
    PortMap("tcp", "::", 8080, "172.17.0.2", 80),
    PortMap("udp", "", 40001, "172.17.0.2", 53),
]


def test_port_map_json_shape() -> None:
    got = port_map_json(["80/tcp", "81/tcp", "53/udp", "7000-7001"], PUBLISHED)
    assert got == {
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "40001"}],
        "80/tcp": [
            {"HostIp": "0.0.0.0", "HostPort": "8080"},
            {"HostIp": "::", "HostPort": "8080"},
        ],
        "81/tcp": None,
        "7000/tcp": None,
        "7001/tcp": None,
    }
    assert list(got) == ["53/udp", "80/tcp", "81/tcp", "7000/tcp", "7001/tcp"]
    assert port_map_json([], []) == {}
    # a published port that is not in ExposedPorts is shown all the same
    assert port_map_json([], PUBLISHED[2:]) == {
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "40001"}]
    }


def test_ps_ports_shape() -> None:
    got = ps_ports(["80/tcp", "81/tcp", "53/udp"], PUBLISHED)
    assert got == [
        {"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 40001, "Type": "udp"},
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"PrivatePort": 81, "Type": "tcp"},
    ]
    assert ps_ports([], []) == []
