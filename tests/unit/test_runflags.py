"""``cli/runflags``: docker's run/create flags, parsed by click and turned into the create body.

Every expected body below is what docker CLI 28.2.2 sent for the same argv: each argv was run as
``docker create ...`` / ``docker run ...`` against the recording fake daemon of
``shared/tools/docker-api-probe`` (advertising API 1.45, so the CLI used ``/v1.45``), and the
``POST /containers/create`` body it logged was copied here as BASE plus the fields that differ.
Compared: the whole body, key by key and value by value, for 48 flag combinations, and the query
(``name``, ``platform``); then docker's error text for bad values.

Two things differ on purpose, as docker's own output is random there (Go map order): the order of
``HostConfig.Binds`` and of ``Env`` when an ``-e`` key repeats; dockyard keeps the command-line
order (``test_repeated_keys_keep_command_line_order``). For ``-e KEY`` the CLI's environment held
B="from env" and Y="why"; ``./`` paths were relative to /srv/app; the env file is ENV_FILE_TEXT.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from cli.runflags import (
    RUN_CONTEXT,
    create_options,
    create_query,
    ram_in_bytes,
    run_options,
    to_create_body,
    to_update_body,
)
from engine.errors import InvalidArgument

ENVIRON = {"B": "from env", "Y": "why"}
CWD = "/srv/app"
ENV_FILE_TEXT = "# comment\n  X=1\nY\n\nZ= spaced \nUNSETV\nW=a=b\n"
BASE_CONFIG: dict[str, Any] = {
    "Hostname": "",
    "Domainname": "",
    "User": "",
    "AttachStdin": False,
    "AttachStdout": True,
    "AttachStderr": True,
    "Tty": False,
    "OpenStdin": False,
    "StdinOnce": False,
    "Env": None,
    "Cmd": None,
    "Image": "busybox",
    "Volumes": {},
    "WorkingDir": "",
    "Entrypoint": None,
    "OnBuild": None,
    "Labels": {},
}
BASE_HOST: dict[str, Any] = {
    "Binds": None,
    "ContainerIDFile": "",
    "LogConfig": {"Type": "", "Config": {}},
    "NetworkMode": "default",
    "PortBindings": {},
    "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
    "AutoRemove": False,
    "VolumeDriver": "",
    "VolumesFrom": None,
    "ConsoleSize": [0, 0],
    "CapAdd": None,
    "CapDrop": None,
    "CgroupnsMode": "",
    "Dns": [],
    "DnsOptions": [],
    "DnsSearch": [],
    "ExtraHosts": None,
    "GroupAdd": None,
    "IpcMode": "",
    "Cgroup": "",
    "Links": None,
    "OomScoreAdj": 0,
    "PidMode": "",
    "Privileged": False,
    "PublishAllPorts": False,
    "ReadonlyRootfs": False,
    "SecurityOpt": None,
    "UTSMode": "",
    "UsernsMode": "",
    "ShmSize": 0,
    "Isolation": "",
    "CpuShares": 0,
    "Memory": 0,
    "NanoCpus": 0,
    "CgroupParent": "",
    "BlkioWeight": 0,
    "BlkioWeightDevice": [],
    "BlkioDeviceReadBps": [],
    "BlkioDeviceWriteBps": [],
    "BlkioDeviceReadIOps": [],
    "BlkioDeviceWriteIOps": [],
    "CpuPeriod": 0,
    "CpuQuota": 0,
    "CpuRealtimePeriod": 0,
    "CpuRealtimeRuntime": 0,
    "CpusetCpus": "",
    "CpusetMems": "",
    "Devices": [],
    "DeviceCgroupRules": None,
    "DeviceRequests": None,
    "MemoryReservation": 0,
    "MemorySwap": 0,
    "MemorySwappiness": -1,
    "OomKillDisable": False,
    "PidsLimit": 0,
    "Ulimits": [],
    "CpuCount": 0,
    "CpuPercent": 0,
    "IOMaximumIOps": 0,
    "IOMaximumBandwidth": 0,
    "MaskedPaths": None,
    "ReadonlyPaths": None,
}
ENDPOINT: dict[str, Any] = {
    "IPAMConfig": None, "Links": None, "Aliases": None, "MacAddress": "", "DriverOpts": None,
    "GwPriority": 0, "NetworkID": "", "EndpointID": "", "Gateway": "", "IPAddress": "",
    "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
    "DNSNames": None,
}  # fmt: skip


def case(
    id: str,
    argv: list[str],
    config: dict[str, Any] | None = None,
    host: dict[str, Any] | None = None,
    networks: list[str] | None = None,
) -> Any:
    """One probe: argv (``create``/``run`` first) and docker's body: BASE with these fields."""
    body = {**copy.deepcopy(BASE_CONFIG), **(config or {})}
    body["HostConfig"] = {**copy.deepcopy(BASE_HOST), **(host or {})}
    names = ["default"] if networks is None else networks
    endpoints = {n: dict(ENDPOINT) for n in names} if networks is None or len(names) > 1 else {}
    body["NetworkingConfig"] = {"EndpointsConfig": endpoints}
    return pytest.param(argv, body, id=id)


