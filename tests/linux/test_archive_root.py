"""What only root can check: owners, setuid after chown, device nodes, privileged xattrs."""

from __future__ import annotations

import io
import os
import stat
import struct
import tarfile
from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from graph.archive import Whiteouts, apply_layer, changes, export_changes
from tests.unit.test_archive_kit import apply, build, dir_, node, reg, snapshot, sym

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: chown, mknod, trusted.* xattrs"
)

# struct vfs_cap_data, revision 2, effective bit set, permitted = CAP_NET_RAW (13).
CAP_NET_RAW = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)


def test_numeric_owners_and_special_bits(tmp_path: Path) -> None:
    apply(
        tmp_path,
        reg("bin/su", b"su", mode=0o4755, uid=0, gid=0),
        reg("usr/bin/wall", b"wall", mode=0o2755, uid=0, gid=5),
        dir_("tmp", mode=0o1777, uid=0, gid=0),
        reg("home/u/f", b"x", mode=0o6750, uid=1000, gid=1000, uname="root", gname="root"),
        sym("home/u/link", "/nowhere", uid=1000, gid=1001),
        dir_("home/u", uid=1000, gid=1000, mode=0o700),
    )
    st = (tmp_path / "bin/su").stat()
    assert stat.S_IMODE(st.st_mode) == 0o4755
    assert stat.S_IMODE((tmp_path / "usr/bin/wall").stat().st_mode) == 0o2755
    assert (tmp_path / "usr/bin/wall").stat().st_gid == 5
    assert stat.S_IMODE((tmp_path / "tmp").stat().st_mode) == 0o1777
    f = (tmp_path / "home/u/f").stat()
    assert (f.st_uid, f.st_gid, stat.S_IMODE(f.st_mode)) == (1000, 1000, 0o6750)
    link = os.lstat(tmp_path / "home/u/link")
    assert (link.st_uid, link.st_gid) == (1000, 1001)
    home = (tmp_path / "home/u").stat()
    assert (home.st_uid, stat.S_IMODE(home.st_mode)) == (1000, 0o700)


def test_device_nodes_and_fifos(tmp_path: Path) -> None:
    root_dev = os.stat("/").st_dev
    major, minor = os.major(root_dev), os.minor(root_dev)
    apply(
        tmp_path,
        node("dev/evil", tarfile.BLKTYPE, major, minor),
        node("dev/mem", tarfile.CHRTYPE, 1, 1, mode=0o640),
        node("dev/fifo", tarfile.FIFOTYPE, mode=0o620),
    )
    evil = os.lstat(tmp_path / "dev/evil")
    assert stat.S_ISBLK(evil.st_mode) and evil.st_rdev == os.makedev(major, minor)
    mem = os.lstat(tmp_path / "dev/mem")
    assert stat.S_ISCHR(mem.st_mode) and mem.st_rdev == os.makedev(1, 1)
    assert stat.S_IMODE(mem.st_mode) == 0o640
    assert stat.S_ISFIFO(os.lstat(tmp_path / "dev/fifo").st_mode)


@pytest.mark.parametrize(("major", "minor"), [(-1, 0), (0, -1), (1 << 12, 0), (0, 1 << 20)])
def test_invalid_device_numbers_are_refused(tmp_path: Path, major: int, minor: int) -> None:
    raw = build(node("dev/bad", tarfile.CHRTYPE, major, minor), fmt=tarfile.GNU_FORMAT)
    with pytest.raises(InvalidArgument, match="out of range"):
        apply_layer(tmp_path, io.BytesIO(raw))
    assert not (tmp_path / "dev/bad").exists()


def test_privileged_xattrs(tmp_path: Path) -> None:
    info, data = reg("bin/ping", b"ping", mode=0o755)
    info.pax_headers = {
        "SCHILY.xattr.security.capability": CAP_NET_RAW.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.trusted.note": "kept as root",
        "SCHILY.xattr.trusted.overlay.redirect": "/etc",
    }
    apply(tmp_path, (info, data))
    ping = tmp_path / "bin/ping"
    assert os.getxattr(ping, "security.capability") == CAP_NET_RAW  # set after chown
    assert os.getxattr(ping, "trusted.note") == b"kept as root"
    assert "trusted.overlay.redirect" not in os.listxattr(ping)


def test_overlay_markers_as_root(tmp_path: Path) -> None:
    apply(
        tmp_path,
        dir_("o"),
        reg("o/.wh..wh..opq"),
        reg("o/.wh.gone", uid=7, gid=8),
        whiteouts=Whiteouts.OVERLAY,
    )
    assert os.getxattr(tmp_path / "o", "trusted.overlay.opaque") == b"y"
    gone = os.lstat(tmp_path / "o/gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    assert (gone.st_uid, gone.st_gid) == (7, 8)


def test_round_trip_keeps_owners_devices_and_caps(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "dev").mkdir(parents=True)
    os.mknod(layer / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    (layer / "bin").mkdir()
    (layer / "bin/ping").write_bytes(b"ping")
    os.chown(layer / "bin/ping", 0, 1234)
    os.setxattr(layer / "bin/ping", "security.capability", CAP_NET_RAW)
    os.chmod(layer / "bin/ping", 0o4711)
    os.chown(layer / "bin", 42, 43)
    os.symlink("/bin/ping", layer / "ping")
    os.chown(layer / "ping", 5, 6, follow_symlinks=False)
    out = io.BytesIO()
    export_changes(layer, changes(layer, None), out)
    target = tmp_path / "target"
    target.mkdir()
    apply_layer(target, io.BytesIO(out.getvalue()))
    assert snapshot(target) == snapshot(layer)
