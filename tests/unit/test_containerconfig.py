"""Container configuration: create-body validation, image merge, names, mounts, specs, net files."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from drivers.exec.spec import (
    DEFAULT_CAPS,
    DEFAULT_DEVICE_RULES,
    MASKED_PATHS,
    PRIVILEGED_DEVICE_RULES,
    READONLY_PATHS,
    Device,
    DeviceRule,
    Mount,
    Resources,
    Rlimit,
)
from drivers.logging import jsonfile
from engine.errors import InvalidArgument, NotSupported, Unavailable
from jobs import capabilities, hostresources
from jobs import containerconfig as cc

BUSYBOX: dict[str, object] = {"Cmd": ["sh"], "Env": ["PATH=/usr/bin:/bin"]}


@pytest.fixture(autouse=True)
def two_cpus(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pretend the host has CPUs 0-1 and memory node 0, whatever this machine has."""
    monkeypatch.setattr(hostresources, "online_cpus", lambda: 2)
    monkeypatch.setattr(hostresources, "available_cpus", lambda: "0-1")
    monkeypatch.setattr(hostresources, "available_mems", lambda: "0")
    yield


def body(hc: dict[str, Any] | None = None, **config: Any) -> dict[str, Any]:
    """A create body: *config* fields at the top, *hc* as HostConfig."""
    return {"Image": "busybox", "Cmd": ["true"], **config, "HostConfig": hc or {}}


def create(hc: dict[str, Any] | None = None, **config: Any) -> cc.CreateRequest:
    return cc.parse_create(body(hc, **config))


