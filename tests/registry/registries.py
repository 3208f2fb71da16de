"""Real registries for tests: Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1.

Kinds: ``plain`` (anonymous), ``basic`` (htpasswd file made with ``htpasswd -Bbn``) and
``token`` (bearer tokens from a ``TokenServer``, whose certificate is the registry's
``rootcertbundle``). ``start_registry(kind)`` writes a config into a fresh temp dir (storage,
delete enabled, ``http.addr`` on a free port, log level warn), starts ``docker-registry serve``
with its output in ``registry.log``, and polls ``GET /v2/`` (200 or 401) until it answers.
``Registry.stop()`` terminates the process by PID (kill after a grace), stops a token server it
owns and removes the temp dir. ``running_registry`` wraps both in a context manager.

``RegistryClient`` is a small HTTP client for tests that answers Basic and Bearer challenges the
way a Docker client does, so tests can seed or inspect a registry without the engine.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.registry.tokenserver import TokenServer

REGISTRY_BIN = Path("/usr/bin/docker-registry")
KINDS = ("plain", "basic", "token")


def missing_reason(kind: str = "plain") -> str | None:
    """Why a registry of *kind* cannot run here, or None when it can."""
    if not REGISTRY_BIN.exists():
        return f"{REGISTRY_BIN} is missing: apt-get install docker-registry (make deps)"
    if kind == "basic" and shutil.which("htpasswd") is None:
        return "htpasswd is missing: apt-get install apache2-utils (make deps)"
    return None


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    """A running ``docker-registry`` process and its files."""

    kind: str
    port: int
    base: Path
    proc: subprocess.Popen[bytes]
    user: str | None = None
    password: str | None = None
    token_server: TokenServer | None = None
    owns_token_server: bool = False

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as in an image reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}"

    @property
    def storage(self) -> Path:
        """The registry's storage root directory."""
        return self.base / "storage"

    @property
    def log_path(self) -> Path:
        """Where the registry's stdout and stderr go."""
        return self.base / "registry.log"

    def log_tail(self, lines: int = 30) -> str:
        """The last *lines* lines of the registry's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def client(self, user: str | None = None, password: str | None = None) -> RegistryClient:
        """A client for this registry, with this registry's credentials unless given others."""
        return RegistryClient(self.url, user or self.user, password or self.password)

    def stop(self) -> None:
        """Stop the process by PID, stop an owned token server, remove the temp dir."""
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            if self.owns_token_server and self.token_server is not None:
                self.token_server.stop()
            shutil.rmtree(self.base, ignore_errors=True)


def _config(kind: str, base: Path, port: int, token: TokenServer | None) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {base / 'storage'}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        f"  secret: {secrets.token_hex(16)}",
    ]
    if kind == "basic":
        lines += [
            "auth:",
            "  htpasswd:",
            "    realm: dockyard-test",
            f"    path: {base / 'htpasswd'}",
        ]
    elif kind == "token":
        assert token is not None
        lines += [
            "auth:",
            "  token:",
            f"    realm: {token.realm}",
            f"    service: {token.service}",
            f"    issuer: {token.issuer}",
            f"    rootcertbundle: {base / 'token-ca.pem'}",
        ]
    return "\n".join(lines) + "\n"


def _wait_ready(reg: Registry, deadline: float) -> str | None:
    """Poll GET /v2/ until 200 or 401; return why it failed, None when ready."""
    while time.monotonic() < deadline:
        if reg.proc.poll() is not None:
            return f"docker-registry exited with status {reg.proc.returncode}"
        conn = http.client.HTTPConnection("127.0.0.1", reg.port, timeout=1)
        try:
            conn.request("GET", "/v2/")
            if conn.getresponse().status in (200, 401):
                return None
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    return "docker-registry did not answer GET /v2/ in time"


