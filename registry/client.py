"""One repository on one registry, spoken to over the Registry HTTP API v2.

``Repository.open`` finds the first endpoint that answers ``GET /v2/`` (trying mirrors, HTTPS
and, for insecure registries, plain HTTP, in ``RegistryConfig.endpoints`` order) and keeps it.
Every request then goes through ``request``: it answers auth challenges (``registry.auth``),
follows redirects itself (at most 5; a redirect to a scheme that is not allowed is refused, and
``Authorization`` is only ever sent to the registry's own host), and turns the registry's error
bodies into the engine's errors, each message starting with the registry's name.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urljoin, urlsplit

import aiohttp

from engine.errors import (
    EngineError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
)
from registry.auth import Authorizer
from registry.auth import Unauthenticated as AuthRefused
from registry.body import read_capped
from registry.credentials import AuthConfig
from registry.endpoint import Endpoint, RegistryConfig, allowed_redirect
from registry.manifest import decode

MAX_REDIRECTS: Final = 5
_ERROR_BODY: Final = 64 << 10
# Headers that tell a registry which client speaks; some registries shape answers by it.
USER_AGENT: Final = "dockyard (registry client; like docker/28)"


def brief(exc: BaseException) -> str:
    """An exception as one short line (aiohttp may quote whole chunks of a body)."""
    text = (str(exc) or type(exc).__name__).splitlines()[0]
    return text if len(text) <= 200 else text[:200] + "…"


class RegistryError(EngineError):
    """The registry answered with an error status (its ``errors`` list, if it sent one)."""


@dataclass
class Repository:
    """A repository (``library/busybox``) on one endpoint of its registry."""

    config: RegistryConfig
    http: aiohttp.ClientSession
    endpoint: Endpoint
    path: str
    authorizer: Authorizer

    @property
    def name(self) -> str:
        """``registry/path`` as a user names it in messages."""
        return f"{self.endpoint.registry}/{self.path}"

    @classmethod
    async def open(
        cls,
        config: RegistryConfig,
        http: aiohttp.ClientSession,
        registry: str,
        path: str,
        auth: AuthConfig | None,
        actions: str = "pull",
    ) -> Repository:
        """Reach *registry* for repository *path*; Unavailable if no endpoint answers."""
        scopes = (f"repository:{path}:{actions}",) if path else ()
        failures: list[str] = []
        for endpoint in config.endpoints(registry):
            repo = cls(config, http, endpoint, path, Authorizer(auth, scopes))
            try:
                await repo.ping()
                return repo
            except (Unavailable, aiohttp.ClientError, OSError, TimeoutError) as exc:
                failures.append(f"{endpoint.url}: {brief(exc)}")
        raise Unavailable(f"{registry}: cannot reach the registry: " + "; ".join(failures))

    async def ping(self) -> None:
        """``GET /v2/``: the endpoint is a v2 registry (200, or 401 with a challenge)."""
        url = self.endpoint.url + "/v2/"
        try:
            async with self.http.get(url, ssl=self._ssl(url), allow_redirects=False) as r:
                await r.read()
                if r.status == 401:
                    await self.authorizer.answer(self.http, r.headers.get("WWW-Authenticate", ""))
                    return
                if r.status != 200:
                    raise Unavailable(f"GET /v2/ answered {r.status}")
        except aiohttp.ClientError as exc:
            raise Unavailable(brief(exc)) from None
        except AuthRefused as exc:
            raise Unauthenticated(str(exc)) from None

    def url(self, suffix: str) -> str:
        """The URL of ``/v2/<path>/<suffix>``."""
        return f"{self.endpoint.url}/v2/{self.path}/{suffix}"

    def _ssl(self, url: str) -> ssl.SSLContext | bool:
        if urlsplit(url).netloc == self.endpoint.host and self.endpoint.tls is not None:
            return self.endpoint.tls
        return url.startswith("https:")

    @contextlib.asynccontextmanager
    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        data: object = None,
        ok: tuple[int, ...] = (200,),
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send one request (with auth and redirects); yield the response if its status is *ok*."""
        seen_auth = False
        first = url
        for _ in range(MAX_REDIRECTS + 1):
            own = urlsplit(url).netloc == self.endpoint.host
            sent = {"User-Agent": USER_AGENT, **(headers or {})}
            if own and self.authorizer.header:
                sent["Authorization"] = self.authorizer.header
            try:
                response = await self.http.request(
                    method, url, headers=sent, data=data, ssl=self._ssl(url),
                    allow_redirects=False, timeout=timeout or aiohttp.ClientTimeout(sock_read=60),
                )  # fmt: skip
            except aiohttp.ClientError as exc:
                via = f"following a redirect to {url}: " if url != first else ""
                raise Unavailable(f"{self.endpoint.registry}: {via}{brief(exc)}") from exc
            try:
                if response.status == 401 and own and not seen_auth:
                    seen_auth = True
                    challenge = response.headers.get("WWW-Authenticate", "")
                    await response.read()
                    try:
                        if await self.authorizer.answer(self.http, challenge):
                            continue
                    except AuthRefused as exc:
                        raise Unauthenticated(str(exc)) from None
                if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                    target = urljoin(url, response.headers["Location"])
                    refused = allowed_redirect(self.config, self.endpoint, target)
                    if refused:
                        raise Unavailable(f"{self.endpoint.registry}: {url}: {refused}")
                    url = target
                    if response.status == 303:
                        method, data = "GET", None
                    continue
                if response.status not in ok:
                    raise await self._error(response, method, url)
                yield response
                return
            finally:
                response.release()
        raise Unavailable(f"{self.endpoint.registry}: {url}: more than {MAX_REDIRECTS} redirects")

    async def _error(self, response: aiohttp.ClientResponse, method: str, url: str) -> EngineError:
        body = await read_capped(response, _ERROR_BODY)
        detail = _registry_errors(body) or f"{response.status} {response.reason}"
        where = f"{self.endpoint.registry}: {method} {urlsplit(url).path}"
        if response.status in (401, 403):
            return Unauthenticated(f"{where}: {detail}")
        if response.status == 404:
            return NotFound(f"{where}: {detail}")
        if response.status == 416:
            return FailedPrecondition(f"{where}: {detail}")
        if response.status in (400, 405):
            return InvalidArgument(f"{where}: {detail}")
        return RegistryError(f"{where}: {detail}")


def _registry_errors(body: bytes) -> str:
    """The registry's ``{"errors": [{"code", "message", …}]}`` as one line ('' if none)."""
    try:
        doc = decode(body, "error")
    except InvalidArgument:
        return ""
    errors = doc.get("errors")
    if not isinstance(errors, list):
        return ""
    parts = []
    for item in errors[:5]:
        if isinstance(item, dict):
            code, message = str(item.get("code", "")).lower(), str(item.get("message", ""))
            parts.append(f"{code}: {message}" if code else message)
    return "; ".join(parts)
