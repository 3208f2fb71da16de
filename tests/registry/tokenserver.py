"""A token server for registry tests: the Docker token protocol, on 127.0.0.1.

Vocabulary: a *scope* is ``repository:NAME:ACTIONS`` as the registry's 401 challenge asks for it;
the server answers ``GET /token?service=S&scope=…&account=A`` (HTTP basic credentials optional)
and the OAuth2 form ``POST /token`` (``grant_type=password`` or ``refresh_token``) with a JWT
signed by an ES256 key made at start. The JWT header carries the self-signed certificate in
``x5c``; the same certificate goes to the registry's ``rootcertbundle`` (``cert_pem``).

Users get every action they ask for; anonymous requests get only ``anonymous_actions``; wrong
credentials get 401. A ``policy`` callable can replace that rule. Every request is recorded in
``requests`` so tests can assert that a bearer flow happened and which scopes were asked.

Lifecycle: ``TokenServer(...)`` → ``start()`` (or ``with``) → ``url`` / ``realm`` → ``stop()``.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

# (user or None for anonymous, resource type, name, requested actions) -> granted actions
Policy = Callable[[str | None, str, str, list[str]], list[str]]
KNOWN_ACTIONS = ("pull", "push", "delete", "*")


def make_self_signed(
    common_name: str, sans: Sequence[str] = ("127.0.0.1", "localhost")
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A P-256 key and a self-signed certificate (a CA too) for *common_name* and *sans*."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt: list[x509.GeneralName] = []
    for san in sans:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            alt.append(x509.DNSName(san))
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return key, builder.sign(key, hashes.SHA256())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_scope(scope: str) -> tuple[str, str, list[str]]:
    """Split ``repository:NAME:pull,push`` into (type, name, actions)."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return kind, name, [a for a in actions.split(",") if a]


@dataclass
class TokenRequest:
    """One request the token server answered."""

    method: str
    service: str
    scopes: list[str]
    account: str
    user: str | None  # authenticated user, None when anonymous or refused
    status: int
    granted: list[dict[str, object]] = field(default_factory=list)


class TokenServer:
    """Issues registry JWTs for known users; see the module docstring for the rules."""

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        service: str = "dockyard-test-registry",
        issuer: str = "dockyard-test-issuer",
        anonymous_actions: Sequence[str] = (),
        expires_in: int = 300,
        policy: Policy | None = None,
    ) -> None:
        self.users = dict(users if users is not None else {"dockyard": "s3cret-pass"})
        self.service, self.issuer, self.expires_in = service, issuer, expires_in
        self.anonymous_actions = list(anonymous_actions)
        self.policy = policy
        self.key, self.cert = make_self_signed(issuer, ())
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.requests: list[TokenRequest] = []
        self.refresh_tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``."""
        assert self._httpd is not None, "token server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def realm(self) -> str:
        """The realm to configure in the registry (``URL/token``)."""
        return self.url + "/token"

    def grant(self, user: str | None, scope: str) -> dict[str, object] | None:
        """The access entry *user* gets for *scope*, or None when nothing is granted."""
        kind, name, wanted = parse_scope(scope)
        if self.policy is not None:
            actions = self.policy(user, kind, name, wanted)
        elif user is None:
            actions = [a for a in wanted if a in self.anonymous_actions]
        else:
            actions = [a for a in wanted if a in KNOWN_ACTIONS]
        return {"type": kind, "name": name, "actions": actions} if actions else None

    def issue(self, subject: str, access: list[dict[str, object]], audience: str = "") -> str:
        """A signed JWT for *subject* with *access* claims."""
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience or self.service,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def handle(
        self, method: str, query: dict[str, list[str]], authorization: str
    ) -> tuple[int, dict[str, object]]:
        """Answer one token request (status, JSON body) and record it."""
        service = query.get("service", [""])[0]
        scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
        account = query.get("account", query.get("username", [""]))[0]
        user, refused, refresh = None, False, False
        grant_type = query.get("grant_type", [""])[0]
        if grant_type == "password":
            username, password = account, query.get("password", [""])[0]
            refused = self.users.get(username) != password or not username
            user = None if refused else username
            refresh = query.get("access_type", [""])[0] == "offline"
        elif grant_type == "refresh_token":
            user = self.refresh_tokens.get(query.get("refresh_token", [""])[0])
            refused = user is None
        elif authorization.lower().startswith("basic "):
            raw = base64.b64decode(authorization[6:].strip()).decode(errors="replace")
            username, _, password = raw.partition(":")
            refused = self.users.get(username) != password
            user = None if refused else username
            refresh = query.get("offline_token", [""])[0] == "true"
        record = TokenRequest(method, service, scopes, account, user, 401 if refused else 200)
        with self._lock:
            self.requests.append(record)
        if refused:
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid credentials"}]}
        record.granted = [g for g in (self.grant(user, s) for s in scopes) if g is not None]
        token = self.issue(user or "", record.granted, service)
        body: dict[str, object] = {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": datetime.datetime.now(datetime.UTC).isoformat(),
        }
        if refresh and user is not None:
            rt = secrets.token_hex(16)
            with self._lock:
                self.refresh_tokens[rt] = user
            body["refresh_token"] = rt
        return 200, body

    def scopes_asked(self) -> list[str]:
        """Every scope asked so far, in order."""
        with self._lock:
            return [s for r in self.requests for s in r.scopes]

    def start(self) -> TokenServer:
        """Listen on a free port of 127.0.0.1 and serve in a thread."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def _answer(self, method: str, query: dict[str, list[str]]) -> None:
                body: dict[str, object]
                if urllib.parse.urlsplit(self.path).path != "/token":
                    status, body = 404, {"errors": [{"code": "NOT_FOUND", "message": self.path}]}
                else:
                    status, body = server.handle(
                        method, query, self.headers.get("Authorization", "")
                    )
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="token"')
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer("GET", urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                self._answer("POST", form)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="token-server"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, join the threads and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self._httpd = self._thread = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running_token_server(**kwargs: object) -> Iterator[TokenServer]:
    """A started TokenServer (keyword arguments as for the class), stopped on exit."""
    server = TokenServer(**kwargs)  # type: ignore[arg-type]
    with server:
        yield server
