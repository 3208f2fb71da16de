"""Image commands: import, images, inspect, history, tag, rmi, save, load."""

from __future__ import annotations

import http.client
import os
import sys
from typing import Any, BinaryIO, cast
from urllib.parse import quote, urlencode

import click
import orjson

from cli import render
from cli.client import Client
from cli.client import filters as encode_filters
from engine.errors import InvalidArgument, NotFound

pass_client = click.make_pass_decorator(Client)


def split_reference(text: str) -> tuple[str, str]:
    """``repo[:tag]`` → (repo, tag); a colon before the last slash is a registry port."""
    repo, sep, tag = text.rpartition(":")
    if not sep or "/" in tag:
        return text, ""
    return repo, tag


def _path(name: str, suffix: str = "") -> str:
    return f"/images/{quote(name, safe='/:@')}{suffix}"


def _open_input(name: str) -> BinaryIO:
    if name == "-":
        return sys.stdin.buffer
    try:
        return open(name, "rb")
    except OSError as exc:
        raise InvalidArgument(f"{name}: {exc.strerror}") from None


@click.command("import")
@click.argument("source")
@click.argument("reference", required=False)
@click.option("-c", "--change", "changes", multiple=True, help="Dockerfile instruction to apply.")
@click.option("-m", "--message", default="", help="Comment for the image's history.")
@pass_client
def import_(client: Client, source: str, reference: str | None, changes: tuple[str, ...],
            message: str) -> None:  # fmt: skip
    """Import a root file system tar (a file, - for stdin, or a URL) as an image.

    Example: contrib/mkimage/busybox.sh | dockyard import - busybox:latest
    """
    remote = source.startswith(("http://", "https://"))
    query: list[tuple[str, str]] = [("fromSrc", source if remote else "-"), ("message", message)]
    if reference:
        repo, tag = split_reference(reference)
        query += [("repo", repo), ("tag", tag)]
    query += [("changes", c) for c in changes]
    path = "/images/create?" + urlencode(query)
    stream = None if remote else _open_input(source)
    for message_ in client.messages("POST", path, data=stream):
        click.echo(message_.get("status", ""))


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Show intermediate images too.")
@click.option("-q", "--quiet", is_flag=True, help="Only show image ids.")
@click.option("--digests", is_flag=True, help="Show each repository's manifest digest.")
@click.option(
    "-f",
    "--filter",
    "filters",
    multiple=True,
    help="key=value: dangling, reference, label, before, since.",
)
@click.option("--tree", is_flag=True, help="Show the layer tree with images on it.")
@click.option("--viz", is_flag=True, help="Print the image graph as Graphviz DOT (or SVG).")
@click.option(
    "--format", "fmt", type=click.Choice(["dot", "svg"]), default="dot", help="With --viz."
)
@render.json_option
@pass_client
def images(client: Client, all_: bool, quiet: bool, digests: bool, filters: tuple[str, ...],
           tree: bool, viz: bool, fmt: str, as_json: bool) -> None:  # fmt: skip
    """List images; --tree and --viz show how they share layers.

    Example: dockyard images --tree
    """
    if tree:
        return _tree(cast(list[dict[str, Any]], client.get("/graph/tree")))
    if viz:
        return click.echo(cast(dict[str, str], client.get("/graph/viz", format=fmt))[fmt], nl=False)
    query = {"all": str(all_).lower(), "filters": encode_filters(filters)}
    rows = cast(list[dict[str, Any]], client.get("/images/json", **query))
    if as_json:
        return render.json_lines(rows)
    if quiet:
        return click.echo(
            "\n".join(r["Id"].removeprefix("sha256:")[:12] for r in rows) or None, nl=bool(rows)
        )
    table = [
        {
            "repo": repo,
            "tag": tag,
            "digest": _digest_for(repo, row["RepoDigests"] or []),
            "id": row["Id"].removeprefix("sha256:")[:12],
            "created": render.human_ago(row["Created"]),
            "size": render.human_size(row["Size"]),
        }
        for row in rows
        for repo, tag in _names(row)
    ]
    columns = [("REPOSITORY", "repo"), ("TAG", "tag")]
    columns += [("DIGEST", "digest")] if digests else []
    render.table(table, [*columns, ("IMAGE ID", "id"), ("CREATED", "created"), ("SIZE", "size")])


def _names(row: dict[str, Any]) -> list[tuple[str, str]]:
    """(repository, tag) rows of an image; an untagged pulled image shows its digest's repo."""
    if row["RepoTags"]:
        return [split_reference(t) for t in row["RepoTags"]]
    repos = dict.fromkeys(d.split("@", 1)[0] for d in row["RepoDigests"] or [])
    return [(repo, "<none>") for repo in repos] or [("<none>", "<none>")]


def _digest_for(repo: str, digests: list[str]) -> str:
    return next((d.split("@", 1)[1] for d in digests if d.split("@", 1)[0] == repo), "<none>")


