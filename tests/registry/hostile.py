"""Fixture F2: a hostile registry on 127.0.0.1 that misbehaves on demand.

It speaks enough of the v2 pull API to serve images a test gives it (``add_image``,
``add_manifest``, ``add_blob``): ``GET /v2/``, ``GET|HEAD /v2/NAME/manifests/REF`` (tag or
digest), ``GET|HEAD /v2/NAME/blobs/DIGEST`` with ``Range``, ``GET /v2/NAME/tags/list``, a blob
mirror ``GET /cdn/DIGEST`` (a redirect target that never asks for auth) and ``GET /token``
(answers ``token``, counted in ``requests``). Blobs are global by digest; manifests per name.

A ``Behaviour`` set with ``behave(key, Behaviour(...))`` changes how one blob or manifest is
answered; *key* is a digest, a tag, or ``cdn:DIGEST`` for the mirror path. With ``times=k`` it
applies to the first k GETs of that key only (HEADs see it but do not count), then the key is
answered correctly. Responses are written by hand on raw sockets, so a body can be cut
mid-stream, a Content-Length can lie and a connection can stall. Every request is recorded
(method, path, query, lowercased headers, server port, status) in ``requests``; a TLS
ClientHello on the plain port is answered 400 at once (as Go's server does, so clients that try
HTTPS first fall back quickly) and recorded with method ``TLS``. Keep-alive is honoured unless
the client sends ``Connection: close`` or a behaviour breaks the body.

Options: ``require_bearer=True`` challenges every request but ``/token`` and ``/cdn/`` (per key:
``Behaviour(require_bearer=True)``); ``tls=True`` serves HTTPS with a fresh self-signed
certificate for 127.0.0.1 and localhost (``cert_pem``), e.g. as an ``https://`` redirect target.

Lifecycle: ``HostileRegistry(...)`` → ``start()`` (or ``with``) → ``stop()``, which closes the
listener and every open connection and joins all threads.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives import serialization

from tests.registry.images import Image, Index, digest_of
from tests.registry.tokenserver import make_self_signed

TLS_ON_PLAIN = b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
NOT_FOUND = b'{"errors":[{"code":"%s","message":"not found"}]}'
ROUTE = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags)/(?P<ref>[^/]+)$")


@dataclass
class Behaviour:
    """How one blob or manifest is answered; the defaults answer correctly."""

    times: int | None = None  # apply to the first `times` GETs only
    corrupt: bool = False  # same length, different bytes
    length_delta: int = 0  # Content-Length = bytes sent + delta, then close
    extra: bytes = b""  # appended to the body (counted in Content-Length)
    cut_after: int | None = None  # close the connection after this many body bytes
    ignore_range: bool = False  # answer 200 with the whole body
    range_416: bool = False  # answer 416 to any Range
    stall: float = 0.0  # seconds to wait after headers and `stall_after` body bytes
    stall_after: int = 0
    redirect: str | None = None  # Location of a redirect
    redirect_status: int = 307
    digest_header: str | None = None  # Docker-Content-Digest to send instead of the true one
    status: int | None = None  # answer this error status instead
    require_bearer: bool = False  # 401 with a Bearer challenge unless the token is sent
    content_type: str | None = None  # Content-Type to send instead of the true one


@dataclass
class Request:
    """One request the hostile registry received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    port: int
    status: int = 0


@dataclass
class _Blob:
    data: bytes
    media_type: str = "application/octet-stream"


