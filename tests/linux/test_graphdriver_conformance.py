"""Every registered graph driver against the shared conformance suite."""

from __future__ import annotations

import pytest

from drivers.graph import registered
from tests.linux import graphdriver_suite as suite
from tests.linux.graphdriver_suite import DifferSuite, GraphDriverSuite

# The suite's fixtures, used here by name.
btrfs_mount, driver, graph_root = suite.btrfs_mount, suite.driver, suite.graph_root


@pytest.fixture(params=registered())
def driver_name(request: pytest.FixtureRequest) -> str:
    """Each registered driver in turn."""
    return str(request.param)


class TestGraphDriver(GraphDriverSuite):
    """The GraphDriver contract."""


class TestDiffer(DifferSuite):
    """The Differ contract (own or naive)."""
