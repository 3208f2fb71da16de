"""cgroups without root: parsing, limit computation, eBPF encoding, and a fake cgroup tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers.exec.native import bpfdevices
from drivers.exec.native.cgroups import (
    Cgroup,
    Hierarchy,
    memsw_limit,
    parse_mountinfo,
    parse_proc_cgroup,
    plan,
    shares_to_weight,
)
from drivers.exec.spec import DEFAULT_DEVICE_RULES, DeviceRule, Resources
from engine.errors import InvalidArgument

MiB = 1 << 20

# This host's (hybrid) /proc/self/cgroup, and a v2 host's.
PROC_CGROUP_V1 = """9:name=systemd:/
8:pids:/
4:memory:/process_api/e2bc
2:cpu,cpuacct:/system.slice/x.service
0::/
"""
PROC_CGROUP_V2 = "0::/system.slice/dockyard.service\n"


def test_parse_proc_cgroup() -> None:
    assert parse_proc_cgroup(PROC_CGROUP_V1) == {
        "name=systemd": "/",
        "pids": "/",
        "memory": "/process_api/e2bc",
        "cpu": "/system.slice/x.service",
        "cpuacct": "/system.slice/x.service",
        "": "/",
    }
    assert parse_proc_cgroup(PROC_CGROUP_V2) == {"": "/system.slice/dockyard.service"}


def test_parse_mountinfo_fields_and_escapes() -> None:
    text = (
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup "
        "rw,cpu,cpuacct\n"
        "41 31 0:38 /sub /mnt/with\\040space rw - cgroup2 cgroup2 rw\n"
        "garbage line\n"
    )
    first, second = parse_mountinfo(text)
    assert (first.root, first.mountpoint, first.fstype) == (
        "/",
        "/sys/fs/cgroup/cpu,cpuacct",
        "cgroup",
    )
    assert first.superopts == "rw,cpu,cpuacct"
    assert (second.root, second.mountpoint, second.fstype) == ("/sub", "/mnt/with space", "cgroup2")


def write_files(base: Path, files: dict[str, str]) -> None:
    """Create *files* (relative path → content) under *base*, as the kernel shows them."""
    for name, content in files.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(content)


def fake_host(tmp_path: Path, proc_cgroup: str) -> tuple[Path, Path, Path]:
    """A cgroup root with v1 mounts (cpu,cpuacct co-mounted; pids mounted from /nested) and a
    unified v2 mount, as /proc/self/mountinfo and /proc/self/cgroup describe them."""
    root = tmp_path / "cgroup"
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"31 23 0:28 / {root} rw - tmpfs tmpfs rw,mode=755\n"
        f"32 31 0:29 / {root}/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        f"35 31 0:32 / {root}/memory rw - cgroup cgroup rw,memory\n"
        f"36 31 0:33 /nested {root}/pids rw - cgroup cgroup rw,pids\n"
        f"40 31 0:37 / {root}/systemd rw - cgroup cgroup rw,name=systemd\n"
        f"41 31 0:38 / {root}/unified rw - cgroup2 cgroup2 rw\n"
        "50 23 0:40 / /elsewhere rw - cgroup cgroup rw,freezer\n"
    )
    proc = tmp_path / "proc_cgroup"
    proc.write_text(proc_cgroup)
    return root, mountinfo, proc


def test_detect_v1_nests_under_own_cgroups(tmp_path: Path) -> None:
    root, mountinfo, proc = fake_host(
        tmp_path, "8:pids:/nested/svc\n4:memory:/user/svc\n2:cpu,cpuacct:/\n0::/\n"
    )
    h = Hierarchy.detect(str(root), str(mountinfo), str(proc))
    assert h.version == "1"
    co = f"{root}/cpu,cpuacct"
    assert h.mounts == {
        "cpu": co,
        "cpuacct": co,
        "memory": f"{root}/memory",
        "pids": f"{root}/pids",
    }
    assert h.own == {
        "cpu": co,
        "cpuacct": co,
        "memory": f"{root}/memory/user/svc",
        "pids": f"{root}/pids/svc",  # the mount shows /nested as its root
    }
    cg = Cgroup.for_container("abc", "", h)
    assert cg.paths()["memory"] == f"{root}/memory/user/svc/dockyard/abc"
    assert cg.paths()["cpu"] == cg.paths()["cpuacct"] == f"{co}/dockyard/abc"
    absolute = Cgroup.for_container("abc", "/custom/x", h)
    assert absolute.paths()["memory"] == f"{root}/memory/custom/x/abc"
    assert Cgroup.for_container("abc", "mine", h).paths()["pids"] == f"{root}/pids/svc/mine/abc"


def test_detect_v2_and_the_daemon_leaf(tmp_path: Path) -> None:
    root, mountinfo, proc = fake_host(tmp_path, "0::/system.slice/d.service/daemon\n")
    h = Hierarchy.detect(f"{root}/unified", str(mountinfo), str(proc))
    assert h.version == "2"
    assert h.own == {"": f"{root}/unified/system.slice/d.service"}  # the leaf's parent
    cg = Cgroup.for_container("abc", "", h)
    assert cg.paths() == {"": f"{root}/unified/system.slice/d.service/dockyard/abc"}
    assert Cgroup.for_container("abc", "/top", h).paths() == {"": f"{root}/unified/top/abc"}


@pytest.mark.parametrize(("id", "parent"), [("a/b", ""), ("..", ""), ("", ""), ("a", "x/../y")])
def test_bad_names_are_refused(tmp_path: Path, id: str, parent: str) -> None:
    root, mountinfo, proc = fake_host(tmp_path, "0::/\n")
    h = Hierarchy.detect(f"{root}/unified", str(mountinfo), str(proc))
    with pytest.raises(InvalidArgument):
        Cgroup.for_container(id, parent, h)


def test_paths_round_trip(tmp_path: Path) -> None:
    root, mountinfo, proc = fake_host(tmp_path, "4:memory:/m\n0::/\n")
    for where in (str(root), f"{root}/unified"):
        cg = Cgroup.for_container("abc", "", Hierarchy.detect(where, str(mountinfo), str(proc)))
        again = Cgroup.from_paths(json.loads(json.dumps(cg.paths())))
        assert again.paths() == cg.paths() and again.version == cg.version


def test_shares_to_weight_as_runc() -> None:
    assert [shares_to_weight(s) for s in (2, 1024, 262144)] == [1, 39, 10000]


def test_swap_semantics() -> None:
    assert memsw_limit(64 * MiB, 0) == 128 * MiB  # unset: as much swap as memory
    assert memsw_limit(64 * MiB, -1) == -1
    assert memsw_limit(64 * MiB, 100 * MiB) == 100 * MiB
    assert memsw_limit(0, 0) == 0
    assert memsw_limit(64 * MiB, 0, update=True) == 0  # docker update leaves it alone


def writes(r: Resources, version: str, update: bool = False) -> dict[str, str]:
    return {w.file: w.value for w in plan(r, version, update)}


def test_plan_v1_and_v2() -> None:
    r = Resources(
        memory=64 * MiB,
        memory_reservation=32 * MiB,
        cpu_shares=1024,
        cpu_period=100000,
        cpu_quota=50000,
        cpuset_cpus="0-1",
        pids_limit=10,
        blkio_weight=500,
    )
    assert writes(r, "1") == {
        "memory.limit_in_bytes": str(64 * MiB),
        "memory.memsw.limit_in_bytes": str(128 * MiB),
        "memory.soft_limit_in_bytes": str(32 * MiB),
        "cpu.shares": "1024",
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "50000",
        "cpuset.cpus": "0-1",
        "pids.max": "10",
        "blkio.weight": "500",
    }
    assert writes(r, "2") == {
        "memory.max": str(64 * MiB),
        "memory.swap.max": str(64 * MiB),  # v2 limits swap alone: total minus memory
        "memory.low": str(32 * MiB),
        "cpu.weight": "39",
        "cpu.max": "50000 100000",
        "cpuset.cpus": "0-1",
        "pids.max": "10",
        "io.weight": str(1 + 490 * 9999 // 990),
    }
    assert writes(Resources(memory=64 * MiB, memory_swap=-1), "2")["memory.swap.max"] == "max"
    assert writes(Resources(cpu_period=50000), "2") == {"cpu.max": "max 50000"}
    assert writes(Resources(), "1") == {}  # zero means unset: nothing to write
    assert writes(Resources(pids_limit=-1), "1") == {}  # unlimited is the default
    assert writes(Resources(pids_limit=-1), "1", update=True) == {"pids.max": "max"}
    assert writes(Resources(memory=64 * MiB), "1", update=True) == {
        "memory.limit_in_bytes": str(64 * MiB)
    }


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        (Resources(memory=1 * MiB), "Memory"),
        (Resources(memory=-5), "Memory"),
        (Resources(memory=64 * MiB, memory_swap=32 * MiB), "MemorySwap"),
        (Resources(memory_swap=128 * MiB), "MemorySwap"),
        (Resources(memory=64 * MiB, memory_reservation=128 * MiB), "MemoryReservation"),
        (Resources(cpu_shares=-1), "CpuShares"),
        (Resources(cpu_period=10), "CpuPeriod"),
        (Resources(cpu_quota=500), "CpuQuota"),
        (Resources(cpuset_cpus="0-"), "CpusetCpus"),
        (Resources(cpuset_mems="a"), "CpusetMems"),
        (Resources(pids_limit=-2), "PidsLimit"),
        (Resources(blkio_weight=5), "BlkioWeight"),
    ],
)
def test_bad_values_name_the_field(resources: Resources, field: str) -> None:
    with pytest.raises(InvalidArgument, match=rf"^Resources\.{field}: "):
        plan(resources, "1")


def test_effective_rules_follow_v1_semantics() -> None:
    default_allow, exceptions = bpfdevices.effective_rules(DEFAULT_DEVICE_RULES)
    assert not default_allow
    assert all(ex.allow for ex in exceptions) and len(exceptions) == 11
    assert not [ex for ex in exceptions if (ex.major, ex.minor) == (10, 229)]
    rules = [
        DeviceRule(False, "a"),
        DeviceRule(True, "c", 1, 3, "r"),
        DeviceRule(True, "c", 1, 3, "w"),  # merged into the exact match
        DeviceRule(True, "c", 1, 5, "rwm"),
        DeviceRule(False, "c", 1, 5, "w"),  # takes w away
        DeviceRule(True, "b", 8, -1, "r"),
        DeviceRule(False, "b", 8, -1, "r"),  # takes the last bit: gone
    ]
    assert bpfdevices.effective_rules(rules) == (
        False,
        (DeviceRule(True, "c", 1, 3, "rw"), DeviceRule(True, "c", 1, 5, "rm")),
    )
    reset = [DeviceRule(False, "c", 1, 3), DeviceRule(True, "a")]
    assert bpfdevices.effective_rules(reset) == (True, ())
    with pytest.raises(InvalidArgument):
        bpfdevices.effective_rules([DeviceRule(True, "c", 1, 3, "x")])


PROLOGUE = [
    "6112000000000000",  # r2 = *(u32 *)(r1 + 0)       access_type
    "57020000ffff0000",  # r2 &= 0xffff                 device type
    "6113000000000000",  # r3 = *(u32 *)(r1 + 0)
    "7703000010000000",  # r3 >>= 16                    access
    "6114040000000000",  # r4 = *(u32 *)(r1 + 4)       major
    "6115080000000000",  # r5 = *(u32 *)(r1 + 8)       minor
]


def program(rules: list[DeviceRule]) -> list[str]:
    code = bpfdevices.assemble(rules)
    return [code[i : i + 8].hex() for i in range(0, len(code), 8)]


def test_ebpf_encoding_allow_list() -> None:
    rules = [
        DeviceRule(False, "a"),
        DeviceRule(True, "c", 1, 3),
        DeviceRule(True, "c", -1, -1, "m"),
    ]
    assert program(rules) == [
        *PROLOGUE,
        "5502040002000000",  # if r2 != 2 (char) goto +4
        "5504030001000000",  # if r4 != 1 goto +3
        "5505020003000000",  # if r5 != 3 goto +2
        "b700000001000000",  # r0 = 1
        "9500000000000000",  # exit
        "5502050002000000",  # if r2 != 2 goto +5
        "bf31000000000000",  # r1 = r3
        "5701000001000000",  # r1 &= 1 (mknod)
        "5d31020000000000",  # if r1 != r3 goto +2: asked for more than the rule allows
        "b700000001000000",  # r0 = 1
        "9500000000000000",  # exit
        "b700000000000000",  # r0 = 0: the default deny
        "9500000000000000",  # exit
    ]


def test_ebpf_encoding_deny_list() -> None:
    rules = [DeviceRule(True, "a"), DeviceRule(False, "b", 8, 0, "w")]
    assert program(rules) == [
        *PROLOGUE,
        "5502070001000000",  # if r2 != 1 (block) goto +7
        "bf31000000000000",  # r1 = r3
        "5701000004000000",  # r1 &= 4 (write)
        "1501040000000000",  # if r1 == 0 goto +4: shares no bit with the rule
        "5504030008000000",  # if r4 != 8 goto +3
        "5505020000000000",  # if r5 != 0 goto +2
        "b700000000000000",  # r0 = 0
        "9500000000000000",  # exit
        "b700000001000000",  # r0 = 1: the default allow
        "9500000000000000",  # exit
    ]


def test_stats_oom_and_pids_from_a_fake_v1_tree(tmp_path: Path) -> None:
    dirs = {c: tmp_path / c / "dockyard" / "abc" for c in ("memory", "cpu", "cpuacct", "pids")}
    dirs["blkio"] = tmp_path / "blkio" / "dockyard" / "abc"
    write_files(dirs["memory"], {
        "memory.usage_in_bytes": "4096000", "memory.max_usage_in_bytes": "8192000",
        "memory.limit_in_bytes": str(64 * MiB), "memory.failcnt": "3",
        "memory.stat": "cache 4096\nrss 8192\ntotal_rss 8192\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        "cgroup.procs": "10\n11\n", "sub/cgroup.procs": "12\n",
    })  # fmt: skip
    write_files(dirs["cpuacct"], {
        "cpuacct.usage": "5000000000", "cpuacct.usage_percpu": "3000000000 2000000000 ",
        "cpuacct.stat": "user 300\nsystem 100\n",
    })  # fmt: skip
    write_files(dirs["cpu"], {"cpu.stat": "nr_periods 7\nnr_throttled 2\nthrottled_time 900\n"})
    write_files(dirs["pids"], {"pids.current": "3", "pids.max": "max"})
    write_files(dirs["blkio"], {
        "blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 0\nTotal 4096\n",
    })  # fmt: skip
    cg = Cgroup.from_paths({c: str(d) for c, d in dirs.items()})
    stats = cg.stats()
    memory = stats["memory_stats"]
    assert memory == {
        "usage": 4096000,
        "max_usage": 8192000,
        "failcnt": 3,
        "limit": 64 * MiB,
        "stats": {"cache": 4096, "rss": 8192, "total_rss": 8192},
    }
    cpu = stats["cpu_stats"]
    assert isinstance(cpu, dict)
    ns_per_tick = 10**9 // 100  # USER_HZ is 100 on Linux
    assert cpu["cpu_usage"] == {
        "total_usage": 5000000000,
        "percpu_usage": [3000000000, 2000000000],
        "usage_in_usermode": 300 * ns_per_tick,
        "usage_in_kernelmode": 100 * ns_per_tick,
    }
    assert cpu["throttling_data"] == {"periods": 7, "throttled_periods": 2, "throttled_time": 900}
    assert isinstance(cpu["system_cpu_usage"], int) and cpu["online_cpus"] >= 1
    assert stats["pids_stats"] == {"current": 3, "limit": 0}  # 0: no limit
    blkio = stats["blkio_stats"]
    assert isinstance(blkio, dict)
    assert blkio["io_service_bytes_recursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 4096},
        {"major": 8, "minor": 0, "op": "Write", "value": 0},
    ]
    assert blkio["io_serviced_recursive"] == [] and blkio["sectors_recursive"] == []
    assert cg.oom_killed()
    assert cg.pids() == [10, 11, 12]


def test_stats_and_oom_from_a_fake_v2_tree(tmp_path: Path) -> None:
    d = tmp_path / "dockyard" / "abc"
    write_files(d, {
        "memory.current": "1000", "memory.max": "max", "memory.stat": "anon 800\nfile 200\n",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
        "cpu.stat": "usage_usec 5\nuser_usec 3\nsystem_usec 2\nnr_periods 4\nnr_throttled 1\n"
                    "throttled_usec 6\n",
        "pids.current": "2", "pids.max": "50",
        "io.stat": "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n",
    })  # fmt: skip
    cg = Cgroup.from_paths({"": str(d)})
    stats = cg.stats()
    memory = stats["memory_stats"]
    assert isinstance(memory, dict)
    assert memory["usage"] == 1000 and memory["stats"] == {"anon": 800, "file": 200}
    assert isinstance(memory["limit"], int) and memory["limit"] > 1000  # the host's memory
    assert "max_usage" not in memory
    cpu = stats["cpu_stats"]
    assert isinstance(cpu, dict)
    assert cpu["cpu_usage"] == {
        "total_usage": 5000,
        "usage_in_usermode": 3000,
        "usage_in_kernelmode": 2000,
    }
    assert cpu["throttling_data"] == {"periods": 4, "throttled_periods": 1, "throttled_time": 6000}
    assert stats["pids_stats"] == {"current": 2, "limit": 50}
    blkio = stats["blkio_stats"]
    assert isinstance(blkio, dict)
    assert blkio["io_service_bytes_recursive"] == [
        {"major": 8, "minor": 0, "op": "read", "value": 100},
        {"major": 8, "minor": 0, "op": "write", "value": 200},
    ]
    assert blkio["io_serviced_recursive"] is None  # not set on v2, as Docker
    assert not cg.oom_killed()


def test_v2_create_moves_the_daemon_out_of_its_cgroup(tmp_path: Path) -> None:
    """The daemon's cgroup holds processes: they go to <own>/daemon before controllers are
    enabled in it (the kernel's "no internal processes" rule)."""
    root, mountinfo, proc = fake_host(tmp_path, "0::/svc\n")
    v2 = root / "unified"
    controllers = "cpu io memory pids hugetlb"
    write_files(v2, {
        "cgroup.controllers": controllers, "cgroup.subtree_control": "cpu io memory pids",
        "svc/cgroup.controllers": controllers, "svc/cgroup.subtree_control": "",
        "svc/cgroup.procs": "123\n", "svc/daemon/cgroup.procs": "",
    })  # fmt: skip
    h = Hierarchy.detect(str(v2), str(mountinfo), str(proc))
    cg = Cgroup.for_container("abc", "", h)
    cg.create(Resources(), ())
    assert (v2 / "svc/daemon/cgroup.procs").read_text() == "123"
    assert (v2 / "svc/cgroup.subtree_control").read_text() == "+pids"  # one write each, in order
    assert (v2 / "cgroup.subtree_control").read_text() == "cpu io memory pids"  # untouched
    assert Path(cg.paths()[""]).is_dir()
    cg.remove()
    assert not Path(cg.paths()[""]).exists()