CASES = [
    case("cmd", ["create", "busybox", "echo", "hi"], config={"Cmd": ["echo", "hi"]}),
    case(
        "run_d",
        ["run", "-d", "busybox", "echo", "hi"],
        config={"AttachStdout": False, "AttachStderr": False, "Cmd": ["echo", "hi"]},
    ),
    case(
        "env",
        ["create", "-e", "A=1", "-e", "B", "-e", "C", "--env", "D=", "busybox"],
        config={"Env": ["A=1", "B=from env", "C", "D="]},
    ),
    case(
        "envfile",
        ["create", "--env-file", "ENVFILE", "-e", "A=2", "busybox"],
        config={"Env": ["X=1", "Y=why", "Z= spaced ", "W=a=b", "A=2"]},
    ),
    case(
        "labels",
        ["create", "-l", "a=b", "-l", "c", "--label", "d=e=f", "busybox"],
        config={"Labels": {"a": "b", "c": "", "d": "e=f"}},
    ),
    case(
        "volumes",
        ["create", "-v", "/host:/ctr:ro", "-v", "named:/data", "-v", "/anon", "busybox"],
        config={"Volumes": {"/anon": {}}},
        host={"Binds": ["/host:/ctr:ro", "named:/data"]},
    ),
    case(
        "vol_rel",
        ["create", "-v", "./rel:/y", "-v", "rel:/z:rw,z", "busybox"],
        host={"Binds": ["/srv/app/rel:/y", "rel:/z:rw,z"]},
    ),
    case(
        "mounts",
        [
            "create",
            "--mount",
            "type=bind,source=/h,target=/t,readonly",
            "--mount",
            "type=volume,source=v,target=/d",
            "--mount",
            "type=tmpfs,target=/tmp,tmpfs-size=1m",
            "--mount",
            "target=/x",
            "busybox",
        ],
        host={
            "Mounts": [
                {"Type": "bind", "Source": "/h", "Target": "/t", "ReadOnly": True},
                {"Type": "volume", "Source": "v", "Target": "/d"},
                {"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": 1048576}},
                {"Type": "volume", "Target": "/x"},
            ]
        },
    ),
    case(
        "mount_more",
        [
            "create",
            "--mount",
            "type=bind,src=/h,dst=/t,ro=true,bind-propagation=rslave",
            "--mount",
            "type=volume,source=v,target=/d,volume-opt=a=b,volume-nocopy,volume-label=x=y,volume-driver=local",
            "--mount",
            "type=tmpfs,dst=/tm,tmpfs-mode=1770",
            "busybox",
        ],
        host={
            "Mounts": [
                {
                    "Type": "bind",
                    "Source": "/h",
                    "Target": "/t",
                    "ReadOnly": True,
                    "BindOptions": {"Propagation": "rslave"},
                },
                {
                    "Type": "volume",
                    "Source": "v",
                    "Target": "/d",
                    "VolumeOptions": {
                        "NoCopy": True,
                        "Labels": {"x": "y"},
                        "DriverConfig": {"Name": "local", "Options": {"a": "b"}},
                    },
                },
                {"Type": "tmpfs", "Target": "/tm", "TmpfsOptions": {"Mode": 1016}},
            ]
        },
    ),
    case(
        "mount_bool",
        ["create", "--mount", "type=volume,target=/v,volume-nocopy=false,ro=0", "busybox"],
        host={
            "Mounts": [{"Type": "volume", "Target": "/v", "VolumeOptions": {"DriverConfig": {}}}]
        },
    ),
    case(
        "tmpfs_mode",
        ["create", "--mount", "type=tmpfs,target=/t,tmpfs-size=64m,tmpfs-mode=0700", "busybox"],
        host={
            "Mounts": [
                {
                    "Type": "tmpfs",
                    "Target": "/t",
                    "TmpfsOptions": {"SizeBytes": 67108864, "Mode": 448},
                }
            ]
        },
    ),
    case(
        "tmpfs",
        ["create", "--tmpfs", "/run:rw,size=64m", "--tmpfs", "/x", "busybox"],
        host={"Tmpfs": {"/run": "rw,size=64m", "/x": ""}},
    ),
    case(
        "volumes_from",
        ["create", "--volumes-from", "c1:ro", "--volumes-from", "c2", "busybox"],
        host={"VolumesFrom": ["c1:ro", "c2"]},
    ),
    case(
        "identity",
        [
            "create",
            "-w",
            "/w",
            "-u",
            "1000:1000",
            "-h",
            "host",
            "--domainname",
            "dom",
            "--name",
            "nm",
            "busybox",
        ],
        config={"Hostname": "host", "Domainname": "dom", "User": "1000:1000", "WorkingDir": "/w"},
    ),
    case(
        "tty_i",
        ["create", "-t", "-i", "busybox"],
        config={"AttachStdin": True, "Tty": True, "OpenStdin": True, "StdinOnce": True},
    ),
    case(
        "run_i",
        ["run", "-i", "busybox", "true"],
        config={"AttachStdin": True, "OpenStdin": True, "StdinOnce": True, "Cmd": ["true"]},
    ),
    case(
        "run_di",
        ["run", "-d", "-i", "-t", "busybox"],
        config={"AttachStdout": False, "AttachStderr": False, "Tty": True, "OpenStdin": True},
    ),
    case(
        "attach_stdin",
        ["create", "-a", "stdin", "-a", "stderr", "busybox"],
        config={"AttachStdin": True, "AttachStdout": False},
    ),
    case(
        "entry_empty",
        ["create", "--entrypoint", "", "busybox", "ls"],
        config={"Cmd": ["ls"], "Entrypoint": [""]},
    ),
    case(
        "entry_words",
        ["create", "--entrypoint", "sh", "busybox", "-c", "echo hi"],
        config={"Cmd": ["-c", "echo hi"], "Entrypoint": ["sh"]},
    ),
    case(
        "restart_onf",
        ["create", "--restart", "on-failure:3", "busybox"],
        host={"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}},
    ),
    case("rm", ["create", "--rm", "busybox"], host={"AutoRemove": True}),
    case(
        "memory",
        [
            "create",
            "-m",
            "64m",
            "--memory-swap",
            "128m",
            "--memory-reservation",
            "32m",
            "--shm-size",
            "1g",
            "busybox",
        ],
        host={
            "ShmSize": 1073741824,
            "Memory": 67108864,
            "MemoryReservation": 33554432,
            "MemorySwap": 134217728,
        },
    ),
    case(
        "mem_variants",
        ["create", "-m", "1.5g", "--memory-reservation", "100", "--shm-size", "64MiB", "busybox"],
        host={"ShmSize": 67108864, "Memory": 1610612736, "MemoryReservation": 100},
    ),
    case(
        "memory_swap_neg",
        ["create", "-m", "64m", "--memory-swap", "-1", "busybox"],
        host={"Memory": 67108864, "MemorySwap": -1},
    ),
    case("cpus", ["create", "--cpus", "1.5", "busybox"], host={"NanoCpus": 1500000000}),
    case("cpus_frac", ["create", "--cpus", "3/2", "busybox"], host={"NanoCpus": 1500000000}),
    case(
        "cpu",
        [
            "create",
            "-c",
            "512",
            "--cpu-period",
            "100000",
            "--cpu-quota",
            "50000",
            "--cpuset-cpus",
            "0-1",
            "--cpuset-mems",
            "0",
            "--pids-limit",
            "100",
            "busybox",
        ],
        host={
            "CpuShares": 512,
            "CpuPeriod": 100000,
            "CpuQuota": 50000,
            "CpusetCpus": "0-1",
            "CpusetMems": "0",
            "PidsLimit": 100,
        },
    ),
    case(
        "security",
        [
            "create",
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "ALL",
            "--privileged",
            "--security-opt",
            "no-new-privileges",
            "--read-only",
            "--init",
            "busybox",
        ],
        host={
            "CapAdd": ["CAP_NET_ADMIN"],
            "CapDrop": ["ALL"],
            "Privileged": True,
            "ReadonlyRootfs": True,
            "SecurityOpt": ["no-new-privileges"],
            "Init": True,
        },
    ),
    case(
        "cap_lower",
        [
            "create",
            "--cap-add",
            "sys_admin",
            "--cap-add",
            "CAP_CHOWN",
            "--cap-drop",
            "net_raw",
            "busybox",
        ],
        host={"CapAdd": ["CAP_CHOWN", "CAP_SYS_ADMIN"], "CapDrop": ["CAP_NET_RAW"]},
    ),
    case(
        "caps",
        [
            "create",
            "--cap-add",
            "ALL",
            "--cap-add",
            "chown",
            "--cap-drop",
            "chown",
            "--cap-drop",
            "net_raw",
            "busybox",
        ],
        host={"CapAdd": ["ALL", "CAP_CHOWN"], "CapDrop": ["CAP_CHOWN", "CAP_NET_RAW"]},
    ),
    case(
        "net_none",
        ["create", "--network", "none", "busybox"],
        host={"NetworkMode": "none"},
        networks=[],
    ),
    case(
        "net_two",
        ["create", "--network", "a", "--network", "b", "busybox"],
        host={"NetworkMode": "a"},
        networks=["a", "b"],
    ),
    case(
        "devices",
        ["create", "--device", "/dev/fuse", "--device", "/dev/sda:/dev/xvda:r", "busybox"],
        host={
            "Devices": [
                {
                    "PathOnHost": "/dev/fuse",
                    "PathInContainer": "/dev/fuse",
                    "CgroupPermissions": "rwm",
                },
                {
                    "PathOnHost": "/dev/sda",
                    "PathInContainer": "/dev/xvda",
                    "CgroupPermissions": "r",
                },
            ]
        },
    ),
    case(
        "devices2",
        ["create", "--device", "/dev/sda:rw", "--device", "/dev/null:/dev/n", "busybox"],
        host={
            "Devices": [
                {
                    "PathOnHost": "/dev/sda",
                    "PathInContainer": "/dev/sda",
                    "CgroupPermissions": "rw",
                },
                {
                    "PathOnHost": "/dev/null",
                    "PathInContainer": "/dev/n",
                    "CgroupPermissions": "rwm",
                },
            ]
        },
    ),
    case(
        "sysctl_ulimit",
        [
            "create",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--ulimit",
            "nofile=1024:2048",
            "--ulimit",
            "nproc=10",
            "busybox",
        ],
        host={
            "Sysctls": {"net.ipv4.ip_forward": "1"},
            "Ulimits": [
                {"Name": "nofile", "Hard": 2048, "Soft": 1024},
                {"Name": "nproc", "Hard": 10, "Soft": 10},
            ],
        },
    ),
    case(
        "ulimit_neg",
        ["create", "--ulimit", "nofile=-1", "--ulimit", "core=-1:-1", "busybox"],
        host={
            "Ulimits": [
                {"Name": "core", "Hard": -1, "Soft": -1},
                {"Name": "nofile", "Hard": -1, "Soft": -1},
            ]
        },
    ),
    case(
        "misc",
        [
            "create",
            "--cgroup-parent",
            "cg",
            "--stop-signal",
            "SIGKILL",
            "--stop-timeout",
            "5",
            "--log-driver",
            "json-file",
            "--log-opt",
            "max-size=10m",
            "busybox",
        ],
        config={"StopSignal": "SIGKILL", "StopTimeout": 5},
        host={
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}},
            "CgroupParent": "cg",
        },
    ),
    case(
        "dns",
        [
            "create",
            "--add-host",
            "a:1.2.3.4",
            "--dns",
            "8.8.8.8",
            "--dns-search",
            "x.example",
            "--dns-option",
            "ndots:2",
            "--group-add",
            "audio",
            "busybox",
        ],
        host={
            "Dns": ["8.8.8.8"],
            "DnsOptions": ["ndots:2"],
            "DnsSearch": ["x.example"],
            "ExtraHosts": ["a:1.2.3.4"],
            "GroupAdd": ["audio"],
        },
    ),
    case(
        "add_host2",
        ["create", "--add-host", "a=1.2.3.4", "--add-host", "b:host-gateway", "busybox"],
        host={"ExtraHosts": ["a:1.2.3.4", "b:host-gateway"]},
    ),
    case(
        "ns",
        ["create", "--pid", "host", "--ipc", "host", "--uts", "host", "busybox"],
        host={"IpcMode": "host", "PidMode": "host", "UTSMode": "host"},
    ),
    case(
        "ports",
        [
            "create",
            "-p",
            "8080:80",
            "-p",
            "127.0.0.1:53:53/udp",
            "-P",
            "--expose",
            "90",
            "--link",
            "c1:alias",
            "busybox",
        ],
        config={"ExposedPorts": {"53/udp": {}, "80/tcp": {}, "90/tcp": {}}},
        host={
            "PortBindings": {
                "53/udp": [{"HostIp": "127.0.0.1", "HostPort": "53"}],
                "80/tcp": [{"HostIp": "", "HostPort": "8080"}],
            },
            "Links": ["c1:alias"],
            "PublishAllPorts": True,
        },
    ),
    case(
        "ports_more",
        [
            "create",
            "-p",
            "80",
            "-p",
            "8000-8001:80-81",
            "-p",
            "127.0.0.1::22",
            "--expose",
            "1000-1002/udp",
            "busybox",
        ],
        config={
            "ExposedPorts": {
                "1000/udp": {},
                "1001/udp": {},
                "1002/udp": {},
                "22/tcp": {},
                "80/tcp": {},
                "81/tcp": {},
            }
        },
        host={
            "PortBindings": {
                "22/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
                "80/tcp": [{"HostIp": "", "HostPort": ""}, {"HostIp": "", "HostPort": "8000"}],
                "81/tcp": [{"HostIp": "", "HostPort": "8001"}],
            }
        },
    ),
    case(
        "port_v6",
        ["create", "-p", "[::1]:8080:80", "-p", "8080:80/sctp", "busybox"],
        config={"ExposedPorts": {"80/sctp": {}, "80/tcp": {}}},
        host={
            "PortBindings": {
                "80/sctp": [{"HostIp": "", "HostPort": "8080"}],
                "80/tcp": [{"HostIp": "::1", "HostPort": "8080"}],
            }
        },
    ),
    case(
        "port_hostrange",
        ["create", "-p", "8000-8010:80", "busybox"],
        config={"ExposedPorts": {"80/tcp": {}}},
        host={"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8000-8010"}]}},
    ),
    case(
        "expose_proto",
        ["create", "--expose", "80/udp", "--expose", "80", "-p", "80", "busybox"],
        config={"ExposedPorts": {"80/tcp": {}, "80/udp": {}}},
        host={"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": ""}]}},
    ),
    case("platform", ["create", "--platform", "linux/amd64", "busybox"]),
    case(
        "stop_timeout0",
        ["create", "--stop-timeout", "0", "--pids-limit", "-1", "busybox"],
        config={"StopTimeout": 0},
        host={"PidsLimit": -1},
    ),
]


