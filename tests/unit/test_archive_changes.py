"""changes(): the naive differ's rules (Docker's ChangesDirs)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engine.errors import NotFound
from graph.archive import Change, ChangeKind, changes

A, C, D = ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.DELETE
T0 = 1_600_000_000_000_000_000


def pin(path: Path, ns: int = T0) -> None:
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    parent = tmp_path / "parent"
    for d in ("etc", "var/log", "gone/deep", "usr/bin"):
        (parent / d).mkdir(parents=True)
    for f in ("etc/passwd", "var/log/syslog", "gone/deep/f", "usr/bin/sh"):
        (parent / f).write_bytes(b"data")
    os.symlink("sh", parent / "usr/bin/bash")
    for path in sorted(parent.rglob("*"), reverse=True):
        pin(path)
    layer = tmp_path / "layer"
    shutil.copytree(parent, layer, symlinks=True)
    for path in sorted(layer.rglob("*"), reverse=True):
        pin(path)
    return layer, parent


def kinds(result: list[Change]) -> list[tuple[str, ChangeKind]]:
    return [(c.path, c.kind) for c in result]


def test_identical_trees_have_no_changes(trees: tuple[Path, Path]) -> None:
    assert changes(*trees) == []


def test_no_parent_means_everything_added(trees: tuple[Path, Path]) -> None:
    layer, _ = trees
    result = changes(layer, None)
    assert all(c.kind is A for c in result)
    dirs = ["/etc", "/var", "/var/log", "/gone", "/gone/deep", "/usr", "/usr/bin"]
    files = ["/etc/passwd", "/var/log/syslog", "/gone/deep/f", "/usr/bin/sh", "/usr/bin/bash"]
    assert [c.path for c in result] == sorted(dirs + files)


def test_add_modify_delete_with_parent_dirs(trees: tuple[Path, Path]) -> None:
    layer, parent = trees
    (layer / "etc/new").write_bytes(b"x")
    (layer / "var/log/syslog").write_bytes(b"more data")
    shutil.rmtree(layer / "gone")
    pin(layer / "etc")
    pin(layer / "var/log")
    assert kinds(changes(layer, parent)) == [
        ("/etc", C),
        ("/etc/new", A),
        ("/gone", D),  # only the top-most deleted path
        ("/var", C),  # a dir with a change below it
        ("/var/log", C),
        ("/var/log/syslog", C),
    ]


def test_dir_mtime_alone_is_no_change_but_mode_is(trees: tuple[Path, Path]) -> None:
    layer, parent = trees
    pin(layer / "etc", T0 + 5 * 10**9)
    assert changes(layer, parent) == []
    os.chmod(layer / "usr/bin", 0o700)
    assert kinds(changes(layer, parent)) == [("/usr", C), ("/usr/bin", C)]


def test_file_mtime_and_symlink_target_are_changes(trees: tuple[Path, Path]) -> None:
    layer, parent = trees
    pin(layer / "etc/passwd", T0 + 2 * 10**9)
    os.unlink(layer / "usr/bin/bash")
    os.symlink("zz", layer / "usr/bin/bash")  # same length as "sh"
    pin(layer / "usr/bin/bash")
    pin(layer / "usr/bin")
    assert kinds(changes(layer, parent)) == [
        ("/etc", C),
        ("/etc/passwd", C),
        ("/usr", C),
        ("/usr/bin", C),
        ("/usr/bin/bash", C),
    ]


def test_seconds_only_mtime_matches_nanoseconds(trees: tuple[Path, Path]) -> None:
    layer, parent = trees
    pin(parent / "etc/passwd", T0 + 123)
    assert changes(layer, parent) == []  # T0 has no sub-second part
    pin(layer / "etc/passwd", T0 + 456)
    assert kinds(changes(layer, parent)) == [("/etc", C), ("/etc/passwd", C)]


def test_xattr_change_is_a_modify(trees: tuple[Path, Path]) -> None:
    layer, parent = trees
    os.setxattr(layer / "etc/passwd", "user.tag", b"1")
    assert kinds(changes(layer, parent)) == [("/etc", C), ("/etc/passwd", C)]


def test_type_changes(trees: tuple[Path, Path]) -> None:
    layer, parent = trees
    shutil.rmtree(layer / "var/log")
    (layer / "var/log").write_bytes(b"now a file")
    os.unlink(layer / "etc/passwd")
    (layer / "etc/passwd").mkdir()
    (layer / "etc/passwd/inside").write_bytes(b"x")
    pin(layer / "var")
    pin(layer / "etc")
    assert kinds(changes(layer, parent)) == [
        ("/etc", C),
        ("/etc/passwd", C),
        ("/etc/passwd/inside", A),
        ("/var", C),
        ("/var/log", C),  # no DELETE for what was below the old dir
    ]


def test_missing_tree_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        changes(tmp_path / "absent", None)