M = 1 << 20
BAD = [
    ({"Memory": 1}, "HostConfig.Memory: Minimum memory limit allowed is 6MB"),
    ({"Memory": -1}, "HostConfig.Memory: Minimum memory limit allowed is 6MB"),
    ({"Memory": 2**63}, f"HostConfig.Memory: {2**63} is out of range ({-(2**63)} to {2**63 - 1})"),
    ({"Memory": "1g"}, "HostConfig.Memory: expected integer, got string"),
    ({"Memory": 1.5}, "HostConfig.Memory: expected integer, got number"),
    ({"Memory": 8 * M, "MemorySwap": 7 * M}, "HostConfig.MemorySwap: Minimum memoryswap limit "
     "should be larger than memory limit, see usage"),
    ({"MemorySwap": 8 * M}, "HostConfig.MemorySwap: You should always set the Memory limit when "
     "using Memoryswap limit, see usage"),
    ({"MemorySwappiness": 101}, "HostConfig.MemorySwappiness: Invalid value: 101, valid memory "
     "swappiness range is 0-100"),
    ({"MemoryReservation": 1}, "HostConfig.MemoryReservation: Minimum memory reservation "
     "allowed is 6MB"),
    ({"Memory": 8 * M, "MemoryReservation": 9 * M}, "HostConfig.Memory: Minimum memory limit "
     "can not be less than memory reservation limit, see usage"),
    ({"NanoCpus": 10**9, "CpuPeriod": 100000}, "HostConfig.NanoCpus: Conflicting options: Nano "
     "CPUs and CPU Period cannot both be set"),
    ({"NanoCpus": 10**9, "CpuQuota": 50000}, "HostConfig.NanoCpus: Conflicting options: Nano "
     "CPUs and CPU Quota cannot both be set"),
    ({"NanoCpus": 3 * 10**9}, "HostConfig.NanoCpus: Range of CPUs is from 0.01 to 2.00, as "
     "there are only 2 CPUs available"),
    ({"CpuPeriod": 999}, "HostConfig.CpuPeriod: CPU cfs period can not be less than 1ms (i.e. "
     "1000) or larger than 1s (i.e. 1000000)"),
    ({"CpuQuota": 999}, "HostConfig.CpuQuota: CPU cfs quota can not be less than 1ms (i.e. 1000)"),
    ({"CpuShares": -1}, "HostConfig.CpuShares: invalid CPU shares (-1): value must be a "
     "positive integer"),
    ({"CpusetCpus": "1-9223372036854775807"},
     "HostConfig.CpusetCpus: Invalid value 1-9223372036854775807 for cpuset cpus"),
    ({"CpusetCpus": "3-1"}, "HostConfig.CpusetCpus: Invalid value 3-1 for cpuset cpus"),
    ({"CpusetCpus": "0,,1"}, "HostConfig.CpusetCpus: Invalid value 0,,1 for cpuset cpus"),
    ({"CpusetCpus": "abc"}, "HostConfig.CpusetCpus: Invalid value abc for cpuset cpus"),
    ({"CpusetCpus": "5"}, "HostConfig.CpusetCpus: Requested CPUs are not available - requested "
     "5, available: 0-1"),
    ({"CpusetMems": "1"}, "HostConfig.CpusetMems: Requested memory nodes are not available - "
     "requested 1, available: 0"),
    ({"BlkioWeight": 5}, "HostConfig.BlkioWeight: Range of blkio weight is from 10 to 1000"),
    ({"OomScoreAdj": 1001}, "HostConfig.OomScoreAdj: Invalid value 1001, range for oom score "
     "adj is [-1000, 1000]"),
    ({"ShmSize": -1}, "HostConfig.ShmSize: SHM size can not be less than 0"),
    ({"RestartPolicy": {"Name": "sometimes"}}, "HostConfig.RestartPolicy.Name: invalid restart "
     "policy: unknown policy 'sometimes'; use one of 'no', 'always', 'on-failure', or "
     "'unless-stopped'"),
    ({"RestartPolicy": {"Name": "always", "MaximumRetryCount": 3}}, "HostConfig.RestartPolicy."
     "MaximumRetryCount: invalid restart policy: maximum retry count can only be used with "
     "'on-failure'"),
    ({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": -1}}, "HostConfig."
     "RestartPolicy.MaximumRetryCount: invalid restart policy: maximum retry count cannot be "
     "negative"),
    ({"AutoRemove": True, "RestartPolicy": {"Name": "always"}},
     "HostConfig.RestartPolicy: --restart and --rm are conflicting"),
    ({"CapAdd": ["NOPE"]}, 'HostConfig.CapAdd[0]: unknown capability: "NOPE"'),
    ({"CapDrop": ["net_admin", "bogus"]}, 'HostConfig.CapDrop[1]: unknown capability: "bogus"'),
    ({"SecurityOpt": ["seccomp=/p.json"]},
     'HostConfig.SecurityOpt[0]: invalid --security-opt: "seccomp=/p.json"'),
    ({"SecurityOpt": ["no-new-privileges=maybe"]},
     'HostConfig.SecurityOpt[0]: invalid --security-opt: "no-new-privileges=maybe"'),
    ({"Binds": ["/a:/b", "/c:/b/"]}, "HostConfig.Binds[1]: Duplicate mount point: /b"),
    ({"Binds": ["/a:/t"], "Tmpfs": {"/t": ""}}, "HostConfig.Binds[0]: Duplicate mount point: /t"),
    ({"Binds": ["/a:rel"]}, "HostConfig.Binds[0]: invalid mount config for type \"bind\": "
     "invalid mount path: 'rel' mount path must be absolute"),
    ({"Binds": ["/a:/"]}, "HostConfig.Binds[0]: invalid specification: destination can't be '/'"),
    ({"Binds": ["/a:/b:rx"]}, "HostConfig.Binds[0]: invalid mode: rx"),
    ({"Binds": ["/a:/b:ro,rw"]}, "HostConfig.Binds[0]: invalid mode: ro,rw"),
    ({"Binds": ["/a:/b:c:d"]}, "HostConfig.Binds[0]: invalid volume specification: '/a:/b:c:d'"),
    ({"Binds": ["v:/b"]}, "HostConfig.Binds[0]: create v: volume name is too short, names "
     "should be at least two alphanumeric characters"),
    ({"Binds": ["../x:/b"]}, 'HostConfig.Binds[0]: create ../x: "../x" includes invalid '
     'characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you '
     "intended to pass a host directory, use absolute path"),
    ({"Binds": ["/x:/proc/sys"]},
     "HostConfig.Binds[0]: /proc/sys cannot be mounted because it is located inside /proc"),
    ({"Mounts": [{"Type": "notreal", "Target": "/x"}]},
     'HostConfig.Mounts[0]: invalid mount config for type "notreal": mount type unknown'),
    ({"Mounts": [{"Type": "bind", "Target": "/x"}]},
     'HostConfig.Mounts[0]: invalid mount config for type "bind": field Source must not be empty'),
    ({"Mounts": [{"Type": "bind", "Source": "/x"}]},
     'HostConfig.Mounts[0]: invalid mount config for type "bind": field Target must not be empty'),
    ({"Mounts": [{"Type": "bind", "Source": "/nonexistent/x", "Target": "/x"}]},
     'HostConfig.Mounts[0].Source: invalid mount config for type "bind": bind source path does '
     "not exist: /nonexistent/x"),
    ({"Mounts": [{"Type": "tmpfs", "Source": "x", "Target": "/x"}]},
     'HostConfig.Mounts[0]: invalid mount config for type "tmpfs": field Source must not be '
     "specified"),
    ({"Mounts": [{"Type": "volume", "Target": "/x", "TmpfsOptions": {}}]},
     'HostConfig.Mounts[0]: invalid mount config for type "volume": field TmpfsOptions must not '
     "be specified"),
    ({"Tmpfs": {"/t": "size=abc"}}, 'HostConfig.Tmpfs[/t]: invalid tmpfs option "size=abc"'),
    ({"VolumesFrom": ["c:rshared"]},
     "HostConfig.VolumesFrom[0]: VolumesFrom can't specify propagation mode: \"rshared\""),
    ({"VolumesFrom": ["c:bad"]}, "HostConfig.VolumesFrom[0]: invalid mode: bad"),
    ({"Devices": [{"PathOnHost": "/dev/x", "PathInContainer": "/dev/y",
                   "CgroupPermissions": "zzz"}]},
     "HostConfig.Devices[0].CgroupPermissions: invalid device mode: zzz"),
    ({"DeviceCgroupRules": ["x 1:2 r"]},
     "HostConfig.DeviceCgroupRules[0]: invalid device cgroup format 'x 1:2 r'"),
    ({"Sysctls": {"kernel.core_pattern": "|/x"}},
     "HostConfig.Sysctls[kernel.core_pattern]: sysctl 'kernel.core_pattern' is not allowed"),
    ({"Sysctls": {"kernel.shm_rmid_forced": "1+kernel.core_pattern=|/x"}},
     "HostConfig.Sysctls[kernel.shm_rmid_forced]: sysctl "
     "'kernel.shm_rmid_forced=1+kernel.core_pattern=|/x' is not allowed"),
    ({"Sysctls": {"vm.swappiness": "1"}},
     "HostConfig.Sysctls[vm.swappiness]: sysctl 'vm.swappiness' is not allowed"),
    ({"NetworkMode": "host", "Sysctls": {"net.ipv4.ip_forward": "1"}},
     "HostConfig.Sysctls[net.ipv4.ip_forward]: sysctl 'net.ipv4.ip_forward' is not allowed"),
    ({"IpcMode": "host", "Sysctls": {"kernel.msgmax": "1"}},
     "HostConfig.Sysctls[kernel.msgmax]: sysctl 'kernel.msgmax' is not allowed"),
    ({"Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 5}]},
     "HostConfig.Ulimits[0]: ulimit soft limit must be less than or equal to hard limit: 10 > 5"),
    ({"Ulimits": [{"Name": "nofiles", "Soft": 1, "Hard": 1}]},
     "HostConfig.Ulimits[0].Name: invalid ulimit type: nofiles"),
    ({"Dns": ["not-an-ip"]}, "HostConfig.Dns[0]: not-an-ip is not an ip address"),
    ({"DnsSearch": ["bad domain"]}, "HostConfig.DnsSearch[0]: bad domain is not a valid domain"),
    ({"ExtraHosts": ["nocolon"]}, 'HostConfig.ExtraHosts[0]: bad format for add-host: "nocolon"'),
    ({"ExtraHosts": ["h:300.1.1.1"]},
     'HostConfig.ExtraHosts[0]: invalid IP address in add-host: "300.1.1.1"'),
    ({"Isolation": "hyperv"},
     "HostConfig.Isolation: Invalid isolation: \"hyperv\" - linux only supports 'default'"),
    ({"Privileged": "yes"}, "HostConfig.Privileged: expected boolean, got string"),
    ({"Init": 1}, "HostConfig.Init: expected boolean, got integer"),
    ({"PidMode": "weird"}, "HostConfig.PidMode: invalid PidMode: weird"),
    ({"ConsoleSize": [1]}, "HostConfig.ConsoleSize: expected [height, width]"),
]  # fmt: skip
BAD_CONFIG = [
    ({"Hostname": "h" * 65}, f'Config.Hostname: hostname "{"h" * 65}" is too long (maximum 64 '
     "bytes)"),
    ({"Hostname": "bad_host!"}, "Config.Hostname: invalid hostname format: bad_host!"),
    ({"WorkingDir": "rel"}, "Config.WorkingDir: the working directory 'rel' is invalid, it needs "
     "to be an absolute path"),
    ({"Env": ["A=1", "B=2", "=x"]}, "Config.Env[2]: invalid environment variable: =x"),
    ({"Env": "A=1"}, "Config.Env: expected array, got string"),
    ({"Cmd": [1]}, "Config.Cmd[0]: expected string, got integer"),
    ({"Labels": {"a": 1}}, "Config.Labels.a: expected string, got integer"),
    ({"StopSignal": "SIGFOO"}, "Config.StopSignal: Invalid signal: SIGFOO"),
    ({"StopSignal": "99"}, "Config.StopSignal: Invalid signal: 99"),
    ({"Volumes": {"data": {}}}, "Config.Volumes.data: invalid mount config for type \"volume\": "
     "invalid mount path: 'data' mount path must be absolute"),
    ({"ExposedPorts": {"80/foo": {}}}, "Config.ExposedPorts.80/foo: invalid port specification: "
     "80/foo"),
    ({"Healthcheck": {"Test": ["CMD", "true"], "Interval": 5}},
     "Config.Healthcheck.Interval: Interval in Healthcheck cannot be less than 1ms"),
    ({"Hostname": "h", "HostConfig": {"UTSMode": "host"}},
     "Config.Hostname: Conflicting options: hostname and the UTS mode"),
    ({"HostConfig": "x"}, "HostConfig: expected object, got string"),
]  # fmt: skip
UNSUPPORTED = [
    ({"PortBindings": {"53/sctp": [{"HostPort": "53"}]}},
     'HostConfig.PortBindings["53/sctp"]: sctp ports cannot be published: only tcp and udp are'),
    ({"GroupAdd": ["audio"]}, "HostConfig.GroupAdd: not supported by this engine yet"),
    ({"Runtime": "kata"}, "HostConfig.Runtime: not supported by this engine yet"),
    ({"CpuRealtimeRuntime": 1}, "HostConfig.CpuRealtimeRuntime: not supported by this engine"),
    ({"BlkioDeviceReadBps": [{"Path": "/dev/sda", "Rate": 1}]},
     "HostConfig.BlkioDeviceReadBps: not supported by this engine"),
    ({"IpcMode": "container:x"}, "HostConfig.IpcMode: IpcMode container:x is not supported yet"),
    ({"LogConfig": {"Type": "syslog"}},
     "HostConfig.LogConfig.Type: logging driver syslog is not supported"),
    ({"Mounts": [{"Type": "npipe", "Target": "/x"}]},
     "HostConfig.Mounts[0].Type: mounts of type npipe are not supported"),
]  # fmt: skip


@pytest.mark.parametrize(("hc", "message"), BAD)
def test_bad_host_config_is_refused_with_dockerd_message(hc: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        create(hc)
    assert str(info.value) == message


@pytest.mark.parametrize(("fields", "message"), BAD_CONFIG)
def test_bad_config_is_refused_naming_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        cc.parse_create({"Image": "busybox", **fields})
    assert str(info.value) == message


@pytest.mark.parametrize(("hc", "message"), UNSUPPORTED)
def test_fields_we_cannot_honour_are_refused_not_ignored(hc: dict[str, Any], message: str) -> None:
    with pytest.raises(NotSupported) as info:
        create(hc)
    assert str(info.value) == message


def test_log_options_are_checked_by_the_json_file_driver() -> None:
    with pytest.raises(InvalidArgument) as expected:
        jsonfile.validate_options({"max-size": "lots"})
    with pytest.raises(InvalidArgument) as info:
        create({"LogConfig": {"Type": "json-file", "Config": {"max-size": "lots"}}})
    assert str(info.value) == f"HostConfig.LogConfig.Config: {expected.value}"
    ok = create({"LogConfig": {"Type": "", "Config": {"max-size": "10m", "max-file": "3"}}})
    assert ok.host_config["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "10m", "max-file": "3"},
    }


DOCKER_PY_DEFAULTS = {
    "Binds": None, "ContainerIDFile": "", "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "default", "PortBindings": None, "RestartPolicy": {"Name": "no",
    "MaximumRetryCount": 0}, "AutoRemove": False, "VolumeDriver": "", "VolumesFrom": None,
    "ConsoleSize": [0, 0], "CapAdd": None, "CapDrop": None, "CgroupnsMode": "host", "Dns": None,
    "DnsOptions": None, "DnsSearch": None, "ExtraHosts": None, "GroupAdd": None,
    "IpcMode": "private", "Cgroup": "", "Links": None, "OomScoreAdj": 0, "PidMode": "",
    "Privileged": False, "PublishAllPorts": False, "ReadonlyRootfs": False, "SecurityOpt": None,
    "UTSMode": "", "UsernsMode": "", "ShmSize": 67108864, "Runtime": "runc", "Isolation": "",
    "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
    "BlkioWeightDevice": None, "BlkioDeviceReadBps": None, "BlkioDeviceWriteBps": None,
    "BlkioDeviceReadIOps": None, "BlkioDeviceWriteIOps": None, "CpuPeriod": 0, "CpuQuota": 0,
    "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "",
    "Devices": None, "DeviceCgroupRules": None, "DeviceRequests": None, "MemoryReservation": 0,
    "MemorySwap": 0, "MemorySwappiness": None, "OomKillDisable": None, "PidsLimit": None,
    "Ulimits": None, "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
    "MaskedPaths": list(MASKED_PATHS), "ReadonlyPaths": list(READONLY_PATHS),
}  # fmt: skip


def test_a_minimal_body_gets_every_host_config_field_in_gos_order() -> None:
    request = cc.parse_create(
        {"Image": "busybox", "Cmd": ["echo"], "Tty": False, "NetworkDisabled": False,
         "HostConfig": {"NetworkMode": "default"}, "Unknown": {"ignored": True}}
    )  # fmt: skip
    assert request.host_config == DOCKER_PY_DEFAULTS
    assert list(request.host_config) == list(DOCKER_PY_DEFAULTS)
    assert list(request.config) == [
        "Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "Tty",
        "OpenStdin", "StdinOnce", "Env", "Cmd", "Image", "Volumes", "WorkingDir", "Entrypoint",
        "OnBuild", "Labels",
    ]  # fmt: skip
    assert request.networking == {}


def test_good_values_are_kept_and_defaults_filled() -> None:
    hc = create(
        {"Memory": 64 * M, "PidsLimit": -1, "Init": True, "Tmpfs": {"/run": "size=1m"},
         "CapAdd": "net_admin", "CapDrop": ["ALL"], "Privileged": True, "NetworkMode": "host",
         "Sysctls": {"kernel.shm_rmid_forced": "1"}, "IpcMode": "shareable",
         "SecurityOpt": ["no-new-privileges", "seccomp=unconfined", "label:disable",
                         "apparmor=unconfined", "no-new-privileges=false"],
         "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
         "Binds": ["/srv:/srv:ro,rslave", "data:/data", "/cache"], "VolumesFrom": ["other:ro"],
         "Mounts": [{"Type": "tmpfs", "Target": "/scratch", "TmpfsOptions": {"SizeBytes": M}}],
         "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/nul",
                      "CgroupPermissions": "rw"}],
         "DeviceCgroupRules": ["c 1:3 mr", "b *:* m"], "Dns": ["1.1.1.1"],
         "ExtraHosts": ["db:10.0.0.2", "v6=::1"], "ShmSize": 1 << 20}
    ).host_config  # fmt: skip
    assert hc["MemorySwap"] == 128 * M  # dockerd's default: twice the memory
    assert hc["PidsLimit"] is None and hc["Init"] is True
    assert hc["CapAdd"] == ["net_admin"] and hc["CapDrop"] == ["ALL"]
    assert hc["NetworkMode"] == "host" and hc["IpcMode"] == "shareable"
    assert hc["Tmpfs"] == {"/run": "size=1m"} and hc["ShmSize"] == 1 << 20
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert hc["MaskedPaths"] is None and hc["ReadonlyPaths"] is None  # privileged
    assert create({"SecurityOpt": ["systempaths=unconfined"]}).host_config["MaskedPaths"] == []
    assert create({"NetworkMode": "container:web"}).host_config["NetworkMode"] == "container:web"
    assert create({"Sysctls": {"net.core.somaxconn": "1024"}}).host_config["Sysctls"]


