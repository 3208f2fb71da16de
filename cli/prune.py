"""Disk usage and prune commands: ``dockyard system df``, ``dockyard container prune`` and
``dockyard image prune``, over Docker's routes (``/system/df``, ``/containers/prune``,
``/images/prune``).

The figures are the daemon's; what is "active" and "reclaimable" is worked out here from them,
as the docker CLI does: an image is active when a container uses it, a container while it runs,
a volume while a container uses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, cast
from urllib.parse import urlencode

import click
import orjson

from cli import render
from cli.client import Client, filters
from cli.images import split_reference

pass_client = click.make_pass_decorator(Client)
ACTIVE_STATES: Final = frozenset({"running", "paused", "restarting"})
Rows = Sequence[Mapping[str, Any]]


def _reclaimable(reclaimable: int, total: int) -> str:
    text = render.human_size(reclaimable)
    return f"{text} ({reclaimable * 100 // total}%)" if total > 0 else text


def usage_rows(usage: Mapping[str, Any]) -> list[dict[str, str]]:
    """The rows of ``system df``: per type, total, active, size and reclaimable."""
    images: Rows = usage.get("Images") or []
    containers: Rows = usage.get("Containers") or []
    volumes: Rows = usage.get("Volumes") or []
    layers = int(usage.get("LayersSize") or 0)
    image_used = sum(i["Size"] - i["SharedSize"] for i in images
                     if i.get("Containers", 0) > 0 and i["SharedSize"] >= 0)  # fmt: skip
    rw = sum(int(c.get("SizeRw") or 0) for c in containers)
    idle = sum(int(c.get("SizeRw") or 0) for c in containers if c["State"] not in ACTIVE_STATES)
    data = [v.get("UsageData") or {} for v in volumes]
    held = sum(max(int(d.get("Size", -1)), 0) for d in data)
    unused = sum(max(int(d.get("Size", -1)), 0) for d in data if d.get("RefCount", 0) == 0)
    cache: Rows = usage.get("BuildCache") or []
    cached = sum(int(b.get("Size") or 0) for b in cache)
    rows = [
        ("Images", len(images), sum(1 for i in images if i.get("Containers", 0) > 0), layers,
         _reclaimable(layers - image_used, layers)),
        ("Containers", len(containers),
         sum(1 for c in containers if c["State"] in ACTIVE_STATES), rw, _reclaimable(idle, rw)),
        ("Local Volumes", len(volumes), sum(1 for d in data if d.get("RefCount", 0) > 0), held,
         _reclaimable(unused, held)),
        ("Build Cache", len(cache), sum(1 for b in cache if b.get("InUse")), cached,
         render.human_size(cached)),
    ]  # fmt: skip
    return [
        {"type": t, "total": str(n), "active": str(a), "size": render.human_size(s), "free": r}
        for t, n, a, s, r in rows
    ]


def _verbose(usage: Mapping[str, Any]) -> None:
    images = [
        {"repo": repo, "tag": tag, "id": i["Id"].removeprefix("sha256:")[:12],
         "created": render.human_ago(i["Created"]), "size": render.human_size(i["Size"]),
         "shared": render.human_size(i["SharedSize"]),
         "unique": render.human_size(i["Size"] - i["SharedSize"]), "containers": i["Containers"]}
        for i in usage.get("Images") or []
        for repo, tag in map(split_reference, i["RepoTags"] or ["<none>:<none>"])
    ]  # fmt: skip
    click.echo("Images space usage:\n")
    render.table(images, [("REPOSITORY", "repo"), ("TAG", "tag"), ("IMAGE ID", "id"),
                          ("CREATED", "created"), ("SIZE", "size"), ("SHARED SIZE", "shared"),
                          ("UNIQUE SIZE", "unique"), ("CONTAINERS", "containers")])  # fmt: skip
    containers = [
        {"id": c["Id"][:12], "image": c["Image"], "command": f'"{c["Command"]}"',
         "volumes": sum(1 for m in c.get("Mounts") or [] if m.get("Type") == "volume"),
         "size": render.human_size(c.get("SizeRw") or 0),
         "created": render.human_ago(c["Created"]), "status": c["Status"],
         "names": ",".join(n.lstrip("/") for n in c["Names"])}
        for c in usage.get("Containers") or []
    ]  # fmt: skip
    click.echo("\nContainers space usage:\n")
    render.table(containers, [("CONTAINER ID", "id"), ("IMAGE", "image"),
                              ("COMMAND", "command"), ("LOCAL VOLUMES", "volumes"),
                              ("SIZE", "size"), ("CREATED", "created"), ("STATUS", "status"),
                              ("NAMES", "names")])  # fmt: skip
    volumes = [
        {"name": v["Name"], "links": (v.get("UsageData") or {}).get("RefCount", 0),
         "size": render.human_size(max((v.get("UsageData") or {}).get("Size", 0), 0))}
        for v in usage.get("Volumes") or []
    ]  # fmt: skip
    click.echo("\nLocal Volumes space usage:\n")
    render.table(volumes, [("VOLUME NAME", "name"), ("LINKS", "links"), ("SIZE", "size")])
    cached = sum(int(b.get("Size") or 0) for b in usage.get("BuildCache") or [])
    click.echo(f"\nBuild cache usage: {render.human_size(cached)}")


@click.group()
def system() -> None:
    """Manage the daemon's disk: usage.

    Example: dockyard system df -v
    """


@system.command()
@click.option("-v", "--verbose", is_flag=True, help="Show each image, container and volume.")
@render.json_option
@pass_client
def df(client: Client, verbose: bool, as_json: bool) -> None:
    """Show the disk space images, containers and volumes take.

    Example: dockyard system df
    """
    usage = cast(dict[str, Any], client.get("/system/df"))
    if as_json:
        return click.echo(orjson.dumps(usage).decode())
    if verbose:
        return _verbose(usage)
    columns = [("TYPE", "type"), ("TOTAL", "total"), ("ACTIVE", "active"), ("SIZE", "size"),
               ("RECLAIMABLE", "free")]  # fmt: skip
    render.table(usage_rows(usage), columns)


def _confirm(warning: str) -> bool:
    click.echo(warning)
    try:
        return click.confirm("Are you sure you want to continue?", default=False)
    except click.Abort:  # end of input
        return False


def _prune(client: Client, path: str, given: tuple[str, ...]) -> dict[str, Any]:
    response = client.request("POST", f"{path}?" + urlencode({"filters": filters(given)}))
    return cast(dict[str, Any], orjson.loads(response.read()))


@click.group()
def container() -> None:
    """Manage containers.

    Example: dockyard container prune -f
    """


@container.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--filter", "filter_", multiple=True, help="until=<time>, label=..., label!=...")
@pass_client
def container_prune(client: Client, force: bool, filter_: tuple[str, ...]) -> None:
    """Remove all stopped containers.

    Example: dockyard container prune -f --filter until=24h
    """
    if not force and not _confirm("WARNING! This will remove all stopped containers."):
        return click.echo("container prune has been cancelled", err=True)
    result = _prune(client, "/containers/prune", filter_)
    deleted = result.get("ContainersDeleted") or []
    if deleted:
        click.echo("Deleted Containers:\n" + "\n".join(deleted) + "\n")
    click.echo(f"Total reclaimed space: {render.human_size(result.get('SpaceReclaimed', 0))}")


@click.group()
def image() -> None:
    """Manage images.

    Example: dockyard image prune -a -f
    """


@image.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="All unused images, not only dangling.")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--filter", "filter_", multiple=True, help="until=<time>, label=..., label!=...")
@pass_client
def image_prune(client: Client, all_: bool, force: bool, filter_: tuple[str, ...]) -> None:
    """Remove dangling images (with -a: every image no container uses).

    Example: dockyard image prune -f
    """
    which = ("all images without at least one container associated to them" if all_
             else "all dangling images")  # fmt: skip
    if not force and not _confirm(f"WARNING! This will remove {which}."):
        return click.echo("image prune has been cancelled", err=True)
    result = _prune(client, "/images/prune", (*filter_, f"dangling={str(not all_).lower()}"))
    deleted = result.get("ImagesDeleted") or []
    if deleted:
        lines = [f"untagged: {d['Untagged']}" if d.get("Untagged") else f"deleted: {d['Deleted']}"
                 for d in deleted]  # fmt: skip
        click.echo("Deleted Images:\n" + "\n".join(lines) + "\n")
    click.echo(f"Total reclaimed space: {render.human_size(result.get('SpaceReclaimed', 0))}")


COMMANDS: Final = (system, container, image)
