"""graph/archive/copy.py without root: tmp_path/"root" stands in for the container's root.

Shapes are what ``docker cp`` gets from the Engine (moby ``ResolvePath`` +
``TarResourceRebase``), written as the raw tar header names:

    GET /etc          etc/  etc/hosts  etc/sub/  etc/sub/deep
    GET /etc/         the same (a trailing slash only matters for a symlink)
    GET /etc/.        ./  ./hosts  ./sub/  ./sub/deep        (the CLI copies the contents)
    GET /etc/hosts    hosts
    GET /lnk          lnk                  (the symlink itself, lnk -> /etc)
    GET /lnk/         lnk/  lnk/hosts  ...  (followed, named after the link)
    GET /             /  /etc/  /etc/hosts  ...              (moby's "/" rebase special case)
    GET /.            ./  ./etc/  ./etc/hosts  ...

Security cases follow reliability-security.md §1.3 (CP-01..06); the ones needing mounts, chown
or a second mount namespace are in tests/linux/test_archive_copy_root.py.
"""

from __future__ import annotations

import base64
import bz2
import dataclasses
import grp
import gzip
import io
import json
import lzma
import os
import pwd
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from engine.errors import FailedPrecondition, InvalidArgument, NotFound
from graph.archive.copy import (
    GO_MODE_DIR,
    GO_MODE_SYMLINK,
    PathStat,
    archive_path,
    extract_to,
    go_file_mode,
    rfc3339,
    stat_path,
)
from tests.unit.test_archive_kit import Member, build, dir_, hard, node, reg, sym

T0 = 1_600_000_000_000_000_000  # 2020-09-13T12:26:40Z


def raw_entries(data: bytes) -> list[tuple[str, str]]:
    """Return (type, name) of every member header exactly as written (no tarfile cleanup)."""
    entries, pos = [], 0
    while pos + 512 <= len(data) and data[pos : pos + 512].strip(b"\0"):
        block = data[pos : pos + 512]
        name = block[:100].rstrip(b"\0").decode()
        prefix = block[345:500].rstrip(b"\0").decode()
        size = int(block[124:136].rstrip(b"\0 ") or b"0", 8)
        kind = chr(block[156])
        if kind not in "xg":
            entries.append((kind, f"{prefix}/{name}" if prefix else name))
        pos += 512 + (size + 511) // 512 * 512
    return entries


def get(root: Path, path: str) -> tuple[PathStat, bytes]:
    out = io.BytesIO()
    st = archive_path(root, path, out)
    return st, out.getvalue()


