"""NaiveDiffer against a fake driver: get/put stay balanced, sizes count each inode once."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from drivers.graph.naive import NaiveDiffer, changes_size
from graph import archive
from graph.archive import Change, ChangeKind

PARENT, CHILD = "1" * 64, "2" * 64


class DirDriver:
    """Layers are plain dirs under *root*; counts outstanding get()s."""

    name = "fake"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.held: dict[str, int] = {}

    def create(self, id: str, parent: str = "") -> None:
        """Create an empty dir."""
        (self.root / id).mkdir()

    def remove(self, id: str) -> None:
        """Unused."""

    def get(self, id: str) -> Path:
        """Count and return the dir."""
        self.held[id] = self.held.get(id, 0) + 1
        return self.root / id

    def put(self, id: str) -> None:
        """Uncount."""
        self.held[id] -= 1

    def exists(self, id: str) -> bool:
        """Return whether the dir exists."""
        return (self.root / id).is_dir()

    def status(self) -> list[tuple[str, str]]:
        """Nothing to report."""
        return []

    def cleanup(self) -> None:
        """Nothing to release."""


@pytest.fixture
def fake(tmp_path: Path) -> DirDriver:
    drv = DirDriver(tmp_path)
    drv.create(PARENT)
    drv.create(CHILD)
    (tmp_path / PARENT / "same").write_text("s")
    (tmp_path / CHILD / "same").write_text("s")
    os.utime(tmp_path / PARENT / "same", ns=(1, 1))
    os.utime(tmp_path / CHILD / "same", ns=(1, 1))
    (tmp_path / CHILD / "new").write_text("12345")
    os.link(tmp_path / CHILD / "new", tmp_path / CHILD / "new2")
    return drv


def balanced(drv: DirDriver) -> bool:
    return all(count == 0 for count in drv.held.values())


def test_changes_diff_and_size(fake: DirDriver) -> None:
    differ = NaiveDiffer(fake)
    changes = differ.changes(CHILD, PARENT)
    assert {c.path for c in changes} == {"/new", "/new2"}
    with differ.diff(CHILD, PARENT) as stream:
        assert stream.tell() == 0
        with tarfile.open(fileobj=io.BytesIO(stream.read())) as tf:
            names = tf.getnames()
    assert {"new", "new2"} <= set(names) and "same" not in names
    assert differ.diff_size(CHILD, PARENT) == 5  # two names, one inode
    assert balanced(fake)


def test_get_put_stay_balanced_on_errors(fake: DirDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> list[Change]:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(archive, "changes", broken)
    differ = NaiveDiffer(fake)
    for call in (differ.changes, differ.diff, differ.diff_size):
        with pytest.raises(OSError):
            call(CHILD, PARENT)
    monkeypatch.setattr(archive, "apply_layer", broken)
    with pytest.raises(OSError):
        differ.apply_diff(CHILD, PARENT, io.BytesIO())
    assert balanced(fake) and fake.held


def test_changes_size_skips_deletes_and_dirs(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_bytes(b"x" * 7)
    changes = [
        Change("/d", ChangeKind.ADD),
        Change("/f", ChangeKind.MODIFY),
        Change("/gone", ChangeKind.DELETE),
        Change("/vanished", ChangeKind.ADD),
    ]
    assert changes_size(tmp_path, changes) == 7