def parse(argv: list[str]) -> tuple[dict[str, Any], str, tuple[str, ...]]:
    """Parse *argv* as ``dockyard run|create``; return the flags, image and command."""
    seen: dict[str, Any] = {}

    def capture(image: str, command: tuple[str, ...], **opts: Any) -> None:
        seen.update(opts=opts, image=image, command=command)

    decorate = run_options if argv[0] == "run" else create_options
    command = click.command(argv[0], context_settings=RUN_CONTEXT)(
        decorate(click.argument("image")(click.argument("command", nargs=-1)(capture)))
    )
    result = CliRunner().invoke(command, argv[1:], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return seen["opts"], seen["image"], seen["command"]


def body_of(argv: list[str], env_file: Path | None = None) -> dict[str, object]:
    argv = [str(env_file) if a == "ENVFILE" else a for a in argv]
    opts, image, command = parse(argv)
    return to_create_body(opts, image, command, environ=ENVIRON, cwd=CWD)


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / "envfile"
    path.write_text(ENV_FILE_TEXT)
    return path


def test_defaults_are_dockers_base_body() -> None:
    expected = {**BASE_CONFIG, "HostConfig": BASE_HOST}
    expected["NetworkingConfig"] = {"EndpointsConfig": {"default": ENDPOINT}}
    assert body_of(["create", "busybox"]) == expected
    assert to_create_body({}, "busybox", ()) == expected  # absent keys take the defaults


@pytest.mark.parametrize(("argv", "expected"), CASES)
def test_body_matches_docker(argv: list[str], expected: dict[str, Any], env_file: Path) -> None:
    assert body_of(argv, env_file) == expected


def test_query_name_and_platform() -> None:
    opts, _, _ = parse(["create", "--name", "web", "--platform", "linux/amd64", "busybox"])
    assert create_query(opts) == {"name": "web", "platform": "linux/amd64"}
    assert create_query(parse(["create", "busybox"])[0]) == {}
    with pytest.raises(InvalidArgument, match="only linux"):
        create_query({"platform": "windows/amd64"})


def test_repeated_keys_keep_command_line_order() -> None:
    body = body_of(["create", "-e", "A=1", "-e", "B=1", "-e", "A=2", "-e", "C", "-e", "C=3", "x"])
    assert body["Env"] == ["A=2", "B=1", "C=3"]  # docker: the same three, in random order
    binds = ["/onlyone:ro", "vol:/data:ro", "/h:/c:rw,rslave", "/onlyone:ro"]
    body = body_of(["create", *(a for b in binds for a in ("-v", b)), "x"])
    assert body["HostConfig"]["Binds"] == binds[:3]  # type: ignore[index]
    body = body_of(["create", "--ulimit", "nofile=1", "--ulimit", "nofile=2", "x"])
    assert body["HostConfig"]["Ulimits"] == [  # type: ignore[index]
        {"Name": "nofile", "Hard": 2, "Soft": 2}
    ]


def test_options_end_at_the_image() -> None:
    opts, image, command = parse(["run", "-d", "busybox", "ls", "-l", "-c", "5"])
    assert opts["detach"] and opts["cpu_shares"] is None
    assert (image, command) == ("busybox", ("ls", "-l", "-c", "5"))


def test_detach_keys_and_console_size_are_not_flags_of_the_body() -> None:
    opts, _, _ = parse(["run", "-d", "--detach-keys", "ctrl-x", "-t", "busybox"])
    assert opts["detach_keys"] == "ctrl-x"
    body = to_create_body({**opts, "console_size": (40, 100)}, "busybox", ())
    assert body["HostConfig"]["ConsoleSize"] == [40, 100]  # type: ignore[index]
    assert "ctrl-x" not in str(body)


# docker's own words for bad values (its CLI says "docker: <reason>" for the ones marked *).
ERRORS = [
    (["-m", "x"], 'invalid argument "x" for "-m, --memory" flag: invalid size: \'x\''),
    (["-m", "-1"], "invalid size: '-1'"),
    (["--memory-swap", "y"], "for \"--memory-swap\" flag: invalid size: 'y'"),
    (["--shm-size", "1q"], "invalid suffix: 'q'"),
    (["--cpus", "x"], 'for "--cpus" flag: failed to parse x as a rational number'),
    (["--cpus", "0.0000000001"], "value is too precise"),
    (["-c", "abc"], 'for "-c, --cpu-shares" flag: strconv.ParseInt: parsing "abc": invalid'),
    (["--stop-timeout", "x"], 'parsing "x": invalid syntax'),
    (["--ulimit", "nofile"], "invalid ulimit argument: nofile"),
    (["--ulimit", "bogus=1"], "invalid ulimit type: bogus"),
    (["--ulimit", "nofile=a:b"], 'parsing "b": invalid syntax'),
    (["--ulimit", "nofile=20:10"], "soft limit must be less than or equal to hard limit: 20 > 10"),
    (["--restart", ":3"], "no policy provided before colon"),  # *
    (["--restart", "on-failure:x"], "maximum retry count must be an integer"),  # *
    (["--restart", "always", "--rm"], "cannot specify both --restart and --rm"),  # *
    (["-a", "foo"], 'for "-a, --attach" flag: valid streams are STDIN, STDOUT and STDERR'),
    (["--mount", "type=bind,source=/h"], 'for "--mount" flag: target is required'),
    (["--mount", "type=bind,target=/t,bogus=1"], "unexpected key 'bogus' in 'bogus=1'"),
    (["--mount", "type=bind,target=/t,readonly=maybe"], "invalid value for readonly: maybe"),
    (["--mount", "type=bind,target=/t,source"], "invalid field 'source' must be a key=value"),
    (["--mount", "type=bind,target=/t,tmpfs-size=1m"], "cannot mix 'tmpfs-*' options"),
    (["--device", "/dev/sda:/dev/x:q"], "bad mode specified: q"),  # *
    (["--device", "sda"], "sda is not an absolute path"),  # *
    (["--sysctl", "vm.swappiness=1"], "sysctl 'vm.swappiness=1' is not allowed"),
    (["-e", "=x"], 'for "-e, --env" flag: invalid environment variable: =x'),
    (["-l", "=x"], "invalid label '=x': empty name"),
    (["--add-host", "nohostip"], 'bad format for add-host: "nohostip"'),
    (["--add-host", "a:notip"], 'invalid IP address in add-host: "notip"'),
    (["--dns", "notanip"], "IP address is not correctly formatted: notanip"),
    (["-p", "x:80"], "invalid hostPort: x"),  # *
    (["-p", "8000-8002:80-81"], "invalid ranges specified for container and host Ports"),  # *
    (["--expose", "x"], "invalid range format for --expose: x, error: strconv.ParseUint"),  # *
    (["--expose", "80:90"], "invalid port format for --expose: 80:90"),  # *
    (["--link", "a:b:c"], "bad format for links: a:b:c"),
    (["-v", "/a:/b:/c:/d"], "invalid spec: /a:/b:/c:/d: too many colons"),  # *
    (["--env-file", "/nonexistent/envfile"], "open /nonexistent/envfile: no such file"),  # *
    (["--log-driver", "none", "--log-opt", "a=b"], "invalid logging opts for driver none"),  # *
    (["--pid", "bogus"], "--pid: invalid PID mode"),  # *
    (["--uts", "container:x"], "--uts: invalid UTS mode"),  # *
    (["--network", "a", "--network", "a"], 'network "a" is specified multiple times'),
    (["--network", "host", "--network", "a"], "cannot attach both user-defined and non-user"),
    (["--security-opt", "seccomp"], 'Invalid --security-opt: "seccomp"'),
]


@pytest.mark.parametrize(("flags", "message"), ERRORS, ids=lambda v: " ".join(v)[:40])
def test_bad_values_are_refused_in_dockers_words(flags: list[str], message: str) -> None:
    opts, image, command = parse(["create", *flags, "busybox"])
    with pytest.raises(InvalidArgument) as err:
        to_create_body(opts, image, command, environ={}, cwd=CWD)
    assert message in str(err.value)


def test_attach_with_detach_conflicts() -> None:
    opts, _, _ = parse(["run", "-d", "-a", "stdout", "busybox"])
    with pytest.raises(InvalidArgument, match="cannot specify both --attach and --detach"):
        to_create_body(opts, "busybox", ())


@pytest.mark.parametrize(
    ("text", "size"),
    [("64m", 64 << 20), ("1g", 1 << 30), ("512k", 512 << 10), ("100", 100), ("100b", 100),
     ("1.5k", 1536), ("3KiB", 3072), ("64 m", 64 << 20), ("2MB", 2 << 20), ("1T", 1 << 40),
     ("0", 0), ("1e3", 1000)],
)  # fmt: skip
def test_ram_in_bytes(text: str, size: int) -> None:
    assert ram_in_bytes(text) == size


@pytest.mark.parametrize("text", ["", "x", "-1", "1q", "1kk", "1bb", "1kib2", "1.2.3", "1_000"])
def test_ram_in_bytes_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        ram_in_bytes(text)


def test_seccomp_profile_file_is_sent_inline(tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text('{\n  "defaultAction": "SCMP_ACT_ALLOW"\n}\n')
    opts, _, _ = parse(["create", "--security-opt", f"seccomp={profile}", "busybox"])
    body = to_create_body(opts, "busybox", ())
    inline = 'seccomp={"defaultAction":"SCMP_ACT_ALLOW"}'
    assert body["HostConfig"]["SecurityOpt"] == [inline]  # type: ignore[index]
    opts, _, _ = parse(["create", "--security-opt", "systempaths=unconfined", "busybox"])
    host = to_create_body(opts, "busybox", ())["HostConfig"]
    assert host["SecurityOpt"] is None and host["MaskedPaths"] == []  # type: ignore[index]


def test_every_flag_has_help() -> None:
    command = click.command("run", context_settings=RUN_CONTEXT)(run_options(lambda **_: None))
    for param in command.params:
        assert isinstance(param, click.Option) and param.help, param.name


UPDATE_BASE: dict[str, Any] = {
    "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
    "BlkioWeightDevice": None, "BlkioDeviceReadBps": None, "BlkioDeviceWriteBps": None,
    "BlkioDeviceReadIOps": None, "BlkioDeviceWriteIOps": None, "CpuPeriod": 0, "CpuQuota": 0,
    "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "",
    "Devices": None, "DeviceCgroupRules": None, "DeviceRequests": None, "MemoryReservation": 0,
    "MemorySwap": 0, "MemorySwappiness": None, "OomKillDisable": None, "PidsLimit": None,
    "Ulimits": None, "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
    "RestartPolicy": {"Name": "", "MaximumRetryCount": 0},
}  # fmt: skip


@pytest.mark.parametrize(
    ("opts", "changes"),
    [
        # docker update -m 64m --memory-swap 128m --cpus 1.5 -c 512 --pids-limit 10 --restart always
        (
            {"memory": "64m", "memory_swap": "128m", "cpus": 1.5, "cpu_shares": 512,
             "pids_limit": 10, "restart": "always"},
            {"Memory": 64 << 20, "MemorySwap": 128 << 20, "NanoCpus": 1_500_000_000,
             "CpuShares": 512, "PidsLimit": 10,
             "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}},
        ),
        # docker update --restart on-failure:3
        (
            {"restart": "on-failure:3"},
            {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}},
        ),
        # docker update -m 32m
        ({"memory": "32m", "restart": None}, {"Memory": 32 << 20}),
    ],
)  # fmt: skip
def test_update_body_matches_docker(opts: dict[str, Any], changes: dict[str, Any]) -> None:
    """The bodies docker CLI 28 sent for these ``docker update`` flags to the probe daemon."""
    assert to_update_body(opts) == {**UPDATE_BASE, **changes}
