"""Volume commands: ``dockyard volume create|ls|inspect|rm|prune``, over Docker's routes."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import quote, urlencode

import click
import orjson

from cli import render
from cli.client import Client, filters
from engine.errors import EngineError, InvalidArgument

pass_client = click.make_pass_decorator(Client)


def key_values(items: tuple[str, ...], flag: str) -> dict[str, str]:
    """``k=v`` items as a map (a bare ``k`` maps to ""); InvalidArgument naming *flag*."""
    out: dict[str, str] = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"{flag}: {item!r} has no key")
        out[key] = value
    return out


def _path(name: str) -> str:
    return f"/volumes/{quote(name, safe='')}"


@click.group()
def volume() -> None:
    """Manage volumes.

    Example: dockyard volume create pgdata
    """


@volume.command()
@click.argument("name", required=False, default="")
@click.option("-d", "--driver", default="local", show_default=True, help="Volume driver.")
@click.option("-l", "--label", "labels", multiple=True, help="Label key=value (repeatable).")
@click.option("-o", "--opt", "opts", multiple=True, help="Driver option key=value (repeatable).")
@pass_client
def create(client: Client, name: str, driver: str, labels: tuple[str, ...],
           opts: tuple[str, ...]) -> None:  # fmt: skip
    """Create a volume (a random name if none is given); print its name.

    Example: dockyard volume create --label app=db pgdata
    """
    body = {
        "Name": name,
        "Driver": driver,
        "DriverOpts": key_values(opts, "opt"),
        "Labels": key_values(labels, "label"),
    }
    response = client.request("POST", "/volumes/create", body)
    click.echo(cast(dict[str, Any], orjson.loads(response.read()))["Name"])


@volume.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only print volume names.")
@click.option("-f", "--filter", "filter_", multiple=True, help="name, label, dangling, driver.")
@render.json_option
@pass_client
def ls(client: Client, quiet: bool, filter_: tuple[str, ...], as_json: bool) -> None:
    """List volumes.

    Example: dockyard volume ls -f dangling=true
    """
    listed = cast(dict[str, Any], client.get("/volumes", filters=filters(filter_)))
    rows = listed.get("Volumes") or []
    if as_json:
        return render.json_lines(rows)
    if quiet:
        return click.echo("\n".join(r["Name"] for r in rows) or None, nl=bool(rows))
    render.table(rows, [("DRIVER", "Driver"), ("VOLUME NAME", "Name")])


@volume.command()
@click.argument("names", nargs=-1, required=True)
@pass_client
def inspect(client: Client, names: tuple[str, ...]) -> None:
    """Show volumes in detail, as JSON.

    Example: dockyard volume inspect pgdata
    """
    found = [client.get(_path(name)) for name in names]
    click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())


@volume.command()
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="No error for absent volumes.")
@pass_client
def rm(client: Client, names: tuple[str, ...], force: bool) -> None:
    """Remove volumes no container uses; print each name removed.

    Example: dockyard volume rm pgdata
    """
    failed: list[EngineError] = []
    for name in names:  # like docker: try them all, then fail with the errors
        try:
            client.delete(_path(name), **({"force": "1"} if force else {}))
        except EngineError as exc:
            failed.append(exc)
            continue
        click.echo(name)
    for error in failed[:-1]:
        click.echo(f"Error: {error}", err=True)
    if failed:
        raise failed[-1]


@volume.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Named volumes too, not only anonymous.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--filter", "filter_", multiple=True, help="label=..., label!=...")
@pass_client
def prune(client: Client, all_: bool, force: bool, filter_: tuple[str, ...]) -> None:
    """Remove volumes no container uses (only anonymous ones without --all).

    Example: dockyard volume prune -f
    """
    which = "all local volumes" if all_ else "anonymous local volumes"
    warning = f"WARNING! This will remove {which} not used by at least one container."
    if not force and not _confirm(warning):
        return click.echo("volume prune has been cancelled", err=True)
    query = filters(filter_ + (("all=true",) if all_ else ()))
    response = client.request("POST", "/volumes/prune?" + urlencode({"filters": query}))
    result = cast(dict[str, Any], orjson.loads(response.read()))
    deleted = result.get("VolumesDeleted") or []
    if deleted:
        click.echo("Deleted Volumes:\n" + "\n".join(deleted) + "\n")
    click.echo(f"Total reclaimed space: {render.human_size(result.get('SpaceReclaimed', 0))}")


def _confirm(warning: str) -> bool:
    click.echo(warning)
    try:
        return click.confirm("Are you sure you want to continue?", default=False)
    except click.Abort:  # end of input
        return False
