"""``dockyard version`` and ``dockyard info``."""

from __future__ import annotations

from typing import Any, cast

import click
import orjson

from cli import render
from cli.client import Client
from engine.version import VERSION

pass_client = click.make_pass_decorator(Client)


@click.command()
@render.json_option
@pass_client
def version(client: Client, as_json: bool) -> None:
    """Show the client's and the daemon's versions.

    Example: dockyard version
    """
    server = cast(dict[str, Any], client.get("/version"))
    if as_json:
        click.echo(orjson.dumps({"Client": {"Version": VERSION}, "Server": server}).decode())
        return
    click.echo(f"Client:\n  Version: {VERSION}\nServer:")
    render.keyvalues({k: v for k, v in server.items() if k not in ("Components", "Platform")}, 2)


@click.command()
@render.json_option
@pass_client
def info(client: Client, as_json: bool) -> None:
    """Show what the daemon runs with: host, data root, jobs, plugins, warnings.

    Example: dockyard info
    """
    data = cast(dict[str, Any], client.get("/info"))
    if as_json:
        click.echo(orjson.dumps(data).decode())
        return
    warnings = data.pop("Warnings", [])
    render.keyvalues(data)
    for warning in warnings:
        click.echo(f"WARNING: {warning}", err=True)
