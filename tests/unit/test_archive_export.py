"""export_changes(): tar layout, determinism, and the round trip through apply_layer."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from engine.errors import NotFound
from graph.archive import Change, ChangeKind, Whiteouts, apply_layer, changes, export_changes
from tests.unit.test_archive_kit import snapshot

T0 = 1_600_000_000_000_000_000


def pin(path: Path, ns: int = T0) -> None:
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def make_parent(top: Path) -> Path:
    for d in ("etc", "var/log", "gone/deep", "usr/bin", "opt"):
        (top / d).mkdir(parents=True)
    for f in ("etc/passwd", "var/log/syslog", "gone/deep/f", "usr/bin/sh", "opt/x"):
        (top / f).write_bytes(b"lower " + f.encode())
    os.symlink("sh", top / "usr/bin/bash")
    for path in sorted(top.rglob("*"), reverse=True):
        pin(path)
    return top


def make_layer(parent: Path, top: Path) -> Path:
    shutil.copytree(parent, top, symlinks=True)
    (top / "etc/passwd").write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    os.chmod(top / "etc/passwd", 0o600)
    shutil.rmtree(top / "gone")
    os.unlink(top / "opt/x")
    (top / "new/dir").mkdir(parents=True)
    (top / "new/dir/file").write_bytes(b"new")
    os.link(top / "new/dir/file", top / "new/link")
    os.symlink("/absolute/target", top / "new/abs")
    os.mkfifo(top / "new/fifo")
    os.chmod(top / "usr/bin/sh", 0o4755)
    os.setxattr(top / "var/log/syslog", "user.tag", b"\x00\xffbinary")
    os.setxattr(top / "new/dir", "user.dirtag", b"d")
    pin(top / "new/dir/file", T0 + 123_456_789)
    return top


def export(root: Path, result: list[Change]) -> bytes:
    out = io.BytesIO()
    written = export_changes(root, result, out)
    assert written == len(out.getvalue())
    return out.getvalue()


def test_round_trip_onto_a_copy_of_the_parent(tmp_path: Path) -> None:
    parent = make_parent(tmp_path / "parent")
    layer = make_layer(parent, tmp_path / "layer")
    tar = export(layer, changes(layer, parent))
    target = tmp_path / "target"
    shutil.copytree(parent, target, symlinks=True)
    applied = apply_layer(target, io.BytesIO(tar))
    assert applied.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert snapshot(target) == snapshot(layer)
    assert changes(target, layer) == []


def test_full_export_of_a_tree_round_trips(tmp_path: Path) -> None:
    layer = make_layer(make_parent(tmp_path / "parent"), tmp_path / "layer")
    target = tmp_path / "target"
    target.mkdir()
    apply_layer(target, io.BytesIO(export(layer, changes(layer, None))))
    assert snapshot(target) == snapshot(layer)


def test_export_is_deterministic(tmp_path: Path) -> None:
    parent = make_parent(tmp_path / "parent")
    layer = make_layer(parent, tmp_path / "layer")
    result = changes(layer, parent)
    assert export(layer, result) == export(layer, list(reversed(result)))


def test_tar_layout(tmp_path: Path) -> None:
    parent = make_parent(tmp_path / "parent")
    layer = make_layer(parent, tmp_path / "layer")
    with tarfile.open(fileobj=io.BytesIO(export(layer, changes(layer, parent)))) as tf:
        members = {m.name: m for m in tf}
    assert "gone" not in members and ".wh.gone" in members
    wh = members["opt/.wh.x"]
    assert wh.isreg() and wh.size == 0
    assert members["new/link"].islnk() and members["new/link"].linkname == "new/dir/file"
    assert members["new/abs"].linkname == "/absolute/target"
    assert members["new/fifo"].isfifo()
    assert members["usr/bin/sh"].mode == 0o4755
    assert (
        members["var/log/syslog"]
        .pax_headers["SCHILY.xattr.user.tag"]
        .encode("utf-8", "surrogateescape")
        == b"\x00\xffbinary"
    )
    assert members["new/dir/file"].pax_headers["mtime"] == "1600000000.123456789"
    assert all(m.uname == "" and m.gname == "" for m in members.values())
    assert all(m.uid == os.geteuid() for m in members.values() if ".wh." not in m.name)
    names = list(members)
    assert names.index("new") < names.index("new/dir") < names.index("new/dir/file")


def test_overlay_apply_of_an_export(tmp_path: Path) -> None:
    parent = make_parent(tmp_path / "parent")
    layer = make_layer(parent, tmp_path / "layer")
    upper = tmp_path / "upper"
    upper.mkdir()
    apply_layer(
        upper, io.BytesIO(export(layer, changes(layer, parent))), whiteouts=Whiteouts.OVERLAY
    )
    assert os.lstat(upper / "gone").st_rdev == 0
    assert (upper / "new/dir/file").read_bytes() == b"new"
    assert not (upper / "usr/bin/bash").exists()


def test_missing_changed_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        export(tmp_path, [Change("/absent", ChangeKind.ADD)])


def test_symlinked_parent_is_resolved_inside_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"host secret")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "dir")  # e.g. swapped in by a running container
    with pytest.raises(NotFound):
        export(root, [Change("/dir/secret", ChangeKind.ADD)])
