"""Fixtures of the registry kit: real registries (plain, basic, token) and the hostile registry.

The real registries are module-scoped: one ``docker-registry`` process of each kind per test
module, stopped (by PID) and its storage removed at the module's end. Tests that need a clean
registry use their own repository names. ``hostile`` is a fresh ``HostileRegistry`` per test.
A test that needs a missing tool is skipped with the package to install.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.registry.hostile import HostileRegistry
from tests.registry.registries import Registry, missing_reason, running_registry

needs_skopeo = pytest.mark.skipif(
    shutil.which("skopeo") is None, reason="skopeo is not installed: apt-get install skopeo"
)
needs_umoci = pytest.mark.skipif(
    shutil.which("umoci") is None, reason="umoci is not installed: apt-get install umoci"
)


def _registry(kind: str) -> Iterator[Registry]:
    reason = missing_reason(kind)
    if reason:
        pytest.skip(reason)
    with running_registry(kind) as reg:
        yield reg


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    """An anonymous docker-registry on 127.0.0.1."""
    yield from _registry("plain")


@pytest.fixture(scope="module")
def basic_registry() -> Iterator[Registry]:
    """A docker-registry with htpasswd basic auth (``.user`` / ``.password``)."""
    yield from _registry("basic")


@pytest.fixture(scope="module")
def token_registry() -> Iterator[Registry]:
    """A docker-registry with token auth; its token server is ``.token_server``."""
    yield from _registry("token")


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    """A started hostile registry, stopped (all connections closed) after the test."""
    with HostileRegistry() as server:
        yield server
