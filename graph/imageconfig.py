"""Image configs: new ones for imported images, and Dockerfile-style ``--change`` instructions.

``apply_changes`` accepts the instructions ``docker import --change`` and ``docker commit
--change`` accept: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME,
WORKDIR. Values in JSON array form are taken as arrays; CMD and ENTRYPOINT in shell form become
``["/bin/sh", "-c", text]``, as Docker does.
"""

from __future__ import annotations

import json
import platform
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Final

from engine.errors import InvalidArgument

DEFAULT_PATH: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ARCH: Final = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}
_PORT: Final = re.compile(r"[0-9]{1,5}(-[0-9]{1,5})?(/(tcp|udp|sctp))?")
JSON = dict[str, object]
Handler = Callable[[JSON, str], None]


def host_architecture() -> str:
    """The OCI architecture name of this machine (amd64, arm64, …)."""
    machine = platform.machine()
    return _ARCH.get(machine, machine)


def now() -> str:
    """The current time in Docker's RFC 3339 form with nanoseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def new_config(diff_ids: Iterable[str], created_by: str, comment: str = "") -> JSON:
    """A config for an image of *diff_ids* made by *created_by* (e.g. an import)."""
    created = now()
    history: JSON = {"created": created, "created_by": created_by}
    if comment:
        history["comment"] = comment
    return {
        "architecture": host_architecture(),
        "os": "linux",
        "created": created,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [history],
    }


def encode(config: Mapping[str, object]) -> bytes:
    """The canonical bytes of a config (compact JSON, keys in order given)."""
    return json.dumps(config, separators=(",", ":"), ensure_ascii=False).encode()


def apply_changes(config: JSON, changes: Iterable[str]) -> JSON:
    """Return *config*'s ``config`` section with each Dockerfile-style change applied."""
    run: JSON = dict(config)  # the container config ("config" key of an image config)
    for change in changes:
        word, _, rest = change.strip().partition(" ")
        instruction, value = word.upper(), rest.strip()
        if instruction not in _HANDLERS:
            raise InvalidArgument(
                f"changes: {word or change!r} is not a supported instruction "
                f"(supported: {', '.join(sorted(_HANDLERS))})"
            )
        if not value:
            raise InvalidArgument(f"changes: {instruction} needs a value")
        _HANDLERS[instruction](run, value)
    return run


def _json_or_shell(value: str) -> list[str]:
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(p, str) for p in parsed):
            return parsed
    return ["/bin/sh", "-c", value]


def _pairs(value: str, what: str) -> list[tuple[str, str]]:
    words = shlex.split(value)
    if len(words) >= 2 and "=" not in words[0]:  # legacy form: ENV key value with spaces
        return [(words[0], value.split(None, 1)[1])]
    pairs = []
    for word in words:
        key, sep, val = word.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"changes: {what} expects key=value, got {word!r}")
        pairs.append((key, val))
    return pairs


def _cmd(run: JSON, value: str) -> None:
    run["Cmd"] = _json_or_shell(value)


def _entrypoint(run: JSON, value: str) -> None:
    run["Entrypoint"] = _json_or_shell(value)


def _env(run: JSON, value: str) -> None:
    env = _strings(run.get("Env"))
    for key, val in _pairs(value, "ENV"):
        env = [e for e in env if e.partition("=")[0] != key] + [f"{key}={val}"]
    run["Env"] = env


def _label(run: JSON, value: str) -> None:
    labels = _mapping(run.get("Labels"))
    labels.update(_pairs(value, "LABEL"))
    run["Labels"] = labels


def _expose(run: JSON, value: str) -> None:
    ports = _mapping(run.get("ExposedPorts"))
    for port in value.split():
        if not _PORT.fullmatch(port):
            raise InvalidArgument(f"changes: EXPOSE: invalid port {port!r}")
        ports[port if "/" in port else f"{port}/tcp"] = {}
    run["ExposedPorts"] = ports


def _volume(run: JSON, value: str) -> None:
    paths = _json_or_shell(value) if value.startswith("[") else value.split()
    if paths[:2] == ["/bin/sh", "-c"]:
        raise InvalidArgument("changes: VOLUME expects a JSON array or paths")
    volumes = _mapping(run.get("Volumes"))
    volumes.update({p: {} for p in paths})
    run["Volumes"] = volumes


def _onbuild(run: JSON, value: str) -> None:
    run["OnBuild"] = [*_strings(run.get("OnBuild")), value]


def _setter(key: str) -> Handler:
    def set_value(run: JSON, value: str) -> None:
        run[key] = value

    return set_value


def _mapping(value: object) -> dict[str, object]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


_HANDLERS: Final[dict[str, Handler]] = {
    "CMD": _cmd,
    "ENTRYPOINT": _entrypoint,
    "ENV": _env,
    "EXPOSE": _expose,
    "LABEL": _label,
    "ONBUILD": _onbuild,
    "STOPSIGNAL": _setter("StopSignal"),
    "USER": _setter("User"),
    "VOLUME": _volume,
    "WORKDIR": _setter("WorkingDir"),
}
