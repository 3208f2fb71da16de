"""``dockyard port CONTAINER [PRIVATE_PORT[/PROTO]]``: a container's published ports.

A private port is the container's side (``80/tcp``, the proto ``tcp`` when left out); its
frontends are the host addresses published for it, from ``NetworkSettings.Ports`` of the
container's inspect (``{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "81/tcp": null}``,
null for a port exposed but not published). As the docker CLI 28 does, all ports print as
``80/tcp -> 0.0.0.0:8080`` and one port's frontends as ``0.0.0.0:8080`` (IPv6 hosts in
brackets), lines in natural order; asking for a port with no frontend fails with exit status 1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, cast
from urllib.parse import quote

import click

from cli.client import Client

pass_client = click.make_pass_decorator(Client)
_CHUNKS: Final = re.compile(r"\d+|\D")


def join_host_port(host: str, port: str) -> str:
    """``host:port``, with an IPv6 host in brackets (Go's ``net.JoinHostPort``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def natural_key(text: str) -> list[tuple[int, ...]]:
    """A sort key ordering digit runs by value, before other characters (``8080`` after ``80``,
    ``9/tcp`` before ``10/tcp``), as docker's ``sortorder.NaturalLess``."""
    key: list[tuple[int, ...]] = []
    for chunk in _CHUNKS.findall(text):
        if chunk.isdigit():
            key.append((0, int(chunk), len(chunk) - len(chunk.lstrip("0"))))
        else:
            key.append((1, ord(chunk)))
    return key


def _frontend(binding: Mapping[str, Any]) -> str:
    return join_host_port(str(binding.get("HostIp") or ""), str(binding.get("HostPort") or ""))


def _check_port(number: str) -> None:
    reason = "" if number.isascii() and number.isdigit() else "invalid syntax"
    if not reason and int(number) > 0xFFFF:
        reason = "value out of range"
    if reason:
        raise click.ClickException(
            f'invalid port ({number}): strconv.ParseUint: parsing "{number}": {reason}'
        )


@click.command()
@click.argument("container")
@click.argument("private_port", required=False, default="")
@pass_client
def port(client: Client, container: str, private_port: str) -> None:
    """List a container's published ports, or the host addresses of one of them.

    Example: dockyard port web 80/tcp
    """
    info = cast(dict[str, Any], client.get(f"/containers/{quote(container, safe='')}/json"))
    ports: Mapping[str, Any] = (info.get("NetworkSettings") or {}).get("Ports") or {}
    if private_port:
        number, _, proto = private_port.partition("/")
        _check_port(number)
        frontends = ports.get(f"{number}/{proto or 'tcp'}")
        if frontends is None:
            raise click.ClickException(f"No public port '{private_port}' published for {container}")
        lines = [_frontend(f) for f in frontends]
    else:
        lines = [f"{key} -> {_frontend(f)}" for key, found in ports.items() for f in found or []]
    if lines:
        click.echo("\n".join(sorted(lines, key=natural_key)))


COMMANDS: Final = (port,)
