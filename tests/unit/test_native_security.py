"""Pure parts of the native driver's in-container setup: capabilities, users, sysctls, PATH.

Nothing here needs root: user resolution reads a fake rootfs under tmp_path through openat2.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from drivers.exec.native import rootfs, security
from drivers.exec.native.security import User
from drivers.exec.spec import DEFAULT_CAPS, Rlimit
from engine.errors import InvalidArgument

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment line
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
1000:x:0:0:named like a uid:/tricky:/bin/sh
foo:x:1001:1001:Foo:/home/foo:/bin/sh
bob:x:1002:1002:Bob:/home/bob:/bin/sh
broken:x:notanumber:0::/:/bin/sh
short:x
"""
GROUP = """\
root:x:0:
foo:x:1001:
bar:x:2000:foo,bob
baz:x:2001:bob, foo
web:x:3000:bob
broken:x:nope:foo
"""


@pytest.fixture
def image(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


def test_cap_table_matches_the_kernel_numbers() -> None:
    assert security.CAP_NUMBERS["CAP_CHOWN"] == 0
    assert security.CAP_NUMBERS["CAP_SYS_ADMIN"] == 21
    assert security.CAP_NUMBERS["CAP_SYS_RESOURCE"] == 24
    assert security.CAP_NUMBERS["CAP_SETFCAP"] == 31
    assert security.CAP_NUMBERS["CAP_CHECKPOINT_RESTORE"] == 40
    assert len(security.CAPABILITIES) == 41


def test_cap_table_covers_this_kernel() -> None:
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    assert last < len(security.CAPABILITIES)


def test_default_caps_mask_is_dockers() -> None:
    assert security.cap_mask(DEFAULT_CAPS) == 0xA80425FB
    assert set(security.cap_names(0xA80425FB)) == set(DEFAULT_CAPS)


@pytest.mark.parametrize("name", ["chown", "CAP_CHOWN", "cap_chown", " Chown "])
def test_cap_names_are_case_insensitive_with_optional_prefix(name: str) -> None:
    assert security.cap_name(name) == "CAP_CHOWN"


@pytest.mark.parametrize("name", ["NOPE", "CAP_", "", "CAP_CAP_CHOWN"])
def test_unknown_capability_is_refused(name: str) -> None:
    with pytest.raises(InvalidArgument, match=f"unknown capability: {name}"):
        security.cap_mask([name])


def test_held_caps_reads_capbnd() -> None:
    status = "Name:\tx\nCapInh:\t0000000000000000\nCapBnd:\t000001fffeffffff\n"
    assert security.held_caps(status) == 0x1FFFEFFFFFF
    assert security.held_caps() == int(
        next(
            ln for ln in Path("/proc/self/status").read_text().splitlines() if "CapBnd" in ln
        ).split()[1],
        16,
    )


def test_parse_passwd_skips_comments_and_malformed_lines() -> None:
    names = [(e.name, e.uid, e.gid, e.home) for e in security.parse_passwd(PASSWD)]
    assert names == [
        ("root", 0, 0, "/root"),
        ("daemon", 1, 1, "/usr/sbin"),
        ("1000", 0, 0, "/tricky"),
        ("foo", 1001, 1001, "/home/foo"),
        ("bob", 1002, 1002, "/home/bob"),
    ]


def test_parse_group_members() -> None:
    groups = {g.name: (g.gid, g.members) for g in security.parse_group(GROUP)}
    assert groups["bar"] == (2000, ("foo", "bob"))
    assert groups["baz"] == (2001, ("bob", "foo"))
    assert groups["root"] == (0, ())
    assert "broken" not in groups


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", User(0, 0, (), "/root", "root")),
        ("0", User(0, 0, (), "/root", "root")),
        ("1000", User(1000, 0, (), "/", "")),  # numeric is a uid, not the user named "1000"
        ("1001", User(1001, 1001, (2000, 2001), "/home/foo", "foo")),
        ("foo", User(1001, 1001, (2000, 2001), "/home/foo", "foo")),
        ("bob", User(1002, 1002, (2000, 2001, 3000), "/home/bob", "bob")),
        ("foo:bar", User(1001, 2000, (), "/home/foo", "foo")),
        ("foo:5000", User(1001, 5000, (), "/home/foo", "foo")),
        ("4242:4343", User(4242, 4343, (), "/", "")),
        ("4242:web", User(4242, 3000, (), "/", "")),
    ],
)
def test_resolve_user(image: Path, spec: str, expected: User) -> None:
    assert security.resolve_user(spec, str(image)) == expected


def test_unknown_user_and_group_messages(image: Path) -> None:
    with pytest.raises(InvalidArgument) as err:
        security.resolve_user("nobody", str(image))
    assert str(err.value) == "unable to find user nobody: no matching entries in passwd file"
    with pytest.raises(InvalidArgument) as err:
        security.resolve_user("foo:nogroup", str(image))
    assert str(err.value) == "unable to find group nogroup: no matching entries in group file"
    with pytest.raises(InvalidArgument, match="range"):
        security.resolve_user("99999999999", str(image))


