"""Network commands: ``dockyard network ls|inspect``, over Docker's ``/networks`` routes."""

from __future__ import annotations

from typing import Any, Final, cast
from urllib.parse import quote

import click
import orjson

from cli import render
from cli.client import Client, filters

pass_client = click.make_pass_decorator(Client)


@click.group()
def network() -> None:
    """Manage networks (none and host so far).

    Example: dockyard network ls
    """


@network.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only print network ids.")
@click.option(
    "-f", "--filter", "filter_", multiple=True, help="name, id, driver, type, scope, label."
)
@click.option("--no-trunc", is_flag=True, help="Do not truncate ids.")
@render.json_option
@pass_client
def ls(client: Client, quiet: bool, filter_: tuple[str, ...], no_trunc: bool,
       as_json: bool) -> None:  # fmt: skip
    """List networks.

    Example: dockyard network ls --filter driver=host
    """
    rows = cast(list[dict[str, Any]], client.get("/networks", filters=filters(filter_)))
    rows.sort(key=lambda r: r["Name"])
    if as_json:
        return render.json_lines(rows)
    shown = [{**r, "Id": r["Id"] if no_trunc else r["Id"][:12]} for r in rows]
    if quiet:
        return click.echo("\n".join(r["Id"] for r in shown) or None, nl=bool(shown))
    render.table(shown, [("NETWORK ID", "Id"), ("NAME", "Name"), ("DRIVER", "Driver"),
                         ("SCOPE", "Scope")])  # fmt: skip


@network.command()
@click.argument("names", nargs=-1, required=True)
@pass_client
def inspect(client: Client, names: tuple[str, ...]) -> None:
    """Show networks in detail, with the containers attached, as JSON.

    Example: dockyard network inspect host
    """
    found = [client.get(f"/networks/{quote(name, safe='')}") for name in names]
    click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())


COMMANDS: Final = (network,)
