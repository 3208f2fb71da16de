"""Where a registry is reached: its endpoints, in the order a pull tries them.

Glossary: a *registry* is the domain of a reference (``docker.io``, ``127.0.0.1:5000``); an
*endpoint* is one base URL for it with how TLS is checked; a *mirror* is an endpoint of another
server that stands in for Docker Hub (``--registry-mirror``), tried before Hub itself.

Transport rules, as Docker's: HTTPS with the system's CAs, plus the CA certificates (``*.crt``)
and client certificate (``*.cert`` with its ``*.key``) in ``/etc/docker/certs.d/<host[:port]>/``.
A registry is *insecure* when it is on loopback (127.0.0.0/8, ::1, ``localhost``) or named by
``--insecure-registry`` (``host[:port]`` or a CIDR): then HTTPS without verification is tried
first and plain HTTP after it. No other registry is ever spoken to in plain HTTP.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from engine.errors import InvalidArgument

DOCKER_HUB: Final = "docker.io"
HUB_ENDPOINT: Final = "https://registry-1.docker.io"
CERTS_DIR: Final = Path("/etc/docker/certs.d")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One base URL of a registry and the TLS context used for it (None: plain HTTP)."""

    registry: str
    url: str
    tls: ssl.SSLContext | None
    mirror: bool = False

    @property
    def host(self) -> str:
        """``host[:port]`` of the URL, for comparing where a redirect goes."""
        return urlsplit(self.url).netloc


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """The daemon's registry settings."""

    insecure: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()
    certs_dir: Path = CERTS_DIR
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        networks = []
        for item in self.insecure:
            if "/" in item:
                try:
                    networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise InvalidArgument(f"insecure-registry: {item!r} is not a CIDR") from None
        for mirror in self.mirrors:
            parts = urlsplit(mirror)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
                raise InvalidArgument(
                    f"registry-mirror: {mirror!r}: expected http(s)://host[:port]"
                )
        object.__setattr__(self, "_networks", tuple(networks))

    def is_insecure(self, registry: str) -> bool:
        """Whether *registry* (``host[:port]``) may be spoken to without verified TLS."""
        if registry in self.insecure:
            return True
        host = _hostname(registry)
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            if not self._networks:
                return False
            addresses = _resolve(host)
        for address in addresses:
            if address.is_loopback or any(address in n for n in self._networks):
                return True
        return False

    def to_info(self) -> dict[str, object]:
        """Docker's ``RegistryConfig`` block of ``GET /info``."""
        cidrs = ["127.0.0.0/8", "::1/128", *(str(n) for n in self._networks)]
        names = [i for i in self.insecure if "/" not in i]
        return {
            "AllowNondistributableArtifactsCIDRs": None,
            "AllowNondistributableArtifactsHostnames": None,
            "InsecureRegistryCIDRs": cidrs,
            "IndexConfigs": {name: self._index(name) for name in (DOCKER_HUB, *names)},
            "Mirrors": list(self.mirrors),
        }

    def _index(self, name: str) -> dict[str, object]:
        return {
            "Name": name,
            "Mirrors": list(self.mirrors) if name == DOCKER_HUB else [],
            "Secure": not self.is_insecure(name),
            "Official": name == DOCKER_HUB,
        }

    def endpoints(self, registry: str) -> list[Endpoint]:
        """The endpoints of *registry*, in the order to try them."""
        out: list[Endpoint] = []
        if registry == DOCKER_HUB:
            for mirror in self.mirrors:
                parts = urlsplit(mirror)
                tls = self._context(parts.netloc, verify=not self.is_insecure(parts.netloc))
                url = mirror.rstrip("/")
                out.append(Endpoint(registry, url, tls if parts.scheme == "https" else None, True))
            out.append(Endpoint(registry, HUB_ENDPOINT, self._context("registry-1.docker.io")))
            return out
        if self.is_insecure(registry):
            out.append(Endpoint(registry, f"https://{registry}", self._context(registry, False)))
            out.append(Endpoint(registry, f"http://{registry}", None))
            return out
        return [Endpoint(registry, f"https://{registry}", self._context(registry))]

    def _context(self, host: str, verify: bool = True) -> ssl.SSLContext:
        folder = self.certs_dir / host
        try:
            changed = folder.stat().st_mtime_ns
        except OSError:
            changed = 0
        return _context(folder, verify, changed)


@functools.lru_cache(maxsize=64)
def _context(folder: Path, verify: bool, changed: int) -> ssl.SSLContext:
    """The TLS context for a host whose certificates are in *folder* (if it exists), made once
    per state of the folder (*changed*: its mtime): loading the system's CAs takes ~30 ms."""
    if verify:
        context = ssl.create_default_context()
    else:  # nothing is checked, so no CA needs loading
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    if changed and folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix == ".crt" and verify:
                context.load_verify_locations(cafile=str(path))
            elif path.suffix == ".cert":
                key = path.with_suffix(".key")
                if not key.exists():
                    raise InvalidArgument(f"{path}: client certificate without {key.name}")
                context.load_cert_chain(str(path), str(key))
    return context


def allowed_redirect(config: RegistryConfig, origin: Endpoint, url: str) -> str:
    """Why a redirect from *origin* to *url* is refused ('' if it is allowed)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return ""
    if parts.scheme == "http" and origin.tls is None and config.is_insecure(parts.netloc):
        return ""
    return f"redirect to {parts.scheme or 'a relative'}://{parts.netloc} refused"


def _hostname(registry: str) -> str:
    if registry.startswith("["):
        return registry[1:].split("]", 1)[0]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def _resolve(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