def members(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for info in tf:
            f = tf.extractfile(info) if info.isreg() else None
            found[info.name] = (info, f.read() if f else None)
    return found


def put(root: Path, path: str, *items: Member, **options: bool) -> None:
    extract_to(root, path, io.BytesIO(build(*items)), **options)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    top = tmp_path / "root"
    (top / "etc/sub").mkdir(parents=True)
    (top / "tmp").mkdir()
    (top / "etc/hosts").write_bytes(b"container hosts\n")
    (top / "etc/sub/deep").write_bytes(b"deep\n")
    os.symlink("/etc", top / "lnk")
    for path in (top, top / "etc", top / "etc/sub", top / "tmp"):
        path.chmod(0o755)  # independent of the umask
    for path in (top / "etc/hosts", top / "etc/sub/deep"):
        path.chmod(0o644)
    return top


def test_stat_header_is_go_json_in_base64(root: Path) -> None:
    os.utime(root / "etc/hosts", ns=(T0, T0 + 500_000_000))
    st = stat_path(root, "/etc/hosts")
    assert st == PathStat("hosts", 16, 0o644, "2020-09-13T12:26:40.5Z", "")
    raw = base64.b64decode(st.header())
    assert raw == (
        b'{"name":"hosts","size":16,"mode":420,"mtime":"2020-09-13T12:26:40.5Z","linkTarget":""}'
    )
    assert json.loads(raw)["mode"] == 0o644
    # encoding/json escapes <, > and & even inside strings.
    odd = PathStat("a<b>&c", 0, 0, "1970-01-01T00:00:00Z", "")
    assert b'"name":"a\\u003cb\\u003e\\u0026c"' in base64.b64decode(odd.header())


def test_stat_modes_are_go_file_modes(root: Path) -> None:
    os.mkfifo(root / "tmp/fifo", 0o644)
    os.chmod(root / "tmp/fifo", 0o644)
    os.chmod(root / "tmp", 0o1777)
    assert stat_path(root, "/etc").mode == GO_MODE_DIR | 0o755
    assert stat_path(root, "/tmp").mode == GO_MODE_DIR | 1 << 20 | 0o777  # sticky
    assert stat_path(root, "/tmp/fifo").mode == 1 << 25 | 0o644
    link = stat_path(root, "lnk")
    assert (link.mode, link.size, link.link_target) == (GO_MODE_SYMLINK | 0o777, 4, "/etc")
    assert go_file_mode(0o104755) == 1 << 23 | 0o755  # setuid regular file
    assert go_file_mode(0o020620) == 1 << 26 | 1 << 21 | 0o620  # char device


def test_stat_follows_trailing_slash_and_resolves_link_chains(root: Path) -> None:
    os.symlink("lnk", root / "lnk2")
    os.symlink("../etc/./sub/deep", root / "tmp/rel")
    assert stat_path(root, "/lnk/") == dataclasses.replace(stat_path(root, "/etc"), name="lnk")
    assert stat_path(root, "/lnk2").link_target == "/etc"
    assert stat_path(root, "/tmp/rel").link_target == "/etc/sub/deep"
    assert stat_path(root, "/etc/.").name == "."
    assert stat_path(root, "/").name == "/"


def test_rfc3339_trims_like_go() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1_000_000_001) == "1970-01-01T00:00:01.000000001Z"
    assert rfc3339(T0 + 120_000_000) == "2020-09-13T12:26:40.12Z"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/etc", ["5 etc/", "0 etc/hosts", "5 etc/sub/", "0 etc/sub/deep"]),
        ("etc", ["5 etc/", "0 etc/hosts", "5 etc/sub/", "0 etc/sub/deep"]),
        ("/etc/", ["5 etc/", "0 etc/hosts", "5 etc/sub/", "0 etc/sub/deep"]),
        ("/etc/.", ["5 ./", "0 ./hosts", "5 ./sub/", "0 ./sub/deep"]),
        ("/etc/hosts", ["0 hosts"]),
        ("/etc/sub/../hosts", ["0 hosts"]),
        ("/lnk", ["2 lnk"]),
        ("/lnk/", ["5 lnk/", "0 lnk/hosts", "5 lnk/sub/", "0 lnk/sub/deep"]),
        (
            "/",
            [
                "5 /",
                "5 /etc/",
                "0 /etc/hosts",
                "5 /etc/sub/",
                "0 /etc/sub/deep",
                "2 /lnk",
                "5 /tmp/",
            ],
        ),
        (
            "/.",
            [
                "5 ./",
                "5 ./etc/",
                "0 ./etc/hosts",
                "5 ./etc/sub/",
                "0 ./etc/sub/deep",
                "2 ./lnk",
                "5 ./tmp/",
            ],
        ),
    ],
)
def test_get_shapes_match_docker(root: Path, path: str, expected: list[str]) -> None:
    _, data = get(root, path)
    assert [f"{kind} {name}" for kind, name in raw_entries(data)] == expected


def test_get_content_owner_and_link_target(root: Path) -> None:
    st, data = get(root, "/etc")
    assert st.name == "etc" and st.mode == GO_MODE_DIR | 0o755
    found = members(data)
    info, content = found["etc/hosts"]
    assert content == b"container hosts\n"
    assert (info.uid, info.gid, info.uname, info.gname) == (os.getuid(), os.getgid(), "", "")
    _, data = get(root, "/lnk")
    assert members(data)["lnk"][0].linkname == "/etc"