def test_merge_fills_command_from_the_image_as_docker_does() -> None:
    image = {"Entrypoint": ["/init"], "Cmd": ["serve"], "ArgsEscaped": False}
    merged = cc.merge_image(create().config | {"Cmd": None}, image)
    assert (merged["Entrypoint"], merged["Cmd"]) == (["/init"], ["serve"])
    merged = cc.merge_image(create(Cmd=["debug"]).config, image)
    assert (merged["Entrypoint"], merged["Cmd"]) == (["/init"], ["debug"])
    merged = cc.merge_image(create(Cmd=None, Entrypoint=["/bin/sh"]).config, image)
    assert (merged["Entrypoint"], merged["Cmd"]) == (["/bin/sh"], None)  # image Cmd reset
    merged = cc.merge_image(create(Cmd=["ls"], Entrypoint=[""]).config, image)
    assert (merged["Entrypoint"], merged["Cmd"]) == ([], ["ls"])  # --entrypoint ''
    merged = cc.merge_image(create(Cmd=None, Entrypoint=[]).config, image)
    assert (merged["Entrypoint"], merged["Cmd"]) == ([], ["serve"])
    with pytest.raises(InvalidArgument, match="^No command specified$"):
        cc.merge_image(create(Cmd=None).config, {"Env": ["A=1"]})
    with pytest.raises(InvalidArgument, match="^No command specified$"):
        cc.merge_image(create(Cmd=None, Entrypoint=[""]).config, image)


