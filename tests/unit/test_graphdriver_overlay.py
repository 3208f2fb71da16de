"""overlay's mount logic against a fake Mounter (no root, nothing really mounted)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.graph.mounts import MNT_DETACH
from drivers.graph.overlay import OverlayDriver
from engine.errors import FailedPrecondition, NotSupported


class FakeMounter:
    """Records mount/unmount calls; can be told to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.mounted: set[Path] = set()
        self.fail: OSError | None = None

    def mount(
        self,
        source: str,
        target: Path,
        fstype: str,
        flags: int = 0,
        data: str = "",
        *,
        cwd: Path | None = None,
    ) -> None:
        """Record a mount."""
        if self.fail is not None:
            raise self.fail
        self.calls.append(("mount", str(target), data, str(cwd) if cwd else ""))
        self.mounted.add(target)

    def unmount(self, target: Path, flags: int = 0) -> None:
        """Record an unmount; EINVAL if not mounted, like the kernel."""
        if target not in self.mounted:
            raise OSError(errno.EINVAL, "not mounted")
        assert flags == MNT_DETACH
        self.calls.append(("unmount", str(target)))
        self.mounted.discard(target)


def ids(n: int) -> list[str]:
    return [f"{i:064x}" for i in range(1, n + 1)]


@pytest.fixture
def fake() -> FakeMounter:
    return FakeMounter()


@pytest.fixture
def driver(tmp_path: Path, fake: FakeMounter) -> Iterator[OverlayDriver]:
    try:
        drv = OverlayDriver(tmp_path / "overlay", [], fake)
    except NotSupported as exc:
        pytest.skip(f"overlay: {exc}")
    fake.calls.clear()  # forget the probe
    yield drv


def make_chain(drv: OverlayDriver, n: int) -> list[str]:
    chain = ids(n)
    for i, layer in enumerate(chain):
        drv.create(layer, chain[i - 1] if i else "")
    return chain


def test_probe_mount_failure_is_not_supported(tmp_path: Path, fake: FakeMounter) -> None:
    fake.fail = OSError(errno.EPERM, "Operation not permitted")
    with pytest.raises(NotSupported, match="probe mount failed"):
        OverlayDriver(tmp_path / "overlay", [], fake)
    assert not any(p.name.startswith("tmp-probe") for p in (tmp_path / "overlay").iterdir())


def test_get_put_mount_once_and_unmount_at_zero(driver: OverlayDriver, fake: FakeMounter) -> None:
    base, child = make_chain(driver, 2)
    merged = driver.home / child / "merged"
    assert driver.get(child) == merged == driver.get(child)
    assert [c[0] for c in fake.calls] == ["mount"]
    driver.put(child)
    assert merged in fake.mounted
    driver.put(child)
    assert fake.calls[-1] == ("unmount", str(merged)) and not fake.mounted
    driver.put(child)  # unbalanced: ignored
    assert driver.get(base) == driver.home / base / "diff"  # base layers are not mounted
    driver.put(base)
    assert len(fake.calls) == 2


def test_mount_options_use_absolute_short_links(driver: OverlayDriver, fake: FakeMounter) -> None:
    a, b, c = make_chain(driver, 3)
    driver.get(c)
    _, target, data, cwd = fake.calls[0]
    link_a, link_b = ((driver.home / x / "link").read_text() for x in (a, b))
    home = driver.home
    assert data.startswith(
        f"lowerdir={home}/l/{link_b}:{home}/l/{link_a},"
        f"upperdir={home}/{c}/diff,workdir={home}/{c}/work"
    )
    assert cwd == "" and target == str(home / c / "merged")


def test_long_chains_mount_relative_to_home(driver: OverlayDriver, fake: FakeMounter) -> None:
    chain = make_chain(driver, 120)
    driver.get(chain[-1])
    _, _, data, cwd = fake.calls[0]
    assert cwd == str(driver.home)
    assert data.startswith("lowerdir=l/") and f",upperdir={chain[-1]}/diff," in data
    assert len(data) < os.sysconf("SC_PAGESIZE")


def test_options_over_a_page_are_a_clear_error(
    driver: OverlayDriver, fake: FakeMounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = make_chain(driver, 40)
    monkeypatch.setattr(os, "sysconf", lambda name: 1024)
    with pytest.raises(FailedPrecondition, match="page size"):
        driver.get(chain[-1])
    assert fake.calls == []


def test_cleanup_unmounts_everything_held(driver: OverlayDriver, fake: FakeMounter) -> None:
    base, *layers = make_chain(driver, 4)
    for layer in layers:
        driver.get(layer)
        driver.get(layer)
    driver.get(base)
    driver.cleanup()
    assert not fake.mounted
    assert sorted(c[1] for c in fake.calls if c[0] == "unmount") == sorted(
        str(driver.home / layer / "merged") for layer in layers
    )


def test_remove_unmounts_first(driver: OverlayDriver, fake: FakeMounter) -> None:
    _, child = make_chain(driver, 2)
    driver.get(child)
    driver.remove(child)
    assert not fake.mounted and not driver.exists(child)
    assert sorted(os.listdir(driver.home / "l")) == [(driver.home / ids(1)[0] / "link").read_text()]
