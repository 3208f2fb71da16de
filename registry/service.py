"""The daemon's registry service: its settings, and the credentials a job speaks with.

A job's credentials come from the Docker API's ``X-Registry-Auth`` header when the client sent
some; otherwise from the daemon's own ``config.json`` (what the ``login`` job stored), so
``dockyard job pull`` works after ``dockyard job login`` as ``docker pull`` works after
``docker login``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from registry.credentials import AuthConfig, config_path, decode_header, lookup
from registry.download import Retry
from registry.endpoint import RegistryConfig


@dataclass(frozen=True, slots=True)
class RegistryService:
    """Registry settings of the daemon (``--insecure-registry``, ``--registry-mirror``, …)."""

    config: RegistryConfig = field(default_factory=RegistryConfig)
    max_downloads: int = 3
    max_uploads: int = 5
    retry: Retry = field(default_factory=Retry)
    credentials: Path = field(default_factory=config_path)

    def session(self) -> aiohttp.ClientSession:
        """A new HTTP client session for one pull or push (no transparent decompression)."""
        connector = aiohttp.TCPConnector(limit=32, enable_cleanup_closed=True)
        return aiohttp.ClientSession(
            connector=connector, auto_decompress=False, trust_env=False, raise_for_status=False
        )

    def auth(self, registry: str, header: str) -> AuthConfig | None:
        """The credentials for *registry*: from the request's header, else the daemon's store."""
        given = decode_header(header) if header else None
        if given is not None and not given.anonymous:
            return given
        return lookup(self.credentials, registry)