def test_merge_env_labels_volumes_and_the_rest() -> None:
    image = {
        "Env": ["PATH=/bin", "A=image", "B=image"], "Labels": {"a": "1", "b": "1"},
        "Volumes": {"/data": {}}, "ExposedPorts": {"80/tcp": {}}, "User": "nobody",
        "WorkingDir": "/srv", "StopSignal": "SIGINT", "OnBuild": ["RUN x"], "Cmd": ["sh"],
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 10**9, "Retries": 3},
    }  # fmt: skip
    user = create(
        Image="Busybox:Latest", Env=["A=user", "C=user"], Labels={"b": "2"},
        Volumes={"/logs": {}}, ExposedPorts={"53/udp": {}, "8080": {}},
        Healthcheck={"Test": [], "Retries": 5},
    ).config  # fmt: skip
    merged = cc.merge_image(user, image)
    # Docker's order: the user's entries, then the image's entries the user did not set.
    assert merged["Env"] == ["A=user", "C=user", "PATH=/bin", "B=image"]
    assert merged["Labels"] == {"a": "1", "b": "2"}
    assert merged["Volumes"] == {"/data": {}, "/logs": {}}
    assert merged["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "8080/tcp": {}}
    assert (merged["User"], merged["WorkingDir"], merged["StopSignal"]) == (
        "nobody", "/srv", "SIGINT")  # fmt: skip
    assert merged["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 10**9, "Retries": 5}
    assert merged["OnBuild"] is None and merged["Image"] == "Busybox:Latest"
    mine = cc.merge_image(create(User="1000", WorkingDir="/w").config, image)
    assert (mine["User"], mine["WorkingDir"]) == ("1000", "/w")


@pytest.mark.parametrize("name", ["ab", "/web", "a.b-c_d", "0x", "Web_1.2"])
def test_valid_names(name: str) -> None:
    assert cc.check_name(name) == name.removeprefix("/")


@pytest.mark.parametrize("name", ["a", "-x", "_x", ".x", "x/y", "x y", "x:y", "ümlaut", "", "/",
                                  "web\n", "//web"])  # fmt: skip
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        cc.check_name(name)
    assert str(info.value) == (
        f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
    )


def test_random_names_are_free_and_docker_shaped() -> None:
    taken: set[str] = set()
    for _ in range(300):
        name = cc.random_name(taken.__contains__)
        assert name not in taken and re.fullmatch(cc.NAME_PATTERN, name)
        assert re.fullmatch(r"[a-z]+_[a-z]+[0-9]*", name)
        taken.add(name)
    suffixed = cc.random_name(lambda n: not n[-1].isdigit())
    assert re.fullmatch(r"[a-z]+_[a-z]+[0-9]+", suffixed)
    with pytest.raises(Unavailable):
        cc.random_name(lambda n: True)


def test_mount_plan_precedence_order_and_modes(tmp_path: Any) -> None:
    config = cc.merge_image(create().config, {"Volumes": {"/data": {}, "/other": {}, "/a": {}}})
    hc = create(
        {"Binds": ["/srv/data:/data:ro", "named:/a/b/c", "/h:/x:ro,rslave"],
         "Mounts": [{"Type": "bind", "Source": str(tmp_path), "Target": "/a/b"}],
         "Tmpfs": {"/run": "size=64m,mode=1777,exec"}, "VolumesFrom": ["first", "second:ro"]}
    ).host_config  # fmt: skip
    others: dict[str, list[dict[str, object]]] = {
        "first": [{"Type": "volume", "Name": "v1", "Source": "/var/v1", "Destination": "/other",
                   "RW": True}, {"Type": "volume", "Name": "v2", "Destination": "/data"}],
        "second": [{"Type": "bind", "Source": "/srv/o", "Destination": "/other", "RW": True,
                    "Propagation": "rprivate"}],
    }  # fmt: skip
    plans = cc.plan_mounts(config, hc, volumes_from=lambda name: others[name])
    by_dest = {p.destination: p for p in plans}
    assert [p.destination for p in plans] == ["/data", "/x", "/run", "/other", "/a", "/a/b",
                                               "/a/b/c"]  # fmt: skip
    assert by_dest["/data"] == cc.MountPlan("bind", "/srv/data", "/data", False, "rprivate",
                                            mode="ro")  # fmt: skip
    assert by_dest["/x"].propagation == "rslave" and by_dest["/x"].mode == "ro,rslave"
    assert by_dest["/other"] == cc.MountPlan("bind", "/srv/o", "/other", False, "rprivate")
    assert by_dest["/a"] == cc.MountPlan("volume", "", "/a")  # anonymous, from the image
    assert by_dest["/a/b/c"] == cc.MountPlan("volume", "named", "/a/b/c", mode="z")
    # Docker's defaults first; "exec" replaces "noexec".
    assert by_dest["/run"].tmpfs == ("nosuid", "nodev", "size=64m", "mode=1777", "exec")
    sources = [p.source or f"/vol/{p.destination}" for p in plans]
    mounts = cc.docker_mounts(plans, sources, ["anon1", "named"])
    assert mounts[0] == {"Type": "bind", "Source": "/srv/data", "Destination": "/data",
                         "Mode": "ro", "RW": False, "Propagation": "rprivate"}  # fmt: skip
    assert mounts[2] == {"Type": "tmpfs", "Source": "", "Destination": "/run", "Mode": "",
                         "RW": True, "Propagation": ""}  # fmt: skip
    assert mounts[4] == {"Type": "volume", "Name": "anon1", "Source": "/vol//a",
                         "Destination": "/a", "Driver": "local", "Mode": "", "RW": True,
                         "Propagation": ""}  # fmt: skip
    assert mounts[6]["Name"] == "named" and mounts[6]["Mode"] == "z"
    driver = cc.spec_mounts(mounts, hc)
    assert driver[2] == Mount("/run", "tmpfs", "", False, by_dest["/run"].tmpfs)
    assert driver[0] == Mount("/data", "bind", "/srv/data", True, (), "rprivate")


def test_build_spec_defaults() -> None:
    request = create()
    config = cc.merge_image(request.config, BUSYBOX)
    spec = cc.build_spec(
        id="0123456789abcdef" * 4, config=config, host_config=request.host_config,
        rootfs="/r", bundle="/b", run_dir="/run/c", mounts=[], held_caps=(1 << 41) - 1,
    )  # fmt: skip
    assert spec.process.args == ("true",)
    assert spec.process.env == ("PATH=/usr/bin:/bin", "HOSTNAME=0123456789ab")
    assert (spec.process.cwd, spec.process.user, spec.process.tty) == ("/", "", False)
    assert spec.process.caps == DEFAULT_CAPS and not spec.process.no_new_privileges
    assert spec.hostname == "0123456789ab"
    assert spec.namespaces == ("mnt", "uts", "ipc", "pid", "net") and spec.join == {}
    assert spec.mounts == (
        Mount("/etc/hostname", "bind", "/b/hostname"),
        Mount("/etc/hosts", "bind", "/b/hosts"),
        Mount("/etc/resolv.conf", "bind", "/b/resolv.conf"),
    )
    assert spec.device_rules == DEFAULT_DEVICE_RULES and spec.devices == ()
    assert spec.masked_paths == MASKED_PATHS and spec.readonly_paths == READONLY_PATHS
    assert spec.shm_size == 64 << 20 and not spec.init and not spec.privileged
    assert spec.log is not None and spec.log.path == f"/b/{'0123456789abcdef' * 4}-json.log"
    assert spec.resources == Resources()


def test_build_spec_privileged_host_network_user_tty_and_limits() -> None:
    held = capabilities.mask_of(["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"])
    request = create(
        {"Privileged": True, "NetworkMode": "host", "PidMode": "host", "ReadonlyRootfs": True,
         "NanoCpus": 1_500_000_000, "Memory": 64 * M, "PidsLimit": 100, "Init": True,
         "Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": 2048}], "CpusetCpus": "0-1",
         "SecurityOpt": ["no-new-privileges:true"], "LogConfig": {"Type": "none"},
         "Binds": ["/srv/hosts:/etc/hosts:ro"], "ConsoleSize": [40, 100]},
        User="1000:1000", Tty=True, OpenStdin=True, WorkingDir="/w",
        Env=["PATH=/custom", "TERM=dumb", "HOSTNAME"],
    )  # fmt: skip
    config = cc.merge_image(request.config, BUSYBOX)
    mounts = [Mount("/etc/hosts", "bind", "/srv/hosts", True)]
    spec = cc.build_spec(id="f" * 64, config=config, host_config=request.host_config, rootfs="/r",
                         bundle="/b", run_dir="/x", mounts=mounts, held_caps=held)  # fmt: skip
    assert spec.process.caps == ("CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_ADMIN")
    assert spec.process.env == ("PATH=/custom", "TERM=dumb")  # user env wins; bare key unsets
    assert (spec.process.user, spec.process.cwd, spec.process.tty) == ("1000:1000", "/w", True)
    assert spec.process.stdin and spec.process.no_new_privileges
    assert spec.process.rlimits == (Rlimit("nofile", 1024, 2048),)
    assert spec.process.console_size == (40, 100)
    assert spec.namespaces == ("mnt", "uts", "ipc") and spec.hostname == socket.gethostname()
    assert spec.device_rules == PRIVILEGED_DEVICE_RULES
    assert spec.masked_paths == () and spec.readonly_paths == ()
    assert spec.mounts == (  # the user's /etc/hosts wins; ours are read-only with the rootfs
        Mount("/etc/hosts", "bind", "/srv/hosts", True),
        Mount("/etc/hostname", "bind", "/b/hostname", True),
        Mount("/etc/resolv.conf", "bind", "/b/resolv.conf", True),
    )
    r = spec.resources
    assert (r.cpu_period, r.cpu_quota, r.memory, r.memory_swap) == (100000, 150000, 64 * M,
                                                                    128 * M)  # fmt: skip
    assert (r.pids_limit, r.cpuset_cpus) == (100, "0-1")
    assert spec.init and spec.readonly_rootfs and spec.privileged and spec.log is None


