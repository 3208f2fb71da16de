"""Registry authentication: the ``WWW-Authenticate`` challenge, basic auth and bearer tokens.

Flow (the distribution token spec): a request answered 401 carries a challenge. ``Basic``: the
request is sent again with the user's credentials. ``Bearer realm=…,service=…,scope=…``: a token
is asked of the realm (with the credentials as basic auth, if any) for the scopes the operation
needs (``repository:NAME:pull`` or ``pull,push``) and the request is sent again with it. Tokens are
kept per realm, service and scope until they expire. Credentials never go to a host other than
the registry's or its token realm's.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlencode, urlsplit

import aiohttp

from engine.errors import InvalidArgument, Unavailable
from registry.body import read_capped
from registry.credentials import AuthConfig
from registry.manifest import decode

_PARAM: Final = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_MAX_TOKEN_BODY: Final = 1 << 20


class Unauthenticated(Exception):
    """The registry refused the credentials (or their absence) for this operation."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge."""

    scheme: str  # "basic" or "bearer"
    params: dict[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` header into its challenges, in order."""
    out: list[Challenge] = []
    for match in re.finditer(r"(?:^|,)\s*(Basic|Bearer)\b((?:[^,]|,(?!\s*(?:Basic|Bearer)\b))*)",
                             header, re.IGNORECASE):  # fmt: skip
        params = {
            m[1].lower(): (m[2] if m[2] is not None else m[3]).replace('\\"', '"')
            for m in _PARAM.finditer(match[2])
        }
        out.append(Challenge(match[1].lower(), params))
    return out


def basic(auth: AuthConfig) -> str:
    """The ``Authorization`` value for HTTP basic auth with *auth*'s user and password."""
    raw = f"{auth.username}:{auth.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


@dataclass
class Authorizer:
    """Answers a registry's challenges for one set of credentials and scopes."""

    auth: AuthConfig | None
    scopes: tuple[str, ...]
    _tokens: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    header: str = ""  # the Authorization value to send, once a challenge was answered

    async def answer(self, session: aiohttp.ClientSession, challenge_header: str) -> bool:
        """Work out the ``Authorization`` header for a 401; False if nothing can be tried."""
        for challenge in parse_challenges(challenge_header):
            if challenge.scheme == "basic":
                if self.auth is None or self.auth.anonymous or not self.auth.username:
                    return False
                new = basic(self.auth)
            else:
                new = "Bearer " + await self._token(session, challenge.params)
            if new == self.header:
                return False  # this very header was refused: do not loop
            self.header = new
            return True
        return False

    async def _token(self, session: aiohttp.ClientSession, params: dict[str, str]) -> str:
        if self.auth is not None and self.auth.registrytoken:
            return self.auth.registrytoken
        realm, service = params.get("realm", ""), params.get("service", "")
        key = (realm, service)
        cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgument(f"token realm {realm!r} is not an http(s) URL")
        query: list[tuple[str, str]] = [("service", service)] if service else []
        query += [("scope", s) for s in self.scopes]
        headers = {}
        if self.auth is not None and self.auth.username:
            query.append(("account", self.auth.username))
            headers["Authorization"] = basic(self.auth)
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        try:
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                body = await read_capped(response, _MAX_TOKEN_BODY)
                if response.status in (401, 403):
                    raise Unauthenticated(
                        f"{parts.netloc}: unauthorized: incorrect username or password "
                        f"(the token server answered {response.status})"
                    )
                if response.status != 200:
                    raise Unavailable(f"{parts.netloc}: token server answered {response.status}")
        except aiohttp.ClientError as exc:
            raise Unavailable(f"{parts.netloc}: cannot get a token: {exc}") from None
        token, lifetime = _token_of(body, parts.netloc)
        self._tokens[key] = (token, time.monotonic() + max(lifetime - 10, 5))
        return token


def _token_of(body: bytes, where: str) -> tuple[str, float]:
    doc = decode(body, f"{where}: token")
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise Unavailable(f"{where}: the token server sent no token")
    expires = doc.get("expires_in", 60)
    return token, float(expires) if isinstance(expires, int | float) else 60.0
