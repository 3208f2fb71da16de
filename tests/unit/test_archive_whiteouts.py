"""Whiteouts and opaque dirs, applied as deletions (vfs) and as overlayfs markers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from graph.archive import Whiteouts
from tests.unit.test_archive_kit import IS_ROOT, apply, dir_, reg, sym

OPQ = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque" if IS_ROOT else "user.overlay.opaque"


def tree(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found.append(os.path.relpath(os.path.join(dirpath, name), root) + "/")
        for name in filenames:
            found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def test_layers_with_whiteouts_in_sequence(tmp_path: Path) -> None:
    apply(tmp_path, dir_("d"), reg("d/a"), reg("d/b"), dir_("e"), reg("e/x"), reg("f"))
    assert tree(tmp_path) == ["d/", "d/a", "d/b", "e/", "e/x", "f"]
    apply(tmp_path, reg(".wh.f"), reg("d/.wh.a"))
    assert tree(tmp_path) == ["d/", "d/b", "e/", "e/x"]
    apply(tmp_path, reg(f"e/{OPQ}"), reg("e/y"))
    assert tree(tmp_path) == ["d/", "d/b", "e/", "e/y"]
    apply(tmp_path, dir_("d"), reg(f"d/{OPQ}"), reg("d/c"), reg(".wh.e"), reg("g"))
    assert tree(tmp_path) == ["d/", "d/c", "g"]


def test_whiteout_removes_a_dir_recursively(tmp_path: Path) -> None:
    apply(tmp_path, reg("d/sub/deep/f"), reg("keep"))
    apply(tmp_path, reg(".wh.d"))
    assert tree(tmp_path) == ["keep"]


def test_whiteout_of_a_missing_path_is_fine(tmp_path: Path) -> None:
    apply(tmp_path, reg(".wh.nothing"), reg("missing/.wh.x"))
    assert tree(tmp_path) == []


def test_opaque_keeps_this_layers_entries_in_any_order(tmp_path: Path) -> None:
    apply(tmp_path, reg("o/old"), reg("o/sub/old"), reg("o/sub2/old"), reg("o/0-before"))
    apply(tmp_path, reg("o/0-before"), reg(f"o/{OPQ}"), reg("o/sub/new"), reg("o/after"))
    # o/sub is implied by o/sub/new: kept, but the lower content inside it is hidden too.
    assert tree(tmp_path) == ["o/", "o/0-before", "o/after", "o/sub/", "o/sub/new"]


def test_opaque_at_the_root_clears_only_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "beside").write_bytes(b"x")
    apply(root, reg("lower"))
    apply(root, reg(OPQ), reg("upper"))
    assert tree(root) == ["upper"]
    assert (tmp_path / "beside").read_bytes() == b"x"


def test_whiteout_through_a_symlinked_dir_resolves_in_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/whitedout").write_bytes(b"host")
    apply(root := _mk(root), reg("etc/whitedout"), sym("localetc", "/etc"))
    apply(root, reg("localetc/.wh.whitedout"))
    assert not (root / "etc/whitedout").exists()
    assert (tmp_path / "etc/whitedout").read_bytes() == b"host"


def _mk(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize("name", [".wh.", ".wh..", ".wh...", "etc/.wh..", "etc/.wh..."])
@pytest.mark.parametrize("mode", list(Whiteouts))
def test_invalid_whiteout_names(tmp_path: Path, name: str, mode: Whiteouts) -> None:
    with pytest.raises(InvalidArgument, match="invalid whiteout"):
        apply(tmp_path, reg(name), whiteouts=mode)


@pytest.mark.parametrize("mode", list(Whiteouts))
def test_aufs_metadata_entries_are_skipped(tmp_path: Path, mode: Whiteouts) -> None:
    apply(
        tmp_path,
        dir_(".wh..wh.plnk"),
        reg(".wh..wh.plnk/123.456"),
        reg(".wh..wh.aufs"),
        whiteouts=mode,
    )
    assert tree(tmp_path) == []


def test_overlay_whiteout_is_a_char_device(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/gone").write_bytes(b"upper copy")
    apply(tmp_path, reg("d/.wh.gone"), reg("x/.wh.implied"), whiteouts=Whiteouts.OVERLAY)
    for path in (tmp_path / "d/gone", tmp_path / "x/implied"):
        st = os.lstat(path)
        assert stat.S_ISCHR(st.st_mode)
        assert st.st_rdev == os.makedev(0, 0)
    assert not list(tmp_path.rglob(".wh.*"))


def test_overlay_opaque_dir_gets_the_xattr(tmp_path: Path) -> None:
    apply(tmp_path, dir_("o"), reg(f"o/{OPQ}"), reg("o/f"), whiteouts=Whiteouts.OVERLAY)
    assert os.getxattr(tmp_path / "o", OPAQUE_XATTR) == b"y"
    assert tree(tmp_path) == ["o/", "o/f"]


def test_overlay_opaque_keeps_existing_entries(tmp_path: Path) -> None:
    # In an upper dir, everything present belongs to this layer: nothing is deleted.
    (tmp_path / "o").mkdir()
    (tmp_path / "o/mine").write_bytes(b"x")
    apply(tmp_path, reg(f"o/{OPQ}"), whiteouts=Whiteouts.OVERLAY)
    assert tree(tmp_path) == ["o/", "o/mine"]


def test_forged_opaque_xattr_in_tar_is_dropped(tmp_path: Path) -> None:
    info, data = dir_("o")
    info.pax_headers = {f"SCHILY.xattr.{OPAQUE_XATTR}": "y"}
    apply(tmp_path, (info, data), whiteouts=Whiteouts.OVERLAY)
    assert OPAQUE_XATTR not in os.listxattr(tmp_path / "o")