def test_build_spec_caps_devices_and_joined_namespaces() -> None:
    request = create(
        {"CapAdd": ["sys_time", "CAP_NET_ADMIN"], "CapDrop": ["mknod", "NET_RAW"],
         "NetworkMode": "container:db", "UTSMode": "host", "IpcMode": "host",
         "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/nothing",
                      "CgroupPermissions": "rw"}], "DeviceCgroupRules": ["c 10:* rwm"],
         "LogConfig": {"Config": {"max-size": "1k", "max-file": "2"}}}
    )  # fmt: skip
    config = cc.merge_image(request.config, BUSYBOX)
    spec = cc.build_spec(id="e" * 64, config=config, host_config=request.host_config, rootfs="/r",
                         bundle="/b", run_dir="/x", mounts=[], held_caps=0,
                         join={"net": "/proc/42/ns/net"}, hostname_files=False)  # fmt: skip
    expected = [c for c in DEFAULT_CAPS if c not in ("CAP_MKNOD", "CAP_NET_RAW")]
    assert spec.process.caps == (*expected, "CAP_SYS_TIME", "CAP_NET_ADMIN")
    assert spec.namespaces == ("mnt", "pid") and spec.join == {"net": "/proc/42/ns/net"}
    assert spec.hostname == "" and spec.mounts == ()
    st = os.stat("/dev/null")
    assert spec.devices == (Device("/dev/nothing", "c", 1, 3, st.st_mode & 0o7777, st.st_uid,
                                   st.st_gid),)  # fmt: skip
    assert spec.device_rules == (*DEFAULT_DEVICE_RULES, DeviceRule(True, "c", 1, 3, "rw"),
                                 DeviceRule(True, "c", 10, -1, "rwm"))  # fmt: skip
    assert spec.log is not None and (spec.log.max_size, spec.log.max_file) == (1024, 2)
    everything = create({"CapAdd": ["ALL"], "CapDrop": ["SYS_ADMIN"]}).host_config
    held = capabilities.mask_of(["CAP_KILL", "CAP_SYS_ADMIN"])
    every = cc.build_spec(id="e" * 64, config=config, host_config=everything, rootfs="/r",
                          bundle="/b", run_dir="/x", mounts=[], held_caps=held)  # fmt: skip
    assert every.process.caps == ("CAP_KILL",)