def test_get_keeps_hard_links_fifos_and_skips_sockets(root: Path, tmp_path: Path) -> None:
    os.link(root / "etc/hosts", root / "etc/zz-hosts")
    os.mkfifo(root / "etc/pipe")
    _, data = get(root, "/etc/.")
    found = members(data)
    assert found["./zz-hosts"][0].islnk() and found["./zz-hosts"][0].linkname == "./hosts"
    assert found["./pipe"][0].isfifo()
    # Round trip: the hard link is a hard link again after a PUT.
    (root / "copy").mkdir()
    extract_to(root, "/copy", io.BytesIO(data))
    assert os.path.samefile(root / "copy/hosts", root / "copy/zz-hosts")


def test_get_missing_paths_are_not_found(root: Path) -> None:
    for path in ("/nope", "/etc/nope", "/etc/hosts/", "/etc/hosts/x", "/lnk/nope"):
        with pytest.raises(NotFound, match=f"^Could not find the file {path} in container$"):
            get(root, path)
    with pytest.raises(NotFound):
        stat_path(root, "/nope")


def test_put_unpacks_under_the_extraction_point(root: Path) -> None:
    put(root, "/etc", reg("new", b"n"), dir_("d"), reg("d/f", b"f"), sym("s", "/etc/hosts"))
    put(root, "etc/sub", reg("rel", b"r"))
    assert (root / "etc/new").read_bytes() == b"n"
    assert (root / "etc/d/f").read_bytes() == b"f"
    assert os.readlink(root / "etc/s") == "/etc/hosts"
    assert (root / "etc/sub/rel").read_bytes() == b"r"
    # The extraction point itself may be a symlink to a dir, followed inside the root.
    put(root, "/lnk", reg("via-link", b"v"))
    assert (root / "etc/via-link").read_bytes() == b"v"


def test_put_hard_links_are_relative_to_the_extraction_point(root: Path) -> None:
    put(root, "/tmp", reg("f", b"x"), hard("g", "f"), dir_("d"), hard("d/h", "./f"))
    assert os.path.samefile(root / "tmp/f", root / "tmp/g")
    assert os.path.samefile(root / "tmp/f", root / "tmp/d/h")


def test_put_extraction_point_must_be_an_existing_dir(root: Path) -> None:
    with pytest.raises(NotFound, match="^Could not find the file /nope in container$"):
        put(root, "/nope", reg("x"))
    with pytest.raises(InvalidArgument, match="^extraction point is not a directory$"):
        put(root, "/etc/hosts", reg("x"))
    assert not (root / "nope").exists()


def test_put_refuses_names_above_the_extraction_point(root: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"'\.\./x'"):
        put(root, "/etc", reg("ok"), reg("../x", b"escaped"))
    with pytest.raises(InvalidArgument, match=r"'sub2/\.\./\.\./\.\./\.\./outside'"):
        put(root, "/etc/sub", reg("sub2/../../../../outside"))
    with pytest.raises(InvalidArgument, match=r"'\.\./etc/hosts'"):
        put(root, "/tmp", hard("h", "../etc/hosts"))
    assert not (root / "x").exists() and not (tmp_path / "x").exists()
    assert not (tmp_path / "outside").exists() and not (root / "tmp/h").exists()
    # A leading "/" is cleaned as Go does ("/../y" is "/y"), then joined under the point.
    put(root, "/tmp", reg("/../y", b"y"))
    assert (root / "tmp/y").read_bytes() == b"y"


