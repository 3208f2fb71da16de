"""Registry logins and lookups: ``auth`` (``POST /auth``), ``login``, ``logout`` and
``distribution_inspect`` (``GET /distribution/{name}/json``).

``auth`` checks credentials the way ``docker login`` has the daemon do it: ``GET /v2/`` on the
registry, and if it answers with a challenge, the challenge answered with the credentials (HTTP
basic, or a token asked of the realm) must make ``/v2/`` answer 200. It stores nothing: the
docker CLI keeps its own ``config.json``. ``login`` and ``logout`` do the same for the daemon's
own ``config.json``, which the daemon's jobs fall back to when a request brings no credentials.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from engine import ArgSpec, Engine, Job
from engine.errors import InvalidArgument, Unauthenticated, Unavailable
from graph.reference import DEFAULT_DOMAIN, parse
from jobs.services import REGISTRY
from registry.client import Repository
from registry.credentials import DOCKER_HUB_KEY, AuthConfig, erase, server_key, store
from registry.download import fetch_small
from registry.manifest import MAX_CONFIG, Index, Platform, decode
from registry.manifest import parse as parse_manifest
from registry.remote import fetch_manifest
from registry.service import RegistryService


@dataclass(frozen=True, slots=True)
class AuthParams:
    username: str = field(default="", metadata={"doc": "the user name"})
    password: str = field(default="", metadata={"secret": True, "doc": "the password (or a token)"})
    serveraddress: str = field(default="", metadata={"doc": "the registry; '' = Docker Hub"})
    email: str = field(default="", metadata={"doc": "ignored, as by dockerd"})
    identitytoken: str = field(
        default="", metadata={"secret": True, "doc": "a refresh token instead"}
    )


def registry_of(server: str) -> str:
    """The registry domain a login's server address names (Docker Hub for '')."""
    key = server_key(server)
    return DEFAULT_DOMAIN if key == DOCKER_HUB_KEY else key


async def check_login(service: RegistryService, registry: str, auth: AuthConfig) -> None:
    """Unauthenticated unless *auth* lets *registry* answer ``GET /v2/`` with 200."""
    if not registry or "/" in registry:
        raise InvalidArgument(f"serveraddress: {registry!r} is not a registry host")
    async with service.session() as http:
        repo = await Repository.open(service.config, http, registry, "", auth)
        url = repo.endpoint.url + "/v2/"
        try:
            async with repo.request("GET", url):
                return
        except Unauthenticated:
            raise Unauthenticated(
                f"login attempt to {url} failed with status: 401 Unauthorized"
            ) from None


async def auth(job: Job[AuthParams]) -> None:
    """Check credentials against a registry; emit Docker's ``{"Status": "Login Succeeded"}``."""
    p = job.params
    if not p.username and not p.identitytoken:
        raise InvalidArgument("username: a user name (or identitytoken) is required")
    given = AuthConfig(p.username, p.password, p.serveraddress, p.identitytoken)
    await check_login(job.engine[REGISTRY], registry_of(p.serveraddress), given)
    job.emit({"Status": "Login Succeeded", "IdentityToken": ""})


async def login(job: Job[AuthParams]) -> None:
    """Check credentials, then keep them in the daemon's own config.json."""
    p = job.params
    server = job.args[0] if job.args else p.serveraddress
    if not p.username or not p.password:
        raise InvalidArgument("username, password: both are required")
    service = job.engine[REGISTRY]
    await check_login(service, registry_of(server), AuthConfig(p.username, p.password, server))
    await asyncio.to_thread(store, service.credentials, server or DOCKER_HUB_KEY, p.username,
                            p.password)  # fmt: skip
    job.emit({"Status": "Login Succeeded", "IdentityToken": ""})


async def logout(job: Job[Any]) -> None:
    """Remove the daemon's stored credentials for a registry."""
    server = job.args[0] if job.args else DOCKER_HUB_KEY
    removed = await asyncio.to_thread(erase, job.engine[REGISTRY].credentials, server)
    text = "Removing login credentials for" if removed else "Not logged in to"
    job.emit({"Status": f"{text} {server_key(server)}"})


@dataclass(frozen=True, slots=True)
class InspectParams:
    auth: str = field(
        default="", metadata={"secret": True, "doc": "X-Registry-Auth: base64url JSON credentials"}
    )


async def distribution_inspect(job: Job[InspectParams]) -> None:
    """Emit the descriptor a reference names on its registry, and its platforms."""
    ref = parse(job.args[0])
    service = job.engine[REGISTRY]
    reference = ref.digest or ref.tag or "latest"
    async with service.session() as http:
        repo = await Repository.open(
            service.config, http, ref.domain, ref.path, service.auth(ref.domain, job.params.auth)
        )
        data, content_type, digest = await fetch_manifest(repo, reference)
        platforms = await _platforms(repo, data, content_type, digest)
    media = content_type.split(";")[0].strip()
    job.emit(
        {
            "Descriptor": {"mediaType": media, "digest": digest, "size": len(data)},
            "Platforms": platforms,
        }
    )


async def _platforms(repo: Repository, data: bytes, content_type: str, digest: str) -> list[Any]:
    doc = parse_manifest(data, content_type, f"{repo.endpoint.registry}: {repo.path}@{digest}")
    if isinstance(doc, Index):
        return [e.platform.to_json() for e in doc.manifests if e.platform is not None]
    config = decode(await fetch_small(repo, doc.config, MAX_CONFIG, "image config"), "config")
    os_, arch = config.get("os"), config.get("architecture")
    if not isinstance(os_, str) or not isinstance(arch, str):
        raise Unavailable(f"{repo.endpoint.registry}: the image config names no platform")
    variant = config.get("variant")
    return [Platform(os_, arch, variant if isinstance(variant, str) else "").to_json()]


def install(engine: Engine) -> None:
    """Register auth, login, logout and distribution_inspect."""
    engine.register("auth", auth, params=AuthParams)
    engine.register("login", login, params=AuthParams, args=ArgSpec((), optional=("server",)))
    engine.register("logout", logout, args=ArgSpec((), optional=("server",)))
    engine.register(
        "distribution_inspect", distribution_inspect, params=InspectParams,
        args=ArgSpec(("name",)),
    )  # fmt: skip