def test_exec_process() -> None:
    request = create({"CapDrop": ["ALL"], "CapAdd": ["KILL"], "SecurityOpt": ["no-new-privileges"]},
                     User="app", WorkingDir="/srv", Env=["A=1"], Hostname="box")  # fmt: skip
    config = cc.merge_image(request.config, BUSYBOX)
    hc = request.host_config
    p = cc.exec_process({"Cmd": ["sh", "-c", "env"], "Env": ["A=2", "B=3"]}, config, hc, 0)
    assert p.args == ("sh", "-c", "env") and (p.cwd, p.user) == ("/srv", "app")
    assert p.env == ("PATH=/usr/bin:/bin", "HOSTNAME=box", "A=2", "B=3")
    assert p.caps == ("CAP_KILL",) and p.no_new_privileges and not p.stdin and not p.tty
    held = capabilities.mask_of(["CAP_KILL", "CAP_SYS_ADMIN"])
    p = cc.exec_process(
        {"Cmd": "top", "User": "root", "WorkingDir": "/tmp", "Tty": True, "AttachStdin": True,
         "Privileged": True, "ConsoleSize": [24, 80]}, config, hc, held,
    )  # fmt: skip
    assert p.args == ("top",) and (p.cwd, p.user, p.tty, p.stdin) == ("/tmp", "root", True, True)
    assert p.caps == ("CAP_KILL", "CAP_SYS_ADMIN") and p.console_size == (24, 80)
    assert "TERM=xterm" in p.env
    for bad, message in (({"Cmd": []}, "No exec command specified"), ({}, "No exec command "
                         "specified"), ({"Cmd": ["x"], "WorkingDir": "rel"}, "WorkingDir: the "
                         "working directory 'rel' is invalid, it needs to be an absolute path"),
                         ({"Cmd": ["x"], "Env": ["=1"]}, "Env[0]: invalid environment "
                          "variable: =1")):  # fmt: skip
        with pytest.raises(InvalidArgument) as info:
            cc.exec_process(bad, config, hc, 0)
        assert str(info.value) == message


