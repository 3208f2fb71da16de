"""contrib/mkimage/busybox.sh: the tar it writes, listed with tarfile (never extracted)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "contrib" / "mkimage" / "busybox.sh"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root: busybox.sh may apt-get install busybox-static"
    ),
]


def _busybox_static() -> None:
    """Skip unless Debian's busybox-static is installed or installable."""
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", "busybox-static"],
        capture_output=True,
        text=True,
        check=False,
    )
    if "install ok installed" in status.stdout:
        return
    if shutil.which("apt-get") is None:
        pytest.skip("busybox-static is not installed and there is no apt-get")
    simulate = subprocess.run(
        ["apt-get", "install", "-s", "-qq", "busybox-static"],
        capture_output=True,
        check=False,
    )
    if simulate.returncode != 0:
        pytest.skip("busybox-static is not installable here")


def _build(out: Path) -> bytes:
    proc = subprocess.run(
        [str(SCRIPT), str(out)],
        capture_output=True,
        timeout=600,
        check=False,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    if proc.returncode != 0 and b"could not install" in proc.stderr:
        pytest.skip(f"busybox-static could not be installed: {proc.stderr.decode()[-400:]}")
    assert proc.returncode == 0, proc.stderr.decode()
    return out.read_bytes()


def test_busybox_rootfs_tar(tmp_path: Path) -> None:
    _busybox_static()
    first = _build(tmp_path / "one.tar")
    second = _build(tmp_path / "two.tar")
    assert first == second, "two runs of busybox.sh gave different tars"

    with tarfile.open(tmp_path / "one.tar", mode="r:") as tar:
        members = {m.name.removeprefix("./").rstrip("/"): m for m in tar.getmembers()}

    busybox = members["bin/busybox"]
    assert busybox.isreg()
    assert busybox.mode & 0o111 == 0o111
    assert busybox.size > 100_000

    sh = members["bin/sh"]
    assert sh.issym()
    assert sh.linkname == "busybox"

    for name in ("tmp", "root", "proc", "sys", "dev", "etc", "var", "home"):
        assert members[name].isdir(), name
    assert members["tmp"].mode & 0o7777 == 0o1777
    assert {"etc/passwd", "etc/group"} <= members.keys()
    assert "etc/hostname" not in members
    assert all((m.uid, m.gid) == (0, 0) for m in members.values())
    links = [m for m in members.values() if m.issym()]
    assert len(links) > 100
    assert all(m.linkname == "busybox" and m.name.startswith("bin/") for m in links)
