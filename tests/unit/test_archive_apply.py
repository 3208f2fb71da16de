"""apply_layer: entry types, replacement rules, names, metadata and the syscall seam."""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from engine.errors import InvalidArgument, NotFound, NotSupported
from graph.archive import apply_layer
from graph.archive.apply import apply_stream
from graph.archive.model import Whiteouts
from graph.archive.openat2 import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS, Syscalls
from graph.archive.rootdir import RootDir
from tests.unit.test_archive_kit import (
    IS_ROOT,
    MTIME,
    apply,
    build,
    dir_,
    hard,
    needs_root,
    node,
    reg,
    sym,
)

NS = 1_000_000_000


def test_creates_every_entry_type(tmp_path: Path) -> None:
    applied = apply(
        tmp_path,
        dir_("etc", mode=0o750),
        reg("etc/passwd", b"root:x:0:0\n", mode=0o640),
        sym("etc/abs", "/etc/passwd"),
        sym("rel", "etc/passwd"),
        hard("etc/passwd2", "etc/passwd"),
        node("fifo", tarfile.FIFOTYPE),
    )
    passwd = tmp_path / "etc/passwd"
    assert passwd.read_bytes() == b"root:x:0:0\n"
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o640
    assert passwd.stat().st_mtime_ns == MTIME * NS
    assert stat.S_IMODE((tmp_path / "etc").stat().st_mode) == 0o750
    assert (tmp_path / "etc").stat().st_mtime_ns == MTIME * NS  # set after its contents
    assert os.readlink(tmp_path / "etc/abs") == "/etc/passwd"
    assert (tmp_path / "rel").read_bytes() == b"root:x:0:0\n"
    assert os.path.samefile(passwd, tmp_path / "etc/passwd2")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
    assert applied.size == len(b"root:x:0:0\n")
    assert not [p for p in os.listdir(tmp_path / "etc") if p.startswith(".tmp")]


def test_implied_parent_dirs_are_created(tmp_path: Path) -> None:
    apply(tmp_path, reg("a/b/c/file", b"x"))
    assert (tmp_path / "a/b/c/file").read_bytes() == b"x"
    assert stat.S_IMODE((tmp_path / "a/b").stat().st_mode) == 0o755 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_pax_mtime_keeps_nanoseconds(tmp_path: Path) -> None:
    info, data = reg("f", b"x")
    info.pax_headers = {"mtime": "1700000000.123456789"}
    apply(tmp_path, (info, data))
    assert (tmp_path / "f").stat().st_mtime_ns == 1_700_000_000_123_456_789