class HostileRegistry:
    """A v2 registry for tests whose answers can be broken per blob or manifest."""

    def __init__(
        self, *, require_bearer: bool = False, token: str = "hostile-token", tls: bool = False
    ) -> None:
        self.require_bearer, self.token, self.tls = require_bearer, token, tls
        self.blobs: dict[str, _Blob] = {}
        self.manifests: dict[tuple[str, str], _Blob] = {}
        self.behaviours: dict[str, Behaviour] = {}
        self.requests: list[Request] = []
        self.cert_pem = b""
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._ssl: ssl.SSLContext | None = None
        self.port = 0

    # -- content and behaviour ------------------------------------------------------------
    def add_blob(self, data: bytes, digest: str | None = None) -> str:
        """Serve *data* as a blob under *digest* (default: its true digest); return the digest."""
        digest = digest or digest_of(data)
        self.blobs[digest] = _Blob(data)
        return digest

    def add_manifest(self, name: str, ref: str, data: bytes, media_type: str) -> str:
        """Serve *data* as manifest NAME:REF and by its digest; return the digest."""
        digest = digest_of(data)
        self.manifests[(name, ref)] = self.manifests[(name, digest)] = _Blob(data, media_type)
        return digest

    def add_image(self, name: str, tag: str, image: Image | Index) -> str:
        """Serve an Image or Index (its manifests and blobs) as NAME:TAG; return its digest."""
        for data in image.blobs.values():
            self.add_blob(data)
        for data, media_type in image.manifests().values():
            self.add_manifest(name, digest_of(data), data, media_type)
        return self.add_manifest(name, tag, image.manifest, image.media_type)

    def behave(self, key: str, behaviour: Behaviour) -> None:
        """Answer requests for *key* (digest, tag or ``cdn:DIGEST``) as *behaviour* says."""
        with self._lock:
            self.behaviours[key], self._counts[key] = behaviour, 0

    # -- addresses and records ---------------------------------------------------------------
    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL (``http://`` or ``https://`` with TLS)."""
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def realm(self) -> str:
        """The token endpoint named in Bearer challenges."""
        return self.url + "/token"

    def cdn_url(self, digest: str, host: str = "localhost") -> str:
        """The mirror URL of a blob under another host name (default ``localhost``)."""
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/cdn/{digest}"

    def requests_for(self, fragment: str, method: str | None = None) -> list[Request]:
        """Recorded requests whose path contains *fragment* (and of *method*, if given)."""
        with self._lock:
            return [r for r in self.requests if fragment in r.path and method in (None, r.method)]

    # -- answering -------------------------------------------------------------------------
    def _behaviour(self, key: str, method: str) -> Behaviour:
        with self._lock:
            b = self.behaviours.get(key)
            if b is None:
                return Behaviour()
            n = self._counts.get(key, 0)
            if b.times is not None and n >= b.times:
                return Behaviour()
            if method == "GET":
                self._counts[key] = n + 1
            return b

    def _route(self, req: Request) -> tuple[int, dict[str, str], bytes, Behaviour]:
        """Status, headers, body and behaviour for *req* (before Range and breakage)."""
        error = NOT_FOUND % b"NOT_FOUND"
        if req.path == "/token":
            token = json.dumps({"token": self.token, "access_token": self.token}).encode()
            return 200, {}, token, Behaviour()
        if req.path.startswith("/cdn/"):
            digest = req.path[5:]
            blob = self.blobs.get(digest)
            b = self._behaviour("cdn:" + digest, req.method)
            return (200, {}, blob.data, b) if blob else (404, {}, error, b)
        if req.path == "/v2/" or req.path == "/v2":
            return 200, {}, b"{}", Behaviour(require_bearer=self.require_bearer)
        m = ROUTE.match(req.path)
        if not m:
            return 404, {}, error, Behaviour()
        name, kind, ref = m["name"], m["kind"], m["ref"]
        if kind == "tags":
            tags = sorted({r for (n, r) in self.manifests if n == name and ":" not in r})
            return 200, {}, json.dumps({"name": name, "tags": tags}).encode(), Behaviour()
        b = self._behaviour(ref, req.method)
        if self.require_bearer and not b.require_bearer:
            b = Behaviour(**{**b.__dict__, "require_bearer": True})
        item = self.manifests.get((name, ref)) if kind == "manifests" else self.blobs.get(ref)
        if item is None:
            code = b"MANIFEST_UNKNOWN" if kind == "manifests" else b"BLOB_UNKNOWN"
            return 404, {}, NOT_FOUND % code, b
        digest = ref if ref.startswith("sha256:") and kind == "blobs" else digest_of(item.data)
        return 200, {"Content-Type": item.media_type, "Docker-Content-Digest": digest}, item.data, b

    def _answer(self, conn: socket.socket, req: Request) -> bool:
        """Write the response; return False when the connection must be closed."""
        status, headers, body, b = self._route(req)
        scope = ""
        if m := ROUTE.match(req.path):
            scope = f',scope="repository:{m["name"]}:pull"'
        if b.require_bearer and req.headers.get("authorization") != f"Bearer {self.token}":
            status, body = 401, b'{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}'
            headers = {"WWW-Authenticate": f'Bearer realm="{self.realm}",service="hostile"{scope}'}
        elif b.status is not None:
            status, body, headers = b.status, b'{"errors":[{"code":"UNKNOWN"}]}', {}
        elif b.redirect is not None:
            status, body, headers = b.redirect_status, b"", {"Location": b.redirect}
        elif status == 200:
            if b.corrupt:
                body = bytes(x ^ 0xFF for x in body[:64]) + body[64:]
            body += b.extra
            if b.digest_header is not None:
                headers["Docker-Content-Digest"] = b.digest_header
            if b.content_type is not None:
                headers["Content-Type"] = b.content_type
            headers["Accept-Ranges"] = "bytes"
            rng = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("range", "").strip())
            if "range" in req.headers and not b.ignore_range:
                if b.range_416 or not rng or int(rng[1]) >= len(body):
                    status, headers = 416, {"Content-Range": f"bytes */{len(body)}"}
                    body = b""
                else:
                    start = int(rng[1])
                    end = min(int(rng[2]) if rng[2] else len(body) - 1, len(body) - 1)
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
                    status, body = 206, body[start : end + 1]
        req.status = status
        if "content-type" not in {k.lower() for k in headers}:
            headers["Content-Type"] = "application/json"
        close = b.cut_after is not None or b.length_delta != 0
        close = close or req.headers.get("connection", "").lower() == "close"
        headers["Content-Length"] = str(len(body) + b.length_delta)
        headers["Docker-Distribution-Api-Version"] = "registry/2.0"
        if close:
            headers["Connection"] = "close"
        reason = {
            200: "OK",
            206: "Partial Content",
            307: "Temporary Redirect",
            401: "Unauthorized",
            404: "Not Found",
            416: "Range Not Satisfiable",
        }.get(status, "Status")
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        conn.sendall(head.encode() + b"\r\n")
        if req.method == "HEAD":
            return not close
        if b.cut_after is not None:
            body = body[: b.cut_after]
        sent = 0
        if b.stall > 0 and status in (200, 206):
            conn.sendall(body[: b.stall_after])
            sent = len(body[: b.stall_after])
            if self._stop.wait(b.stall):
                return False
        view = memoryview(body)
        while sent < len(body) and not self._stop.is_set():
            conn.sendall(view[sent : sent + 65536])
            sent += 65536
        return not close

    def _read_request(self, f: BinaryIO) -> Request | None:
        line = f.readline(65536)
        if not line or not line.strip():
            return None
        method, target, _version = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (h := f.readline(65536)) not in (b"\r\n", b"\n", b""):
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        if int(headers.get("content-length") or 0):
            f.read(int(headers["content-length"]))
        parts = urllib.parse.urlsplit(target)
        req = Request(method, parts.path, urllib.parse.parse_qs(parts.query), headers, self.port)
        with self._lock:
            self.requests.append(req)
        return req

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self._ssl is not None:
                conn.settimeout(10)
                raw, conn = conn, self._ssl.wrap_socket(conn, server_side=True)
                with self._lock:
                    self._conns.discard(raw)
                    self._conns.add(conn)
            conn.settimeout(30)
            if self._ssl is None and conn.recv(1, socket.MSG_PEEK) == b"\x16":
                # A TLS ClientHello on the plain port: answer as Go's server does, so clients
                # that try HTTPS first fall back to HTTP at once. Recorded with method "TLS".
                with self._lock:
                    self.requests.append(Request("TLS", "", {}, {}, self.port, 400))
                conn.sendall(TLS_ON_PLAIN)
                return
            f = conn.makefile("rb")
            while not self._stop.is_set():
                req = self._read_request(f)
                if req is None or not self._answer(conn, req):
                    break
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), name="hostile-conn")
            with self._lock:
                self._conns.add(conn)
                self._threads.append(t)
            t.start()

    def start(self) -> HostileRegistry:
        """Listen on a free port of 127.0.0.1 and accept connections in a thread."""
        if self.tls:
            key, cert = make_self_signed("hostile registry")
            self.cert_pem = cert.public_bytes(serialization.Encoding.PEM)
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "server.pem"
                key_pem = key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                path.write_bytes(key_pem + self.cert_pem)
                self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                self._ssl.load_cert_chain(path)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="hostile-accept")
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Close the listener and every connection, and join every thread."""
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join(10)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(10)
        self._threads.clear()

    def __enter__(self) -> HostileRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
