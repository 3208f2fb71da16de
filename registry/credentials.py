"""Registry credentials: Docker's ``config.json`` and the ``X-Registry-Auth`` header.

Vocabulary:

- *config file*: the user's ``$DOCKER_CONFIG/config.json`` (``~/.docker/config.json`` by
  default), shared with the docker CLI. Credentials live under ``auths``, one entry per
  *server key*; each entry holds ``auth`` = base64("user:password") and optionally
  ``identitytoken``. Every other key of the file (``credsStore``, ``HttpHeaders``, ...) belongs
  to someone else and is written back untouched.
- *server key*: how a registry is named in ``auths``: ``https://index.docker.io/v1/`` for Docker
  Hub (whatever alias the user typed), ``host[:port]`` for every other registry. Older files may
  key an entry with a scheme and a path (``https://host:5000/v2/``); such entries still match.
- *auth header*: the value of ``X-Registry-Auth`` the CLI sends to the daemon with pull and push:
  url-safe base64 of the JSON of an :class:`AuthConfig` (``e30=``, i.e. ``{}``, when anonymous).

Lifecycle: ``login`` checks credentials with the daemon, then saves them with :func:`store`;
``pull`` and ``push`` find the registry's entry with :func:`lookup` and send it encoded by
:func:`encode_header`; the daemon reads it back with :func:`decode_header`; ``logout`` removes
the entry with :func:`erase`. Writes are atomic (temporary file in the same directory, fsync,
rename) and leave the file readable by its owner only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine.errors import InvalidArgument

DOCKER_HUB_KEY: Final = "https://index.docker.io/v1/"
_HUB_HOSTS: Final = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_FIELDS: Final = ("username", "password", "serveraddress", "identitytoken", "registrytoken")


@dataclass(frozen=True)
class AuthConfig:
    """Credentials for one registry, with Docker's field names; "" means absent."""

    username: str = ""
    password: str = ""
    serveraddress: str = ""
    identitytoken: str = ""
    registrytoken: str = ""

    def to_json(self) -> dict[str, str]:
        """Return the fields as Docker's JSON object, leaving out the empty ones."""
        return {name: getattr(self, name) for name in _FIELDS if getattr(self, name)}

    @property
    def anonymous(self) -> bool:
        """Tell whether there is nothing to authenticate with."""
        return not (self.username or self.password or self.identitytoken or self.registrytoken)


def config_path(env: Mapping[str, str] = os.environ) -> Path:
    """Return the config file: ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".docker" / "config.json"


def server_key(registry: str) -> str:
    """Return the ``auths`` key for *registry* (a host, host:port or URL; "" is Docker Hub)."""
    host = registry.strip()
    scheme, sep, rest = host.partition("://")
    if sep and scheme.isalpha():
        host = rest
    host = host.split("/", 1)[0]
    if not host or host.lower() in _HUB_HOSTS:
        return DOCKER_HUB_KEY
    return host


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _user_password(value: str, where: str) -> tuple[str, str]:
    """Decode an ``auth`` field: base64 of "user:password" (the password may hold ':')."""
    try:
        text = _b64decode(value).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(f"{where}: auth is not base64 of user:password") from None
    username, sep, password = text.partition(":")
    if not sep:
        raise InvalidArgument(f"{where}: auth is not base64 of user:password (no ':')")
    return username, password


def _b64decode(value: str) -> bytes:
    """Decode standard or url-safe base64, padded or not; binascii.Error if it is neither."""
    text = "".join(value.split()).translate(str.maketrans("-_", "+/")).rstrip("=")
    if len(text) % 4 == 1:
        raise binascii.Error("truncated base64")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _read(path: Path) -> dict[str, object]:
    """Return the config file's object ({} if there is none); InvalidArgument if malformed."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InvalidArgument(f"{path}: {exc.strerror}") from None
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{path}: expected a JSON object at the top level")
    auths = data.get("auths", {})
    if auths is None:
        data.pop("auths")
    elif not isinstance(auths, dict):
        raise InvalidArgument(f"{path}: auths: expected a JSON object")
    return data


def _auths(data: dict[str, object]) -> dict[str, object]:
    auths = data.setdefault("auths", {})
    assert isinstance(auths, dict)  # checked by _read
    return auths


def _entry(path: Path, key: str, entry: object) -> AuthConfig | None:
    where = f"{path}: auths[{key!r}]"
    if not isinstance(entry, dict):
        raise InvalidArgument(f"{where}: expected a JSON object")
    fields = ("auth", "username", "password", "identitytoken")
    values = {n: "" if entry.get(n) is None else entry[n] for n in fields}
    if not all(isinstance(v, str) for v in values.values()):
        raise InvalidArgument(f"{where}: auth, username, password, identitytoken must be strings")
    username, password = str(values["username"]), str(values["password"])
    if values["auth"]:
        username, password = _user_password(str(values["auth"]), where)
    found = AuthConfig(username, password, key, str(values["identitytoken"]))
    return None if found.anonymous else found


def lookup(path: Path, registry: str) -> AuthConfig | None:
    """Return the credentials stored for *registry* in config file *path*, or None."""
    auths = _auths(_read(path))
    wanted = server_key(registry)
    if wanted in auths:
        return _entry(path, wanted, auths[wanted])
    for key, entry in auths.items():
        if server_key(key) == wanted:
            return _entry(path, key, entry)
    return None


def _write(path: Path, data: dict[str, object]) -> None:
    """Replace *path* atomically with *data* (mode 0600; its directory made 0700)."""
    target = path.resolve() if path.is_symlink() else path
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o600)
            json.dump(data, file, indent="\t")
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def store(
    path: Path, registry: str, username: str, password: str, *, identitytoken: str = ""
) -> None:
    """Save credentials for *registry* in config file *path*, keeping all its other keys."""
    data = _read(path)
    entry = {"auth": _b64(f"{username}:{password}")}
    if identitytoken:
        entry["identitytoken"] = identitytoken
    _auths(data)[server_key(registry)] = entry
    _write(path, data)


def erase(path: Path, registry: str) -> bool:
    """Remove every entry for *registry* from config file *path*; True if one was there."""
    data = _read(path)
    auths = _auths(data)
    wanted = server_key(registry)
    doomed = [key for key in auths if key == wanted or server_key(key) == wanted]
    for key in doomed:
        del auths[key]
    if doomed:
        _write(path, data)
    return bool(doomed)


def encode_header(auth: AuthConfig | None) -> str:
    """Return the ``X-Registry-Auth`` value for *auth* (``e30=`` when there is none)."""
    fields = auth.to_json() if auth is not None else {}
    text = json.dumps(fields, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode()


def decode_header(value: str) -> AuthConfig:
    """Parse an ``X-Registry-Auth`` value; "" is anonymous; InvalidArgument if malformed."""
    if not value.strip():
        return AuthConfig()
    try:
        data = json.loads(_b64decode(value))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument("X-Registry-Auth: not base64-encoded JSON") from None
    if not isinstance(data, dict):
        raise InvalidArgument("X-Registry-Auth: expected a JSON object")
    fields: dict[str, str] = {}
    for name in (*_FIELDS, "auth"):
        field = data.get(name)
        if field is not None and not isinstance(field, str):
            raise InvalidArgument(f"X-Registry-Auth: {name}: expected a string")
        fields[name] = field or ""
    legacy = fields.pop("auth")
    if legacy and not fields["username"] and not fields["password"]:
        fields["username"], fields["password"] = _user_password(legacy, "X-Registry-Auth")
    return AuthConfig(**fields)