def test_put_no_overwrite_dir_non_dir(root: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot overwrite directory '/etc/sub'"):
        put(root, "/etc", reg("sub", b"file"), no_overwrite_dir_non_dir=True)
    with pytest.raises(InvalidArgument, match="cannot overwrite non-directory '/etc/hosts'"):
        put(root, "/etc", dir_("hosts"), no_overwrite_dir_non_dir=True)
    assert (root / "etc/sub/deep").is_file() and (root / "etc/hosts").is_file()
    put(root, "/etc", reg("hosts", b"replaced"), dir_("sub"), no_overwrite_dir_non_dir=True)
    assert (root / "etc/hosts").read_bytes() == b"replaced"
    put(root, "/etc", reg("sub", b"file"), dir_("hosts"))  # without the flag: replaced
    assert (root / "etc/sub").read_bytes() == b"file" and (root / "etc/hosts").is_dir()


def test_put_dot_entry_leaves_the_extraction_point_alone(root: Path) -> None:
    os.chmod(root / "tmp", 0o1777)
    put(root, "/tmp", dir_(".", mode=0o700), dir_("./", mode=0o700), reg("./f", b"f"))
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (root / "tmp/f").read_bytes() == b"f"
    with pytest.raises(InvalidArgument, match="extraction point"):
        put(root, "/tmp", reg("."))


def test_put_whiteout_names_are_plain_files(root: Path) -> None:
    put(root, "/etc", reg(".wh.hosts", b"w"), reg(".wh..wh..opq", b"o"))
    assert (root / "etc/hosts").read_bytes() == b"container hosts\n"
    assert (root / "etc/.wh.hosts").read_bytes() == b"w"
    assert (root / "etc/.wh..wh..opq").read_bytes() == b"o"


@pytest.mark.parametrize("codec", ["gzip", "bzip2", "xz", "zstd"])
def test_put_accepts_compressed_archives(root: Path, codec: str) -> None:
    data = build(reg(f"from-{codec}", codec.encode()))
    codecs: dict[str, Callable[[bytes], bytes]] = {
        "gzip": gzip.compress,
        "bzip2": bz2.compress,
        "xz": lzma.compress,
        "zstd": zstandard.ZstdCompressor().compress,
    }
    packed = codecs[codec](data)
    extract_to(root, "/tmp", io.BytesIO(packed))
    assert (root / f"tmp/from-{codec}").read_bytes() == codec.encode()


def test_put_empty_body_and_garbage(root: Path) -> None:
    extract_to(root, "/tmp", io.BytesIO(b""))
    assert os.listdir(root / "tmp") == []
    with pytest.raises(InvalidArgument, match="not a tar archive"):
        extract_to(root, "/tmp", io.BytesIO(b"this is not a tar" * 100))
    with pytest.raises(InvalidArgument, match="corrupt compressed stream"):
        packed = gzip.compress(build(reg("a", os.urandom(20000))))
        extract_to(root, "/tmp", io.BytesIO(packed[: len(packed) // 2]))


def test_read_only_rootfs_refuses_before_reading(root: Path) -> None:
    """CP-06 without mounts: a --read-only container's rootfs; the mount cases need root."""
    body = io.BytesIO(build(reg("x", b"x")))
    with pytest.raises(FailedPrecondition, match="^container rootfs is marked read-only$"):
        extract_to(root, "/tmp", body, rootfs_read_only=True)
    assert body.tell() == 0 and os.listdir(root / "tmp") == []


def test_cp01_static_symlink_resolves_in_the_container(root: Path) -> None:
    """CP-01 (CVE-2018-15664 static case): /test -> /tmp means the container's /tmp."""
    os.symlink("/tmp", root / "test")
    name = f"testfile-{uuid.uuid4().hex}"
    put(root, "/test", reg(name, b"payload"))
    assert (root / "tmp" / name).read_bytes() == b"payload"
    assert not Path("/tmp", name).exists()
    os.symlink("/", root / "slash")
    _, data = get(root, "/slash/etc/hosts")
    assert members(data)["hosts"][1] == b"container hosts\n"
    _, data = get(root, f"/test/{name}")
    assert members(data)[name][1] == b"payload"


def test_cp03_host_space_links_and_globs(root: Path, tmp_path: Path) -> None:
    """CP-03: links to host-only paths dangle in the container; * is a name, never a glob."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "hostfile").write_bytes(b"HOST SECRET")
    os.symlink(host / "hostfile", root / "tmp/badlink")
    os.symlink(host, root / "tmp/baddir")
    for path in ("/tmp/badlink/", "/tmp/baddir/hostfile", "/tmp/baddir/", "/tmp/*"):
        with pytest.raises(NotFound):
            get(root, path)
    with pytest.raises(NotFound):
        put(root, "/tmp/baddir", reg("planted", b"x"))
    assert os.listdir(host) == ["hostfile"]
    st, data = get(root, "/tmp/badlink")  # the link itself, as docker cp without -L
    assert st.link_target == str(host / "hostfile")
    assert raw_entries(data) == [("2", "badlink")] and b"HOST SECRET" not in data
    (root / "tmp/*").write_bytes(b"star")
    _, data = get(root, "/tmp/*")
    assert raw_entries(data) == [("0", "*")]
    _, data = get(root, "/tmp/.")
    assert b"HOST SECRET" not in data


def test_cp05_no_parent_dirs_outside(root: Path) -> None:
    """CP-05 (CVE-2021-41089): /a -> /../../../../tmp/<x>; b missing."""
    name = f"cp05-{uuid.uuid4().hex}"
    os.symlink(f"/../../../../tmp/{name}", root / "a")
    with pytest.raises(NotFound):
        put(root, "/a/b/c", reg("f", b"f"))
    assert not Path("/tmp", name).exists() and not (root / "tmp" / name).exists()
    put(root, "/", reg("a/b/c/f", b"inside"))
    assert (root / "tmp" / name / "b/c/f").read_bytes() == b"inside"
    assert not Path("/tmp", name).exists()


def test_cp04_owners_numeric_and_no_nss(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CP-04 (CVE-2019-14271): names in the tar are ignored; NSS is never consulted."""
    canary = tmp_path / "nss-canary"
    lib = root / "lib/x86_64-linux-gnu/libnss_files.so.2"
    lib.parent.mkdir(parents=True)
    (root / "etc/nsswitch.conf").write_text("passwd: files\ngroup: files\n")
    (root / "etc/passwd").write_text("root:x:4321:4321::/root:/bin/sh\n")
    source = tmp_path / "nss.c"
    source.write_text(
        "#include <stdio.h>\n__attribute__((constructor)) static void hit(void) {"
        f' FILE *f = fopen("{canary}", "w"); if (f) fclose(f); }}\n'
    )
    cc = shutil.which("cc")
    if cc is not None:
        subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(source)], check=True)
    else:  # the assertions below still hold for a library nothing could load
        lib.write_bytes(b"\x7fELF not really")

    def refuse(*args: object) -> None:
        raise AssertionError(f"NSS lookup {args!r}")

    for module, fn in ((pwd, "getpwnam"), (pwd, "getpwuid"), (grp, "getgrnam"), (grp, "getgrgid")):
        monkeypatch.setattr(module, fn, refuse)
    uid = os.getuid()
    put(root, "/tmp", reg("named", b"n", uid=uid, gid=uid, uname="root", gname="root"))
    put(root, "/tmp", reg("kept", b"k", uid=uid, gid=uid, uname="nobody"), copy_uid_gid=True)
    _, data = get(root, "/tmp")
    for info, _ in members(data).values():
        assert (info.uname, info.gname) == ("", "")
    assert (root / "tmp/kept").stat().st_uid == uid
    assert not canary.exists()
    with open("/proc/self/maps") as maps:
        assert str(lib) not in maps.read()


def test_device_entries_need_root_to_be_made(root: Path) -> None:
    if os.geteuid() == 0:
        put(root, "/tmp", node("null", tarfile.CHRTYPE, 1, 3))
        assert os.major((root / "tmp/null").lstat().st_rdev) == 1
    else:
        put(root, "/tmp", node("null", tarfile.CHRTYPE, 1, 3))  # skipped with a warning
        assert not (root / "tmp/null").exists()
