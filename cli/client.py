"""A small blocking HTTP client for the daemon's API over a unix socket or TCP (with TLS).

It uses only the standard library so that a CLI call starts fast. Errors come back as the
engine's error classes, rebuilt from the ``Dockyard-Error`` header (or the HTTP status when the
header is missing), so the CLI maps them to exit codes without reading message text.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO, Final
from urllib.parse import quote, urlencode, urlsplit

import orjson

from engine.errors import (
    AlreadyExists,
    EngineError,
    InvalidArgument,
    NotFound,
    NotSupported,
    Unavailable,
    from_kind,
)

DEFAULT_HOST: Final = "unix:///run/dockyard.sock"
_BY_STATUS: Final[dict[int, type[EngineError]]] = {
    400: InvalidArgument,
    404: NotFound,
    409: AlreadyExists,
    501: NotSupported,
    503: Unavailable,
}


class DaemonUnreachable(Unavailable):
    """No daemon answered at the address the client tried."""


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Client-side TLS: the CA to trust, and a client certificate to present."""

    cacert: str = ""
    cert: str = ""
    key: str = ""
    verify: bool = True


BLOCK = 1 << 20  # bytes per read and send when streaming a body


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout, blocksize=BLOCK)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """The daemon's API, one method per kind of call."""

    def __init__(self, host: str = DEFAULT_HOST, tls: TLSConfig | None = None) -> None:
        self.host, self.tls = host, tls

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self.host.startswith("unix://"):
            return _UnixConnection(self.host[len("unix://") :], timeout)
        parts = urlsplit(self.host)
        if parts.scheme != "tcp" or not parts.hostname:
            raise InvalidArgument(f"host: {self.host}: expected unix:///path or tcp://host:port")
        if self.tls is None:
            port = parts.port or 2375
            return http.client.HTTPConnection(
                parts.hostname, port, timeout=timeout, blocksize=BLOCK
            )
        context = ssl.create_default_context(cafile=self.tls.cacert or None)
        if not self.tls.verify:
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if self.tls.cert:
            context.load_cert_chain(self.tls.cert, self.tls.key or None)
        port = parts.port or 2376
        return http.client.HTTPSConnection(
            parts.hostname, port, timeout=timeout, context=context, blocksize=BLOCK
        )

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        timeout: float | None = None,
        *,
        data: BinaryIO | None = None,
        content_type: str = "application/x-tar",
        headers: Mapping[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        """Send one request (a JSON *body*, or a stream of raw *data*, plus extra *headers*);
        return the response, or raise the error the daemon sent."""
        conn = self._connection(timeout)
        headers = {"Host": "localhost", **(headers or {})}
        payload: bytes | BinaryIO | None = None
        if data is not None:
            payload = data
            headers["Content-Type"] = content_type
            headers["Transfer-Encoding"] = "chunked"
        elif body is not None:
            payload = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        try:
            conn.request(
                method, path, body=payload, headers=headers, encode_chunked=data is not None
            )
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            if isinstance(exc, BrokenPipeError | ConnectionResetError) and data is not None:
                raise Unavailable(f"the daemon at {self.host} closed the connection") from None
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise DaemonUnreachable(
                f"cannot connect to the dockyard daemon at {self.host}: {reason}. "
                "Is it running? Start it with `dockyard daemon`."
            ) from None
        if response.status >= 400:
            raise _error(response)
        return response

    def get(self, path: str, **query: object) -> object:
        """GET *path* and return its decoded JSON body."""
        suffix = f"?{urlencode(query)}" if query else ""
        response = self.request("GET", path + suffix)
        return orjson.loads(response.read())

    def delete(self, path: str, **query: object) -> object:
        """DELETE *path*; return its decoded JSON body (None if it has none)."""
        suffix = f"?{urlencode(query)}" if query else ""
        raw = self.request("DELETE", path + suffix).read()
        return orjson.loads(raw) if raw else None

    def messages(
        self,
        method: str,
        path: str,
        data: BinaryIO | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[dict[str, object]]:
        """Yield the JSON messages of a Docker-style stream; raise an in-band error."""
        response = self.request(method, path, data=data, headers=headers)
        for line in lines(response):
            if not line.strip():
                continue
            message = orjson.loads(line)
            if "error" in message:
                raise EngineError(str(message["error"]))
            yield message

    def run_job(
        self, name: str, args: list[str], params: Mapping[str, object]
    ) -> Iterator[dict[str, object]]:
        """Run job *name*; yield its records, the last one being its status record."""
        response = self.request(
            "POST", f"/jobs/{quote(name, safe='')}", {"args": args, "params": dict(params)}
        )
        for line in lines(response):
            if line.strip():
                yield orjson.loads(line)


def lines(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """The lines of a streamed body; Unavailable if the daemon went away before its end.

    (Iterating an ``HTTPResponse`` treats a chunked body cut short as a normal end, which would
    make a pull whose daemon was killed look like a success.)
    """
    pending = b""
    while True:
        try:
            data = response.read1(1 << 16)
        except (http.client.IncompleteRead, ConnectionError) as exc:
            raise Unavailable(
                f"the daemon closed the stream before its end (unexpected EOF): {exc}"
            ) from None
        if not data:
            break
        pending += data
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line + b"\n"
    if pending:
        yield pending


def filters(items: tuple[str, ...]) -> str:
    """``-f key=value`` items as Docker's filters JSON (``{"key": {"value": true}}``)."""
    wanted: dict[str, dict[str, bool]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgument(f"filter: bad format of filter (expected name=value): {item}")
        wanted.setdefault(key, {})[value] = True
    return orjson.dumps(wanted).decode()


def _error(response: http.client.HTTPResponse) -> EngineError:
    raw = response.read()
    try:
        message = str(orjson.loads(raw)["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message = raw.decode(errors="replace").strip() or response.reason
    kind = response.getheader("Dockyard-Error")
    if kind:
        return from_kind(kind, message)
    return _BY_STATUS.get(response.status, EngineError)(message)
