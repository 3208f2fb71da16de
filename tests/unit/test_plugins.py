"""Plugin loading: specs, entry points, failures logged, half-installed plugins rolled back."""

from __future__ import annotations

import logging

import pytest

from engine import Engine
from engine.plugins import load_plugins


def test_spec_plugin_registers_its_jobs() -> None:
    engine = Engine()
    report = load_plugins(engine, ["tests.plugins.slow:install"], group="dockyard.tests.none")
    assert report.loaded == {"tests.plugins.slow:install": ["fail", "sleep", "wc"]}
    assert engine.names() == ["fail", "sleep", "wc"]


def test_module_without_attr_means_install() -> None:
    report = load_plugins(Engine(), ["tests.plugins.slow"], group="dockyard.tests.none")
    assert list(report.loaded) == ["tests.plugins.slow"]


def test_broken_plugins_are_warnings(caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine()
    specs = [
        "tests.plugins.broken",
        "tests.plugins.halfbroken",
        "no.such.module",
        "tests.plugins.slow",
    ]
    with caplog.at_level(logging.WARNING):
        report = load_plugins(engine, specs, group="dockyard.tests.none")
    assert sorted(report.failed) == [
        "no.such.module",
        "tests.plugins.broken",
        "tests.plugins.halfbroken",
    ]
    assert "broken on purpose" in report.failed["tests.plugins.broken"]
    assert "orphan" not in engine.names()  # rolled back
    assert engine.names() == ["fail", "sleep", "wc"]
    assert "plugin tests.plugins.halfbroken failed to load" in caplog.text


def test_entry_point_plugins_are_found() -> None:
    pytest.importorskip("dockyard_example", reason="the example plugin is installed by make test")
    engine = Engine()
    report = load_plugins(engine)
    assert report.loaded["example (dockyard_example:install)"] == ["countdown", "hello"]