def test_existing_dir_is_kept_and_gets_new_metadata(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/old").write_bytes(b"lower")
    apply(tmp_path, dir_("d", mode=0o711), reg("d/new", b"upper"))
    assert (tmp_path / "d/old").read_bytes() == b"lower"
    assert (tmp_path / "d/new").read_bytes() == b"upper"
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o711


def test_dir_replaced_by_file_is_removed_recursively(tmp_path: Path) -> None:
    (tmp_path / "d/sub").mkdir(parents=True)
    (tmp_path / "d/sub/f").write_bytes(b"x")
    apply(tmp_path, reg("d", b"now a file"))
    assert (tmp_path / "d").read_bytes() == b"now a file"


def test_file_replaced_by_dir_and_symlink_replaced_by_file(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(b"x")
    os.symlink(outside, root / "s")
    apply(root, dir_("f"), reg("s", b"replaced"))
    assert (root / "f").is_dir()
    assert not (root / "s").is_symlink()
    assert (root / "s").read_bytes() == b"replaced"
    assert outside.read_bytes() == b"keep"


def test_replacing_a_file_does_not_write_through_its_hardlinks(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"old")
    os.link(tmp_path / "a", tmp_path / "b")
    apply(tmp_path, reg("a", b"new"))
    assert (tmp_path / "a").read_bytes() == b"new"
    assert (tmp_path / "b").read_bytes() == b"old"


def test_root_entry_sets_root_metadata(tmp_path: Path) -> None:
    apply(tmp_path, dir_("./", mode=0o700), reg("./f", b"x"))
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    with pytest.raises(InvalidArgument, match="root must be a directory"):
        apply(tmp_path, reg(".", b"x"))


@pytest.mark.parametrize("name", ["a//b", "./a/b", "a/./b", "a/b/"])
def test_odd_but_harmless_names(tmp_path: Path, name: str) -> None:
    apply(tmp_path, reg(name, b"x"))
    assert (tmp_path / "a/b").read_bytes() == b"x"


@pytest.mark.parametrize("name", ["/abs/path", "/../abs/path", "//abs/x/../path"])
def test_absolute_names_land_inside_the_root(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    apply(root, reg(name, b"x"))
    assert (root / "abs/path").read_bytes() == b"x"
    assert sorted(os.listdir(tmp_path)) == ["root"]


@pytest.mark.parametrize("name", ["..", "../x", "../../x", "a/../../x"])
def test_names_climbing_out_are_refused(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(InvalidArgument) as err:
        apply(root, reg(name, b"x"))
    assert repr(name) in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["root"]


def test_nul_in_a_pax_name_is_refused(tmp_path: Path) -> None:
    info, data = reg("placeholder", b"x")
    info.pax_headers = {"path": "a\x00b"}
    with pytest.raises(InvalidArgument, match="NUL"):
        apply(tmp_path, (info, data))


def test_non_utf8_names_are_kept_as_bytes(tmp_path: Path) -> None:
    info, data = reg("caf\udce9", b"x")
    raw = build((info, data), fmt=tarfile.GNU_FORMAT)
    apply_layer(tmp_path, io.BytesIO(raw))
    assert os.listdir(os.fsencode(tmp_path)) == [b"caf\xe9"]


def test_too_long_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        apply(tmp_path, reg("a" * 300, b"x"))
    with pytest.raises(InvalidArgument):
        apply(tmp_path, reg("/".join(["d" * 200] * 30) + "/f", b"x"))


def test_unknown_entry_type_is_refused(tmp_path: Path) -> None:
    info, _ = reg("vol", b"")
    info.type = b"V"
    with pytest.raises(InvalidArgument, match="unsupported type"):
        apply(tmp_path, (info, b""))


def test_global_pax_header_creates_nothing(tmp_path: Path) -> None:
    record = b"comment=hello\n"
    line = b"%d %s" % (len(record) + 3, record)
    header = tarfile.TarInfo("foo/bar")
    header.type = tarfile.XGLTYPE
    header.size = len(line)
    raw = header.tobuf(tarfile.USTAR_FORMAT) + line.ljust(512, b"\0") + build(reg("f", b"x"))
    apply_layer(tmp_path, io.BytesIO(raw))
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_oversized_extended_header_is_refused(tmp_path: Path) -> None:
    info, data = reg("f", b"x")
    info.pax_headers = {"comment": "x" * (2 << 20)}
    with pytest.raises(InvalidArgument, match="extended header"):
        apply(tmp_path, (info, data))


def test_truncated_file_data_is_refused(tmp_path: Path) -> None:
    raw = build(reg("f", b"x" * 5000))
    with pytest.raises(InvalidArgument):
        apply_layer(tmp_path, io.BytesIO(raw[:2048]))


def test_not_a_tar_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="not a tar"):
        apply_layer(tmp_path, io.BytesIO(b"hello, this is not a tar" * 40))


@pytest.mark.parametrize("uid", [-1, 2**32 - 1, 2**32])
def test_out_of_range_ids_are_refused(tmp_path: Path, uid: int) -> None:
    info, data = reg("f", b"x")
    info.pax_headers = {"uid": str(uid)}
    with pytest.raises(InvalidArgument, match="uid"):
        apply(tmp_path, (info, data))


def test_out_of_range_device_numbers_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="out of range"):
        apply(tmp_path, node("dev/evil", tarfile.CHRTYPE, 5000, 1))


def test_hardlink_to_missing_or_dir_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="not found"):
        apply(tmp_path, hard("l", "missing"))
    with pytest.raises(InvalidArgument, match="directory"):
        apply(tmp_path, dir_("d"), hard("l", "d"))


def test_hardlink_to_symlink_links_the_symlink(tmp_path: Path) -> None:
    apply(tmp_path, sym("symlink1", "regfile"), hard("symlink2", "symlink1"), reg("regfile", b"x"))
    assert os.readlink(tmp_path / "symlink2") == "regfile"
    assert os.lstat(tmp_path / "symlink2").st_ino == os.lstat(tmp_path / "symlink1").st_ino


def test_setuid_and_sticky_bits_are_kept(tmp_path: Path) -> None:
    apply(tmp_path, reg("bin/su", b"x", mode=0o4755), dir_("tmp", mode=0o1777))
    assert stat.S_IMODE((tmp_path / "bin/su").stat().st_mode) == 0o4755
    assert stat.S_IMODE((tmp_path / "tmp").stat().st_mode) == 0o1777


def test_user_xattrs_are_set_and_overlay_ones_dropped(tmp_path: Path) -> None:
    info, data = reg("f", b"x")
    info.pax_headers = {
        "SCHILY.xattr.user.comment": "hello",
        "SCHILY.xattr.user.overlay.opaque": "y",
        "SCHILY.xattr.trusted.overlay.opaque": "y",
        "SCHILY.xattr.security.selinux": "system_u:object_r:bin_t:s0",
    }
    apply(tmp_path, (info, data))
    names = os.listxattr(tmp_path / "f")
    assert os.getxattr(tmp_path / "f", "user.comment") == b"hello"
    assert "user.overlay.opaque" not in names
    assert "trusted.overlay.opaque" not in names


def test_binary_xattr_values_survive(tmp_path: Path) -> None:
    value = bytes(range(256))
    info, data = reg("f", b"x")
    info.pax_headers = {"SCHILY.xattr.user.bin": value.decode("utf-8", "surrogateescape")}
    apply(tmp_path, (info, data))
    assert os.getxattr(tmp_path / "f", "user.bin") == value


def test_unsettable_xattr_is_logged_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    info, data = reg("f", b"x")
    info.pax_headers = {"SCHILY.xattr.user.big": "x" * 100_000}  # over XATTR_SIZE_MAX
    apply(tmp_path, (info, data))
    assert (tmp_path / "f").read_bytes() == b"x"
    assert "cannot set xattr user.big" in caplog.text


def test_device_nodes_need_root(tmp_path: Path) -> None:
    apply(tmp_path, node("null", tarfile.CHRTYPE, 1, 3, mode=0o666))
    if IS_ROOT:
        st = os.lstat(tmp_path / "null")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    else:
        assert not (tmp_path / "null").exists()


@needs_root
def test_numeric_owner_ignores_names(tmp_path: Path) -> None:
    apply(tmp_path, reg("f", b"x", uid=1000, gid=1000, uname="root", gname="docker", mode=0o4755))
    st = (tmp_path / "f").stat()
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert stat.S_IMODE(st.st_mode) == 0o4755  # chmod after chown keeps setuid


def test_missing_root_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        apply_layer(tmp_path / "absent", io.BytesIO(build(reg("f"))))


class _Recording(Syscalls):
    def __init__(self) -> None:
        super().__init__()
        self.resolves: list[int] = []

    def openat2(self, dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
        self.resolves.append(resolve)
        return super().openat2(dirfd, path, flags, mode, resolve)


class _NoOpenat2(Syscalls):
    def openat2(self, dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
        raise NotSupported("openat2: ENOSYS")


def test_every_resolution_stays_in_root(tmp_path: Path) -> None:
    seam = _Recording()
    raw = build(reg("a/b/f", b"x"), hard("a/l", "a/b/f"), dir_("a"))
    with RootDir(tmp_path, seam) as rootdir:
        apply_stream(rootdir, io.BytesIO(raw), Whiteouts.DELETE)
    assert seam.resolves
    assert all(r & RESOLVE_IN_ROOT and r & RESOLVE_NO_MAGICLINKS for r in seam.resolves)


def test_kernel_without_openat2_is_not_supported(tmp_path: Path) -> None:
    with RootDir(tmp_path, _NoOpenat2()) as rootdir, pytest.raises(NotSupported):
        apply_stream(rootdir, io.BytesIO(build(reg("f"))), Whiteouts.DELETE)


def test_real_syscall_reports_errno(tmp_path: Path) -> None:
    with RootDir(tmp_path) as rootdir, pytest.raises(OSError) as err:
        rootdir.dir("missing")
    assert err.value.errno == errno.ENOENT


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar to write sparse archives")
@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_gnu_sparse_files_are_written_out(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.truncate(4 << 20)
        f.seek(1 << 20)
        f.write(b"data")
    tar = tmp_path / "s.tar"
    args = ["tar", "--sparse", f"--format={fmt}", "-cf", str(tar), "-C", str(src), "sparse"]
    subprocess.run(args, check=True)
    root = tmp_path / "root"
    root.mkdir()
    with open(tar, "rb") as stream:
        apply_layer(root, stream)
    assert (root / "sparse").read_bytes() == (src / "sparse").read_bytes()