def _tree(nodes: list[dict[str, Any]]) -> None:
    open_levels: list[bool] = []  # per depth: does a later sibling still follow?
    for node in nodes:
        depth = node["depth"]
        del open_levels[depth:]
        prefix = "".join("│  " if more else "   " for more in open_levels)
        branch = "└─ " if node["last"] else "├─ "
        layer = node["layer"].removeprefix("sha256:")[:12]
        names = [
            ", ".join(i["tags"]) or i["id"].removeprefix("sha256:")[:12] for i in node["images"]
        ]
        label = f"  {' | '.join(names)}" if names else ""
        click.echo(f"{prefix}{branch}{layer} {render.human_size(node['size'])}{label}")
        open_levels.append(not node["last"])


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", default="", help="Show one field: {{.State.Status}}.")
@click.option("--type", "kind", type=click.Choice(["", "container", "image"]), default="")
@pass_client
def inspect(client: Client, names: tuple[str, ...], fmt: str, kind: str) -> None:
    """Show containers or images in detail, as JSON (or one Go-template-like field with -f).

    Example: dockyard inspect -f '{{.State.Status}}' web
    """
    found = [_inspect(client, name, kind) for name in names]
    if not fmt:
        click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
        return
    for item in found:
        click.echo(render.template(fmt, item))


def _inspect(client: Client, name: str, kind: str) -> object:
    if kind in ("", "container"):
        try:
            return client.get(f"/containers/{quote(name, safe='')}/json")
        except NotFound:
            if kind:
                raise
    try:
        return client.get(_path(name, "/json"))
    except NotFound:
        raise NotFound(f"No such object: {name}") from None


@click.command()
@click.argument("name")
@click.option("--no-trunc", is_flag=True, help="Do not shorten the commands.")
@render.json_option
@pass_client
def history(client: Client, name: str, no_trunc: bool, as_json: bool) -> None:
    """Show an image's history, newest first.

    Example: dockyard history busybox
    """
    rows = cast(list[dict[str, Any]], client.get(_path(name, "/history")))
    if as_json:
        return render.json_lines(rows)
    for row in rows:
        row["Id"] = (
            row["Id"] if row["Id"] == "<missing>" else row["Id"].removeprefix("sha256:")[:12]
        )
        row["Created"] = render.human_ago(row["Created"])
        row["Size"] = render.human_size(row["Size"])
        if not no_trunc and len(row["CreatedBy"]) > 45:
            row["CreatedBy"] = row["CreatedBy"][:44] + "…"
    columns = [("IMAGE", "Id"), ("CREATED", "Created"), ("CREATED BY", "CreatedBy")]
    render.table(rows, [*columns, ("SIZE", "Size"), ("COMMENT", "Comment")])


@click.command()
@click.argument("source")
@click.argument("target")
@pass_client
def tag(client: Client, source: str, target: str) -> None:
    """Give the image SOURCE the name TARGET.

    Example: dockyard tag busybox localhost:5000/busybox:1.36
    """
    repo, tag_ = split_reference(target)
    client.request("POST", _path(source, "/tag?") + urlencode({"repo": repo, "tag": tag_})).read()


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Remove an image with several tags by id.")
@click.option("--no-prune", is_flag=True, help="Keep untagged parents.")
@pass_client
def rmi(client: Client, names: tuple[str, ...], force: bool, no_prune: bool) -> None:
    """Untag and remove images.

    Example: dockyard rmi busybox
    """
    for name in names:
        query = {"force": str(force).lower(), "noprune": str(no_prune).lower()}
        for row in cast(list[dict[str, str]], client.delete(_path(name), **query)):
            for key, value in row.items():
                click.echo(f"{key}: {value}")


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("-o", "--output", default="-", help="Write to this file instead of stdout.")
@pass_client
def save(client: Client, names: tuple[str, ...], output: str) -> None:
    """Save images to a tar (docker-archive and OCI layout in one).

    Example: dockyard save busybox -o busybox.tar
    """
    if output == "-" and sys.stdout.isatty():
        raise InvalidArgument("output: refusing to write a tar to a terminal; use -o FILE")
    response = client.request("GET", "/images/get?" + urlencode([("names", n) for n in names]))
    if output == "-":
        _copy(response, sys.stdout.buffer)
        return
    partial = output + ".part"  # the file appears under its name only once it is whole
    try:
        with open(partial, "wb") as out:
            _copy(response, out)
        os.replace(partial, output)
    except BaseException:
        if os.path.exists(partial):
            os.unlink(partial)
        raise


def _copy(response: http.client.HTTPResponse, out: BinaryIO) -> None:
    while chunk := response.read(1 << 20):
        out.write(chunk)
    out.flush()


@click.command()
@click.option("-i", "--input", "source", default="-", help="Read from this file instead of stdin.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing while loading.")
@pass_client
def load(client: Client, source: str, quiet: bool) -> None:
    """Load images from a tar (docker-archive or OCI layout, plain or gzip).

    Example: dockyard load -i busybox.tar
    """
    with _open_input(source) as stream:
        for message in client.messages("POST", f"/images/load?quiet={int(quiet)}", data=stream):
            click.echo(str(message.get("stream", "")), nl=False)
