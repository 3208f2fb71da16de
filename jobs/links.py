"""Legacy links (``docker run --link name:alias``): the parts that need no I/O.

Vocabulary:

- *parent*: the container started with ``--link child:alias``; it gets the environment
  variables, ``/etc/hosts`` lines and (with ``icc`` off) firewall rules that reach the child.
- *child*: the container the link points at; it must be running when the parent starts.
- *alias*: the name the parent knows the child by; defaults to the child's name.
- *link*: the name-graph edge ``/<parent name>/<alias>`` → child id (see ``graph/names.py``).
  The graph is the source of truth: ``HostConfig.Links`` is rebuilt from it for inspect.
- *port key*: Docker's spelling of an exposed port, ``"80/tcp"`` or ``"53/udp"`` (no
  protocol means tcp), as in ``Config.ExposedPorts``.

Lifecycle: ``parse_link`` at create (each ``HostConfig.Links`` entry becomes an edge); at the
parent's start, for each child edge: ``link_env`` into the parent's environment,
``hosts_entries`` into its ``/etc/hosts`` and ``link_rules`` handed to the network driver's
``link``; ``inspect_links`` when the parent is inspected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

from drivers.network.base import LinkRule, Proto
from engine.errors import InvalidArgument
from jobs.containernames import NAME_PATTERN

# Docker's name rule: an alias becomes a path element of the name graph.
_ALIAS: Final = re.compile(NAME_PATTERN)
# The link target may also be an id or an id prefix, resolved later, so one character will do.
_TARGET: Final = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_PROTOS: Final[dict[str, Proto]] = {"tcp": "tcp", "udp": "udp", "sctp": "sctp"}
# Child variables that image builds set and that mean nothing to the parent (as in Docker).
_SKIPPED_ENV: Final = frozenset({"HOME", "PATH"})
# Docker names a run of contiguous ports only when it has at least this many.
_MIN_RANGE: Final = 3
_NOT_ALNUM: Final = re.compile(r"[^A-Z0-9]")

Port = tuple[int, Proto]


def parse_link(spec: str, field: str) -> tuple[str, str]:
    """Return (child name, alias) from ``name``, ``name:alias`` or inspect's ``/name:/p/alias``;
    raise InvalidArgument naming *field* for anything else."""
    parts = spec.split(":")
    name = parts[0].removeprefix("/")
    # Inspect shows the alias as the link's path ("/web/db"): its last element is the alias.
    alias = parts[-1].rsplit("/", 1)[-1] if len(parts) == 2 else name
    problem = _link_problem(parts, name, alias)
    if problem:
        raise InvalidArgument(f'{field}: invalid link "{spec}": {problem}')
    return name, alias


def _link_problem(parts: Sequence[str], name: str, alias: str) -> str:
    """What is wrong with a split link spec ("" when nothing)."""
    if len(parts) > 2:
        return "want name:alias"
    if _TARGET.fullmatch(name) is None:
        return f"bad container name {name!r}"
    path = parts[1] if len(parts) == 2 and parts[1].startswith("/") else ""
    if path and any(_ALIAS.fullmatch(e) is None for e in path.removeprefix("/").split("/")):
        return f"bad link path {path!r}"
    if _ALIAS.fullmatch(alias) is None:
        return f"bad alias {alias!r}: want [a-zA-Z0-9][a-zA-Z0-9_.-], two characters at least"
    return ""


def parse_port(key: str) -> Port:
    """Return (port, protocol) of a port key such as ``"53/udp"``; InvalidArgument if malformed."""
    number, _, proto = key.partition("/")
    proto = proto.lower() or "tcp"
    if (
        not (number.isascii() and number.isdigit())
        or not 1 <= int(number) <= 65535
        or proto not in _PROTOS
    ):
        raise InvalidArgument(f'Config.ExposedPorts: invalid port "{key}": want <1-65535>/<proto>')
    return int(number), _PROTOS[proto]


def _sorted_ports(exposed: Iterable[str]) -> list[Port]:
    # Docker's order: by number, tcp before the other protocols of the same number.
    ports = {parse_port(key) for key in exposed}
    return sorted(ports, key=lambda p: (p[0], p[1] != "tcp", p[1]))


def _ranges(ports: Sequence[Port]) -> list[tuple[Port, int]]:
    """Runs of at least _MIN_RANGE contiguous ports of one protocol: (first port, last number)."""
    runs: list[tuple[Port, int]] = []
    for proto in sorted({p for _, p in ports}):
        numbers = sorted(n for n, p in ports if p == proto)
        start = 0
        for i in range(1, len(numbers) + 1):
            if i == len(numbers) or numbers[i] != numbers[i - 1] + 1:
                if i - start >= _MIN_RANGE:
                    runs.append(((numbers[start], proto), numbers[i - 1]))
                start = i
    return sorted(runs, key=lambda run: (run[0][0], run[0][1] != "tcp", run[0][1]))


def env_prefix(alias: str) -> str:
    """The variable prefix for *alias*: upper case, every non-alphanumeric replaced by ``_``."""
    return _NOT_ALNUM.sub("_", alias.upper())


def link_env(
    alias: str,
    parent_name: str,
    child_ip: str,
    exposed: Iterable[str],
    child_env: Sequence[str],
) -> list[str]:
    """The ``KEY=value`` variables a link puts into the parent, in Docker's order; InvalidArgument
    for a malformed port key in *exposed*."""
    a = env_prefix(alias)
    ports = _sorted_ports(exposed)
    env: list[str] = []
    if ports:
        number, proto = ports[0]
        env.append(f"{a}_PORT={proto}://{child_ip}:{number}")
    for (start, proto), end in _ranges(ports):
        key = f"{a}_PORT_{start}_{proto.upper()}"
        # Docker also sets <key>_ADDR and <key>_PROTO here; the per-port loop below sets the
        # very same pairs for the first port, so they are written once.
        env += [
            f"{key}_START={proto}://{child_ip}:{start}",
            f"{key}_PORT_START={start}",
            f"{key}_END={proto}://{child_ip}:{end}",
            f"{key}_PORT_END={end}",
        ]
    for number, proto in ports:
        key = f"{a}_PORT_{number}_{proto.upper()}"
        env += [
            f"{key}={proto}://{child_ip}:{number}",
            f"{key}_ADDR={child_ip}",
            f"{key}_PORT={number}",
            f"{key}_PROTO={proto}",
        ]
    env.append(f"{a}_NAME=/{parent_name.removeprefix('/')}/{alias}")
    for entry in child_env:
        name, sep, value = entry.partition("=")
        if sep and name and name not in _SKIPPED_ENV:
            env.append(f"{a}_ENV_{name}={value}")
    return env


def hosts_entries(links: Iterable[tuple[str, str, str, str]]) -> list[tuple[str, str]]:
    """``/etc/hosts`` lines (ip, names) for (alias, child name, child id, child ip) links, by
    alias; names are ``"<alias> <child id[:12]> <child name>"`` without repeats, and a child
    without an address (no network of its own) gets no line."""
    entries: list[tuple[str, str, str]] = []
    for alias, child_name, child_id, child_ip in links:
        if not child_ip:
            continue
        names = dict.fromkeys([alias, child_id[:12], child_name.removeprefix("/")])
        names.pop("", None)
        entries.append((alias, child_ip, " ".join(names)))
    return [(ip, names) for _, ip, names in sorted(entries)]


def inspect_links(edges: Iterable[tuple[str, str]]) -> list[str]:
    """``HostConfig.Links`` as inspect shows it (``"/db:/web/db"``) from (child name, link path)
    pairs, ordered by link path."""
    return [f"/{name.removeprefix('/')}:{path}" for name, path in sorted(edges, key=_by_path)]


def _by_path(edge: tuple[str, str]) -> tuple[str, str]:
    return edge[1], edge[0]


def link_rules(parent_ip: str, child_ip: str, exposed: Iterable[str]) -> list[LinkRule]:
    """One LinkRule (parent → child) per exposed port of the child, in port order;
    InvalidArgument for a malformed port key."""
    return [
        LinkRule(parent_ip=parent_ip, child_ip=child_ip, port=number, proto=proto)
        for number, proto in _sorted_ports(exposed)
    ]