def start_registry(
    kind: str = "plain",
    *,
    user: str = "dockyard",
    password: str | None = None,
    token_server: TokenServer | None = None,
    timeout: float = 15.0,
) -> Registry:
    """Start a registry of *kind* (plain, basic, token); a token server is started if not given."""
    if kind not in KINDS:
        raise ValueError(f"registry kind must be one of {KINDS}, not {kind!r}")
    reason = missing_reason(kind)
    if reason:
        raise FileNotFoundError(reason)
    password = password or "pw-" + secrets.token_hex(6)
    owns = kind == "token" and token_server is None
    if owns:
        token_server = TokenServer({user: password}).start()
    last_error = ""
    try:
        for _attempt in range(3):
            base = Path(tempfile.mkdtemp(prefix=f"registry-{kind}-"))
            port = free_port()
            if kind == "basic":
                out = subprocess.run(
                    ["htpasswd", "-Bbn", user, password], capture_output=True, check=True
                )
                (base / "htpasswd").write_bytes(out.stdout)
            if kind == "token":
                assert token_server is not None
                (base / "token-ca.pem").write_bytes(token_server.cert_pem)
            (base / "config.yml").write_text(_config(kind, base, port, token_server))
            with open(base / "registry.log", "wb") as log:
                proc = subprocess.Popen(
                    [str(REGISTRY_BIN), "serve", str(base / "config.yml")],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=base,
                )
            reg = Registry(kind, port, base, proc, token_server=token_server)
            if kind != "plain":
                reg.user, reg.password = user, password
            problem = _wait_ready(reg, time.monotonic() + timeout)
            if problem is None:
                reg.owns_token_server = owns
                return reg
            last_error = f"{problem}; log tail:\n{reg.log_tail()}"
            reg.stop()
            if "address already in use" not in last_error:
                break
    except BaseException:
        if owns and token_server is not None:
            token_server.stop()
        raise
    if owns and token_server is not None:
        token_server.stop()
    raise RuntimeError(last_error)


@contextlib.contextmanager
def running_registry(kind: str = "plain", **kwargs: object) -> Iterator[Registry]:
    """A registry of *kind* for the duration of the block (arguments as for start_registry)."""
    reg = start_registry(kind, **kwargs)  # type: ignore[arg-type]
    try:
        yield reg
    finally:
        reg.stop()


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split a WWW-Authenticate value into (scheme lowercased, parameters)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


@dataclass
class Response:
    """An HTTP answer read in full."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        """The body decoded as JSON."""
        return json.loads(self.body)


@dataclass
class RegistryClient:
    """A test client for a registry: answers Basic and Bearer challenges, caches tokens."""

    url: str
    user: str | None = None
    password: str | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    basic_seen: bool = False  # a Basic challenge was answered: send credentials up front

    def _send(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=30)
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request(method, target, body=body or None, headers=dict(headers))
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def _basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    def token(self, params: Mapping[str, str], scope: str) -> str:
        """Fetch a bearer token from the challenge's realm for *scope*."""
        query = {"service": params.get("service", ""), "scope": scope}
        if self.user:
            query["account"] = self.user
        headers = {"Authorization": self._basic()} if self.user else {}
        url = params["realm"] + "?" + urllib.parse.urlencode(query)
        resp = self._send("GET", url, b"", headers)
        if resp.status != 200:
            raise PermissionError(f"token server answered {resp.status}: {resp.body!r}")
        doc = resp.json()
        assert isinstance(doc, dict)
        return str(doc.get("token") or doc["access_token"])

    def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        scope: str = "",
    ) -> Response:
        """Send *method* *path* (or an absolute URL), answering one auth challenge if asked."""
        url = path if "://" in path else self.url + path
        hdrs = dict(headers or {})
        if scope in self.tokens:
            hdrs["Authorization"] = "Bearer " + self.tokens[scope]
        elif self.basic_seen:
            hdrs["Authorization"] = self._basic()
        resp = self._send(method, url, body, hdrs)
        if resp.status != 401 or "www-authenticate" not in resp.headers:
            return resp
        scheme, params = parse_challenge(resp.headers["www-authenticate"])
        if scheme == "basic" and self.user:
            self.basic_seen = True
            hdrs["Authorization"] = self._basic()
        elif scheme == "bearer":
            wanted = scope or params.get("scope", "")
            self.tokens[scope] = self.token(params, wanted)
            hdrs["Authorization"] = "Bearer " + self.tokens[scope]
        else:
            return resp
        return self._send(method, url, body, hdrs)

    def manifest(self, name: str, ref: str, accept: str = "") -> Response:
        """GET a manifest with the usual Accept list (or *accept*)."""
        accept = accept or ", ".join(MANIFEST_TYPES)
        return self.request(
            "GET",
            f"/v2/{name}/manifests/{ref}",
            headers={"Accept": accept},
            scope=f"repository:{name}:pull",
        )


MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
