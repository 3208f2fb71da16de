"""Graph driver registry and selection, with fake factories (no root, no mounts)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

import drivers.graph as graph_drivers
from drivers.graph.base import ChildIndex, Factory, GraphDriver, Registry, validate_id
from engine.errors import AlreadyExists, InvalidArgument, NotSupported

ID = "a" * 64


class FakeDriver:
    """Records how it was built; implements nothing else."""

    def __init__(self, name: str, home: Path, options: Sequence[str]) -> None:
        self.name, self.home, self.options = name, home, list(options)

    def create(self, id: str, parent: str = "") -> None:
        """Unused."""

    def remove(self, id: str) -> None:
        """Unused."""

    def get(self, id: str) -> Path:
        """Unused."""
        return self.home

    def put(self, id: str) -> None:
        """Unused."""

    def exists(self, id: str) -> bool:
        """Unused."""
        return False

    def status(self) -> list[tuple[str, str]]:
        """Unused."""
        return []

    def cleanup(self) -> None:
        """Unused."""


def works(name: str) -> Factory:
    def factory(home: Path, options: Sequence[str]) -> GraphDriver:
        return FakeDriver(name, home, options)

    return factory


def fails(exc: Exception) -> Factory:
    def factory(home: Path, options: Sequence[str]) -> GraphDriver:
        raise exc

    return factory


def registry(**factories: Factory) -> Registry:
    reg = Registry(priority=("overlay", "btrfs", "vfs"))
    for name, factory in factories.items():
        reg.register(name, factory)
    return reg


ROOT = Path("/var/lib/dockyard")


def test_builtins_are_registered_once() -> None:
    assert graph_drivers.registered() == ["btrfs", "overlay", "vfs"]
    assert graph_drivers.PRIORITY == ("overlay", "btrfs", "vfs")
    with pytest.raises(AlreadyExists):
        graph_drivers.register("vfs", works("vfs"))


def test_register_twice_is_already_exists() -> None:
    reg = registry(vfs=works("vfs"))
    with pytest.raises(AlreadyExists):
        reg.register("vfs", works("vfs"))
    assert reg.names() == ["vfs"]


def test_priority_walk_skips_not_supported_and_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    reg = registry(
        overlay=fails(NotSupported("overlay is not in /proc/filesystems")),
        btrfs=fails(NotSupported("/x is not on btrfs")),
        vfs=works("vfs"),
    )
    with caplog.at_level(logging.INFO, logger="drivers.graph.base"):
        chosen = reg.select(ROOT, ["opt"], {})
    assert isinstance(chosen, FakeDriver)
    assert (chosen.name, chosen.home, chosen.options) == ("vfs", ROOT / "vfs", ["opt"])
    messages = [r.getMessage() for r in caplog.records]
    assert "skip graphdriver overlay: overlay is not in /proc/filesystems" in messages
    assert "skip graphdriver btrfs: /x is not on btrfs" in messages
    assert any("vfs" in m and "selected" in m for m in messages)
    assert all(r.levelno == logging.INFO for r in caplog.records)


def test_priority_order_wins() -> None:
    reg = registry(vfs=works("vfs"), btrfs=works("btrfs"), overlay=works("overlay"))
    assert reg.select(ROOT, [], {}).name == "overlay"


def test_other_errors_in_the_walk_propagate() -> None:
    reg = registry(overlay=fails(InvalidArgument("overlay: unknown option x")), vfs=works("vfs"))
    with pytest.raises(InvalidArgument):
        reg.select(ROOT, ["x"], {})


def test_drivers_outside_the_priority_list_are_tried_last() -> None:
    reg = registry(vfs=fails(NotSupported("no")), zfs=works("zfs"))
    assert reg.select(ROOT, [], {}).name == "zfs"


def test_nothing_supported_is_not_supported_with_every_reason() -> None:
    reg = registry(overlay=fails(NotSupported("r1")), vfs=fails(NotSupported("r2")))
    with pytest.raises(NotSupported, match="overlay: r1; vfs: r2"):
        reg.select(ROOT, [], {})


def test_env_names_the_driver_exactly_and_its_errors_propagate() -> None:
    reg = registry(overlay=works("overlay"), btrfs=fails(NotSupported("not btrfs")))
    assert reg.select(ROOT, [], {"DOCKER_DRIVER": "overlay"}).name == "overlay"
    with pytest.raises(NotSupported, match="not btrfs"):
        reg.select(ROOT, [], {"DOCKER_DRIVER": "btrfs"})


def test_name_argument_wins_over_env() -> None:
    reg = registry(overlay=works("overlay"), vfs=works("vfs"))
    chosen = reg.select(ROOT, [], {"DOCKER_DRIVER": "overlay"}, name="vfs")
    assert chosen.name == "vfs"


def test_unknown_name_is_invalid_argument_naming_the_known() -> None:
    reg = registry(overlay=works("overlay"), vfs=works("vfs"))
    with pytest.raises(InvalidArgument, match="known: overlay, vfs"):
        reg.select(ROOT, [], {"DOCKER_DRIVER": "aufs"})
    with pytest.raises(InvalidArgument, match="devicemapper"):
        reg.select(ROOT, [], {}, name="devicemapper")


@pytest.mark.parametrize("good", ["0" * 64, "f" * 64, "0123456789abcdef" * 4 + "-init"])
def test_valid_ids(good: str) -> None:
    assert validate_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "..", "A" * 64, "a" * 65, "a" * 63, "a" * 64 + "-init2", "a" * 64 + "\n", "/a"]
)
def test_invalid_ids(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        validate_id(bad)


def test_child_index(tmp_path: Path) -> None:
    index = ChildIndex(tmp_path / "children")
    parent, child, other = "1" * 64, "2" * 64, "3" * 64
    live = {parent, child}
    index.add(parent, child)
    index.add(child, other)  # "other" never got created: a stale marker
    assert index.children(parent, live.__contains__) == [child]
    assert index.children(child, live.__contains__) == []
    assert not (tmp_path / "children" / other).exists()  # dropped
    index.discard(child)
    assert index.children(parent, live.__contains__) == []
