"""Hostile layer tars (reliability-security.md §1.1, TAR-01..11, 19): nothing outside the root.

Layout per test: ``base/dest`` is the layer root, ``base/victim/hello`` the canary beside it,
``base/dest-evil/secret`` a sibling sharing the root's prefix. Every case is applied with both
whiteout modes. The oracle (go-archive ``testBreakout``): the tree outside the root is byte-for-byte
unchanged, no file inside the root has the canary's content, and host /, /etc and /tmp gained
nothing. A case may be refused (InvalidArgument) or contained; some must succeed.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from engine.errors import InvalidArgument
from graph.archive import Whiteouts, apply_layer
from tests.unit.test_archive_kit import Member, build, dir_, hard, reg, sym

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: host paths, ownership")

REFUSE, CONTAIN, EITHER = "refuse", "contain", "either"


class World(NamedTuple):
    base: Path
    root: Path
    victim: Path
    canary: bytes


def _tree(top: Path, skip: Path) -> dict[str, tuple[int, int, int, str]]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if Path(dirpath) == skip or skip in Path(dirpath).parents:
            continue
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path == skip:
                continue
            st = os.lstat(path)
            digest = (
                hashlib.sha256(path.read_bytes()).hexdigest()
                if path.is_file() and not path.is_symlink()
                else ""
            )
            found[str(path)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return found


def _host() -> tuple[list[str], ...]:
    return tuple(sorted(os.listdir(d)) for d in ("/", "/etc", "/tmp"))


@pytest.fixture
def world(tmp_path: Path) -> World:
    base = tmp_path / "base"
    (base / "dest").mkdir(parents=True)
    (base / "victim").mkdir()
    (base / "dest-evil").mkdir()
    canary = f"canary {time.time_ns()}".encode()
    (base / "victim/hello").write_bytes(canary)
    (base / "victim/perm400").write_bytes(b"x")
    os.chmod(base / "victim/perm400", 0o400)
    (base / "dest-evil/secret").write_bytes(canary + b" evil")
    return World(base, base / "dest", base / "victim", canary)


def run(w: World, layers: list[list[Member]], expect: str, mode: Whiteouts) -> None:
    outside = _tree(w.base.parent, w.root)
    host = _host()
    refused = False
    for members in layers:
        try:
            apply_layer(w.root, io.BytesIO(build(*members)), whiteouts=mode)
        except InvalidArgument as exc:
            refused = True
            assert repr(members[-1][0].name) in str(exc) or "invalid" in str(exc)
            break
    assert _tree(w.base.parent, w.root) == outside, "files outside the root changed"
    assert _host() == host, "host /, /etc or /tmp changed"
    for dirpath, _, filenames in os.walk(w.root):
        for name in filenames:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                assert w.canary not in path.read_bytes(), f"{path} reads the canary"
    if expect == REFUSE:
        assert refused, "expected the layer to be refused"
    if expect == CONTAIN:
        assert not refused, "expected the layer to be applied"


def cases(victim: str) -> dict[str, tuple[list[list[Member]], str]]:
    """Hostile layers by id; *victim* is the absolute path of the canary dir."""
    v = victim
    return {
        # TAR-01 `..` names
        "dotdot-file": ([[reg("../victim/dotdot", b"pwn")]], REFUSE),
        "dotdot-only": ([[reg("..", b"pwn")]], REFUSE),
        "dotdot-pwned": ([[reg("../pwned", b"pwn")]], REFUSE),
        "dotdot-2": ([[reg("../../pwned", b"pwn")]], REFUSE),
        # TAR-02 absolute names land inside
        "abs-dotdot": ([[reg("/../victim/slash-dotdot", b"pwn")]], CONTAIN),
        "abs-etc": ([[reg("/etc/passwd", b"pwn")]], CONTAIN),
        "abs-victim": ([[reg(f"{v}/hello", b"pwn")]], CONTAIN),
        # TAR-03 hard links out
        "hl-dotdot": ([[hard("dotdot", "../victim/hello")]], REFUSE),
        "hl-slash-dotdot": ([[hard("slash-dotdot", "/../victim/hello")]], REFUSE),
        "hl-abs": ([[hard("abs", f"{v}/hello")]], REFUSE),
        "hl-loophole-file": (
            [[hard("loophole-victim", "../victim"), reg("loophole-victim/file", b"pwn")]],
            REFUSE,
        ),
        "hl-sibling": ([[hard("grab", "../dest-evil/secret")]], REFUSE),
        # TAR-04 symlinks out: created, never followed out
        "sym-dotdot": ([[sym("dotdot", "../victim/hello")]], CONTAIN),
        "sym-abs": ([[sym("abs", f"{v}/hello")]], CONTAIN),
        "sym-loophole-file": (
            [[sym("loophole-victim", "../victim"), reg("loophole-victim/file", b"pwn")]],
            CONTAIN,
        ),
        "sym-loophole-hello": (
            [[sym("loophole-victim", "../victim"), reg("loophole-victim/hello", b"pwn")]],
            CONTAIN,
        ),
        "sym-loophole-sym": (
            [
                [
                    sym("loophole-victim", "../victim"),
                    sym("loophole-victim/symlink", "../victim/hello"),
                ]
            ],
            CONTAIN,
        ),
        "sym-loophole-hl": (
            [[sym("loophole-victim", "../victim"), hard("hardlink", "loophole-victim/hello")]],
            REFUSE,
        ),
        "sym-loophole-replaced": (
            [[sym("loophole-victim", "../victim"), reg("loophole-victim", b"pwn")]],
            CONTAIN,
        ),
        "sym-dir-loophole": (
            [[sym("dir/loophole", "../../victim"), reg("dir/loophole/newdir/newfile", b"pwn")]],
            CONTAIN,
        ),
        "sym-abs-dir": (
            [[sym("tmpdir", v), reg("tmpdir/hello", b"pwn"), dir_("tmpdir/sub")]],
            CONTAIN,
        ),
        "sym-abs-then-dir-meta": ([[sym("tmpdir", v), dir_("tmpdir", mode=0o777)]], CONTAIN),
        # TAR-05 two-hop chain and longer chains
        "chain-two-hop": (
            [
                [
                    dir_("inner"),
                    sym("inner/go_up", ".."),
                    sym("inner/go_up/escape", "../victim"),
                    reg("inner/go_up/escape/newfile", b"pwn"),
                ]
            ],
            CONTAIN,
        ),
        "chain-abc": (
            [[sym("a", "b"), sym("b", "c"), sym("c", "../../../.."), reg("a/pwned", b"pwn")]],
            CONTAIN,
        ),
        "chain-loop": ([[sym("x", "y"), sym("y", "x"), reg("x/f", b"pwn")]], REFUSE),
        # TAR-07 across layers
        "layers-rel": (
            [[sym("x", f"../../../../..{v}")], [reg("x/authorized_keys", b"pwn")]],
            CONTAIN,
        ),
        "layers-root": ([[sym("x", "/")], [reg("x/authorized_keys", b"pwn")]], CONTAIN),
        "layers-abs": ([[sym("x", v)], [reg("x/hello", b"pwn"), hard("x/hl", "x/hello")]], CONTAIN),
        # dir swapped for a symlink mid-archive
        "swap-dir": ([[dir_("d"), reg("d/a", b"1"), sym("d", v), reg("d/hello", b"pwn")]], CONTAIN),
        "swap-dir-hl": (
            [[dir_("d"), reg("d/a", b"1"), sym("d", "../victim"), hard("d/b", "d/a")]],
            REFUSE,
        ),
        # TAR-09 metadata through links
        "meta-through-sym": (
            [
                [sym(f"{v}/also", f"{v}/perm400"), hard("sketchylink", f"{v}/also")],
                [reg(f"{v}/also", b"pwn", mode=0o777)],
            ],
            CONTAIN,
        ),
        # TAR-11 whiteouts
        "wh-dotdot": ([[reg("../.wh.victim")]], REFUSE),
        "wh-abs": ([[reg("/../.wh.victim"), reg(f"{v}/.wh.hello")]], CONTAIN),
        "wh-through-sym": ([[sym("lnk", v), reg("lnk/.wh.hello")]], CONTAIN),
        "wh-through-rel-sym": (
            [[sym("lnk", "../victim"), reg("lnk/.wh.hello"), reg("lnk/.wh..wh..opq")]],
            CONTAIN,
        ),
        "wh-opq-root": ([[reg(".wh..wh..opq"), reg("f", b"x")]], CONTAIN),
        "wh-opq-up": ([[sym("up", ".."), reg("up/.wh..wh..opq")]], CONTAIN),
        # TAR-19 names at the edges
        "long-name": ([[reg("d/" * 3000 + "f", b"pwn")]], REFUSE),
        "long-link": ([[hard("l", "../" * 2000 + "victim/hello")]], REFUSE),
    }


CASE_IDS = list(cases("/v"))


@pytest.mark.parametrize("mode", list(Whiteouts))
@pytest.mark.parametrize("case", CASE_IDS)
def test_hostile_layer(world: World, case: str, mode: Whiteouts) -> None:
    layers, expect = cases(str(world.victim))[case]
    run(world, layers, expect, mode)


def test_oracle_notices_a_write_outside(world: World) -> None:
    before = _tree(world.base.parent, world.root)
    (world.victim / "hello").write_bytes(world.canary + b"!")
    assert _tree(world.base.parent, world.root) != before


def test_contained_writes_land_inside(world: World) -> None:
    v = str(world.victim)
    run(world, [[sym("x", v)], [reg("x/hello", b"pwn")]], CONTAIN, Whiteouts.DELETE)
    assert (world.root / v.lstrip("/") / "hello").read_bytes() == b"pwn"
    run(world, [[reg("/../victim/slash-dotdot", b"in")]], CONTAIN, Whiteouts.DELETE)
    assert (world.root / "victim/slash-dotdot").read_bytes() == b"in"


def test_planted_hardlink_is_replaced_not_written_through(world: World) -> None:
    # A lower layer holding a hard link to a host file (it cannot come from a tar) must not
    # make the next layer write into that host file.
    os.link(world.victim / "hello", world.root / "planted")
    apply_layer(world.root, io.BytesIO(build(reg("planted", b"pwn", mode=0o777))))
    assert (world.victim / "hello").read_bytes() == world.canary
    assert (os.stat(world.victim / "hello").st_mode & 0o777) == 0o644


def test_compat_absolute_symlinks_and_hardlinks(world: World) -> None:
    """TAR-08: what kaniko- and Debian-built images do must keep working."""
    root = world.root
    apply_layer(root, io.BytesIO(build(dir_("run"), dir_("var"), sym("var/run", "/run"))))
    apply_layer(root, io.BytesIO(build(reg("var/run/existing/non-existing/file", b"a"))))
    assert (root / "run/existing/non-existing/file").read_bytes() == b"a"
    apply_layer(root, io.BytesIO(build(reg("var/run/existing/file2", b"b"))))
    assert (root / "run/existing/file2").read_bytes() == b"b"
    apply_layer(
        root, io.BytesIO(build(reg("var/run/source", b"s"), hard("var/run/link", "var/run/source")))
    )
    assert os.stat(root / "run/link").st_ino == os.stat(root / "run/source").st_ino
    assert os.stat(root / "run/source").st_nlink == 2
    apply_layer(
        root,
        io.BytesIO(
            build(reg("usr/bin/perlbug", b"perl"), hard("usr/bin/perlthanks", "/usr/bin/perlbug"))
        ),
    )
    assert os.path.samefile(root / "usr/bin/perlthanks", root / "usr/bin/perlbug")


def test_dangling_absolute_symlink_parent_is_created_inside(world: World) -> None:
    root = world.root
    apply_layer(root, io.BytesIO(build(sym("var-run", "/run"))))
    apply_layer(root, io.BytesIO(build(reg("var-run/x/y", b"a"))))
    assert (root / "run/x/y").read_bytes() == b"a"
    assert not Path("/run/x/y").exists() or Path("/run/x/y").read_bytes() != b"a"


def test_gnu_long_names_and_links(world: World) -> None:
    name = "n" * 200 + "/" + "m" * 200
    raw = build(reg(name, b"long"), hard("short", name), fmt=tarfile.GNU_FORMAT)
    apply_layer(world.root, io.BytesIO(raw))
    assert os.path.samefile(world.root / name, world.root / "short")