def test_hostname_hosts_and_resolv_conf() -> None:
    assert cc.hostname_for("abcdef0123456789", {"Hostname": ""}, {}) == "abcdef012345"
    assert cc.hostname_for("abcdef0123456789", {"Hostname": "web"}, {}) == "web"
    assert cc.hostname_for("x" * 64, {}, {"NetworkMode": "host"}) == socket.gethostname()
    hosts = cc.hosts_file("web", "example.com", ["db:10.0.0.2", "v6:[::1]"], address="172.17.0.2")
    assert hosts.splitlines() == [
        "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters", "10.0.0.2\tdb", "::1\tv6", "172.17.0.2\tweb.example.com web",
    ]  # fmt: skip
    host = "# generated\nnameserver 127.0.0.53\nnameserver ::1\nsearch lan\noptions edns0\n"
    assert cc.resolv_conf(host, [], [], [], False) == (
        "# generated\nsearch lan\noptions edns0\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    )
    assert cc.resolv_conf(host, [], [], [], True) == host
    mixed = "nameserver 127.0.0.1\nnameserver 192.168.1.1\n"
    assert cc.resolv_conf(mixed, [], [], [], False) == "nameserver 192.168.1.1\n"
    assert cc.resolv_conf(host, ["1.1.1.1"], ["corp"], ["ndots:2"], False) == (
        "nameserver 1.1.1.1\nsearch corp\noptions ndots:2\n"
    )
    assert cc.resolv_conf(mixed, [], ["."], [], False) == "nameserver 192.168.1.1\n"


def test_update_changes_only_what_is_given() -> None:
    hc = create({"Memory": 64 * M, "NanoCpus": 10**9}).host_config
    assert cc.parse_update({"Memory": 32 * M, "PidsLimit": 0, "CpuShares": 0}, hc) == {
        "Memory": 32 * M, "PidsLimit": None,
    }  # fmt: skip
    with pytest.raises(InvalidArgument, match="Memory limit should be smaller than already set"):
        cc.parse_update({"Memory": 256 * M}, hc)
    with pytest.raises(InvalidArgument, match="^CpuQuota: Conflicting options: CPU Quota cannot"):
        cc.parse_update({"CpuQuota": 50000}, hc)
    assert cc.parse_update({"RestartPolicy": {"Name": "always"}}, hc)["RestartPolicy"] == {
        "Name": "always", "MaximumRetryCount": 0,
    }  # fmt: skip
    resources = cc.build_resources({**hc, **cc.parse_update({"Memory": 32 * M}, hc)})
    assert (resources.memory, resources.cpu_quota) == (32 * M, 100000)


def test_cli_body_keeps_its_empty_lists_and_endpoints() -> None:
    cli = {
        "Image": "busybox", "Cmd": ["httpd"], "Env": None, "Volumes": {}, "Labels": {},
        "StopTimeout": 0, "StopSignal": "term", "ExposedPorts": {},
        "HostConfig": {"Binds": None, "LogConfig": {"Type": "", "Config": {}},
                       "NetworkMode": "default", "PortBindings": {}, "Dns": [], "DnsOptions": [],
                       "DnsSearch": [], "BlkioWeightDevice": [], "Devices": [], "Ulimits": [],
                       "MemorySwappiness": -1, "OomKillDisable": False, "PidsLimit": 0,
                       "MaskedPaths": None, "ReadonlyPaths": None, "ConsoleSize": [40, 100]},
        "NetworkingConfig": {"EndpointsConfig": {"default": {"Aliases": None}}},
    }  # fmt: skip
    request = cc.parse_create(cli)
    hc = request.host_config
    assert (hc["Dns"], hc["Devices"], hc["Ulimits"], hc["PortBindings"]) == ([], [], [], {})
    assert (hc["OomKillDisable"], hc["PidsLimit"], hc["ConsoleSize"]) == (False, None, [40, 100])
    assert request.config["StopTimeout"] == 0 and request.config["StopSignal"] == "term"
    assert "ExposedPorts" not in request.config and request.config["Volumes"] == {}
    assert request.networking == cli["NetworkingConfig"]
    with pytest.raises(NotSupported, match=r"^NetworkingConfig\.EndpointsConfig\.n\.MacAddr"):
        cc.parse_create({**cli, "NetworkingConfig": {"EndpointsConfig": {"n": {
            "MacAddress": "02:42:ac:11:00:02"}}}})  # fmt: skip
    with pytest.raises(InvalidArgument, match=r"^NetworkingConfig\.EndpointsConfig\.n\.IPAMC"):
        cc.parse_create({**cli, "NetworkingConfig": {"EndpointsConfig": {"n": {
            "IPAMConfig": {"IPv4Address": "300.1.1.1"}}}}})  # fmt: skip
    with pytest.raises(InvalidArgument, match=r'^HostConfig\.Links\[0\]: invalid link "a:b:c"'):
        cc.parse_create({**cli, "HostConfig": {"Links": ["a:b:c"]}})
    with pytest.raises(InvalidArgument, match=r"HostConfig\.PortBindings"):
        cc.parse_create({**cli, "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "x"}]}}})
    published = cc.parse_create({**cli, "ExposedPorts": {"80/tcp": {}}, "HostConfig": {
        "PublishAllPorts": True, "Links": ["db:alias"]}}).host_config  # fmt: skip
    assert published["PublishAllPorts"] is True and published["Links"] == ["db:alias"]
    assert cc.parse_create({**cli, "HostConfig": {"NetworkMode": "none"}, "NetworkingConfig": {
        "EndpointsConfig": {"none": {}}}}).host_config["NetworkMode"] == "none"  # fmt: skip


@pytest.mark.parametrize(
    ("text", "number"), [("SIGTERM", 15), ("term", 15), ("9", 9), ("RTMIN+3", 37), ("SIGUSR1", 10)]
)
def test_signal_numbers(text: str, number: int) -> None:
    assert cc.signal_number(text) == number


@pytest.mark.parametrize("text", ["0", "65", "SIGNOPE", "", "²", "1" * 5000])
def test_bad_signals(text: str) -> None:
    with pytest.raises(InvalidArgument, match="^Invalid signal: "):
        cc.signal_number(text)


def test_bind_forms_become_plans() -> None:
    hc = create(
        {"Binds": ["/cache", "named:/data:ro,nocopy", "/h:/x:z"],
         "Mounts": [{"Type": "volume", "Source": "vol", "Target": "/v",
                     "VolumeOptions": {"NoCopy": True}}, {"Type": "volume", "Target": "/anon"}]}
    ).host_config  # fmt: skip
    plans = cc.plan_mounts({}, hc, volumes_from=lambda name: [])
    assert plans == [
        cc.MountPlan("volume", "", "/cache", mode="z"),
        cc.MountPlan("volume", "named", "/data", False, mode="ro,nocopy", copy_data=False),
        cc.MountPlan("bind", "/h", "/x", True, "rprivate", mode="z"),
        cc.MountPlan("volume", "vol", "/v", mode="z", copy_data=False),
        cc.MountPlan("volume", "", "/anon", mode="z"),
    ]
    # Mounts of a tmpfs nobody configured (inherited) get Docker's default options.
    driver = cc.spec_mounts([{"Type": "tmpfs", "Destination": "/t", "RW": False}], {})
    assert driver == [Mount("/t", "tmpfs", "", True, ("noexec", "nosuid", "nodev"))]


def test_capabilities_defaults_add_and_drop() -> None:
    assert set(capabilities.effective((), (), privileged=False, held=0)) == set(DEFAULT_CAPS)
    caps = capabilities.effective(
        ["net_admin", "SYS_TIME"], ["mknod", "CAP_NET_RAW"], privileged=False, held=0
    )
    assert "CAP_NET_ADMIN" in caps and "CAP_SYS_TIME" in caps
    assert "CAP_MKNOD" not in caps and "CAP_NET_RAW" not in caps
    assert len(caps) == len(DEFAULT_CAPS)


def test_capabilities_all() -> None:
    held = (1 << 41) - 1 & ~(1 << 24)  # like this host: no CAP_SYS_RESOURCE
    assert capabilities.effective(["chown"], ["all"], privileged=False, held=held) == ("CAP_CHOWN",)
    everything = capabilities.effective(["ALL"], ["SYS_ADMIN"], privileged=False, held=held)
    assert "CAP_SYS_ADMIN" not in everything and "CAP_SYS_RESOURCE" not in everything
    assert len(everything) == 39


def test_capabilities_privileged_is_what_the_host_holds() -> None:
    held = 0x1FFFEFFFFFF
    caps = capabilities.effective((), ["chown"], privileged=True, held=held)
    assert capabilities.mask_of(caps) == held
    assert "CAP_SYS_RESOURCE" not in caps


def test_unknown_capabilities_fail_in_add_and_drop_even_when_privileged() -> None:
    with pytest.raises(InvalidArgument, match='unknown capability: "NOPE"'):
        capabilities.effective(["NOPE"], (), privileged=False, held=0)
    with pytest.raises(InvalidArgument, match='unknown capability: "nope"'):
        cc.parse_create(
            {"Image": "busybox", "HostConfig": {"Privileged": True, "CapDrop": ["nope"]}}
        )