def test_resolve_user_without_passwd_files(tmp_path: Path) -> None:
    assert security.resolve_user("", str(tmp_path)) == User(0, 0)
    assert security.resolve_user("7:8", str(tmp_path)) == User(7, 8)
    with pytest.raises(InvalidArgument, match="unable to find user app"):
        security.resolve_user("app", str(tmp_path))


def test_passwd_symlink_is_resolved_inside_the_root(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "passwd").write_text("evil:x:0:0::/host:/bin/sh\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "host").mkdir()
    (root / "host/passwd").write_text("evil:x:77:77::/inside:/bin/sh\n")
    escape = "/" + "../" * 8 + str(host / "passwd").lstrip("/")
    os.symlink(escape, root / "etc/passwd")
    # The link climbs out and comes back down: in the root that is <root>/<host path>.
    inner = root / str(host).lstrip("/")
    inner.mkdir(parents=True)
    (inner / "passwd").write_text("evil:x:55:55::/clamped:/bin/sh\n")
    assert security.resolve_user("evil", str(root)) == User(55, 55, (), "/clamped", "evil")


def test_passwd_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc/passwd")
    with pytest.raises(InvalidArgument, match="not a regular file"):
        security.resolve_user("x", str(tmp_path))


def test_build_env_defaults() -> None:
    env = security.build_env(["A=1", "B=x=y", "NOVALUE", "A=2"], "/home/foo")
    assert env == {"A": "2", "B": "x=y", "PATH": security.DEFAULT_PATH, "HOME": "/home/foo"}
    assert security.build_env(["PATH=/x", "HOME=/h"], "/root") == {"PATH": "/x", "HOME": "/h"}


def test_lookpath(tmp_path: Path) -> None:
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "tool").write_text("#!/bin/sh\n")
    (bin_ / "tool").chmod(0o755)
    (bin_ / "data").write_text("")
    (bin_ / "data").chmod(0o644)
    (bin_ / "adir").mkdir()
    path = f"/nonexistent:{bin_}"
    assert security.lookpath("tool", path) == str(bin_ / "tool")
    with pytest.raises(InvalidArgument) as err:
        security.lookpath("data", path)
    assert str(err.value) == 'exec: "data": executable file not found in $PATH'
    with pytest.raises(InvalidArgument, match='exec: "adir": executable file not found'):
        security.lookpath("adir", path)
    with pytest.raises(InvalidArgument) as err:
        security.lookpath(str(bin_ / "data"), path)
    assert str(err.value) == f'exec: "{bin_ / "data"}": permission denied'
    with pytest.raises(InvalidArgument, match="no such file or directory"):
        security.lookpath("/no/such", path)


def test_rlimits_are_checked_before_the_kernel() -> None:
    with pytest.raises(InvalidArgument, match="unknown rlimit: bogus"):
        security.set_rlimits([Rlimit("bogus", 1, 1)])
    with pytest.raises(InvalidArgument, match="soft limit"):
        security.set_rlimits([Rlimit("nofile", 10, 5)])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # always finite (fs.nr_open)
    with pytest.raises(InvalidArgument, match="above the current hard limit"):
        security.set_rlimits([Rlimit("RLIMIT_NOFILE", 1, hard + 1)])
    with pytest.raises(InvalidArgument, match="above the current hard limit"):
        security.set_rlimits([Rlimit("nofile", -1, -1)])  # -1: unlimited


@pytest.mark.parametrize(
    "sysctls",
    [
        {"kernel.core_pattern": "|/x"},
        {"kernel.shm_rmid_forced": "1+kernel.core_pattern=|/x"},
        {"vm.swappiness": "1"},
        {"kernel.shmmax": "1\nkernel.core_pattern=x"},
        {"../../kernel/core_pattern": "x"},
        {"kernel": "1"},
        {"net.ipv4/../../kernel.x": "1"},
    ],
)
def test_sysctls_refused(sysctls: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument, match="sysctl"):
        rootfs.check_sysctls(sysctls, ("mnt", "uts", "ipc", "pid", "net"))


def test_sysctls_allowed_only_in_own_namespaces() -> None:
    ok = {
        "kernel.shmmax": "1000000",
        "kernel.msgmax": "9000",
        "kernel.sem": "250 32000 32 128",
        "fs.mqueue.msg_max": "10",
        "net.ipv4.ip_forward": "1",
        "net.ipv4.ip_local_port_range": "1024 65000",
    }
    rootfs.check_sysctls(ok, ("mnt", "ipc", "net"))
    with pytest.raises(InvalidArgument, match="network namespace is shared"):
        rootfs.check_sysctls({"net.ipv4.ip_forward": "1"}, ("mnt", "ipc"))
    with pytest.raises(InvalidArgument, match="IPC namespace is shared"):
        rootfs.check_sysctls({"kernel.shmmax": "1"}, ("mnt", "net"))


def test_tmpfs_options() -> None:
    flags, data = rootfs.tmpfs_options(["rw", "noexec", "nosuid", "size=64m", "mode=1777"])
    assert flags == 0x8 | 0x2
    assert data == "size=64m,mode=1777"
    with pytest.raises(InvalidArgument, match="tmpfs option"):
        rootfs.tmpfs_options(["size=1,uid=0"])
