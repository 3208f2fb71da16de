"""Registry commands: pull, push, login, logout, as the docker CLI has them.

Credentials live in the user's Docker ``config.json`` (``$DOCKER_CONFIG``, else ``~/.docker``;
see registry.credentials), shared with the docker CLI. pull and push send the entry for the
image's registry to the daemon in the ``X-Registry-Auth`` header and render the daemon's progress
stream; login checks credentials with the daemon (``POST /auth``) before saving them, logout only
edits the file.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import quote, urlencode

import click
import orjson

from cli import progress
from cli.client import Client
from engine.errors import InvalidArgument
from graph.reference import Reference, familiar_name, parse, with_default_tag
from registry import credentials

pass_client = click.make_pass_decorator(Client)
PASSWORD_WARNING = "WARNING! Using --password via the CLI is insecure. Use --password-stdin."


def _auth_headers(ref: Reference) -> dict[str, str]:
    """The X-Registry-Auth header for *ref*'s registry, from the user's config file."""
    found = credentials.lookup(credentials.config_path(os.environ), ref.domain)
    return {"X-Registry-Auth": credentials.encode_header(found)}


def _stdin_is_tty() -> bool:
    return sys.stdin.isatty()


@click.command()
@click.argument("name")
@click.option("--platform", default="", help="Pull this platform (os/arch[/variant]).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image's reference.")
@pass_client
def pull(client: Client, name: str, platform: str, quiet: bool) -> None:
    """Pull an image from a registry.

    Example: dockyard pull 127.0.0.1:5000/busybox:1.36
    """
    given = parse(name)
    ref = with_default_tag(given)
    if ref is not given and not quiet:
        click.echo(f"Using default tag: {ref.tag}")
    query = [("fromImage", familiar_name(ref.name)), ("tag", ref.digest or ref.tag)]
    if platform:
        query.append(("platform", platform))
    stream = client.messages(
        "POST", "/images/create?" + urlencode(query), headers=_auth_headers(ref)
    )
    if quiet:
        list(stream)  # a failure still raises from the stream
    else:
        progress.render(stream)
    click.echo(str(ref))


@click.command()
@click.argument("name")
@click.option("-a", "--all-tags", is_flag=True, help="Push every tag of the repository.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image's reference.")
@pass_client
def push(client: Client, name: str, all_tags: bool, quiet: bool) -> None:
    """Push an image (one tag, or every tag with -a) to its registry.

    Example: dockyard push 127.0.0.1:5000/busybox:1.36
    """
    given = parse(name)
    if given.digest:
        raise InvalidArgument(f"{name}: cannot push a digest reference")
    if all_tags and given.tag:
        raise click.UsageError("tag can't be used with --all-tags/-a")
    ref = given if all_tags else with_default_tag(given)
    if ref is not given and not quiet:
        click.echo(f"Using default tag: {ref.tag}")
    path = f"/images/{quote(familiar_name(ref.name), safe='/:')}/push?{urlencode({'tag': ref.tag})}"
    stream = client.messages("POST", path, headers=_auth_headers(ref))
    if quiet:
        list(stream)
        click.echo(str(ref))
    else:
        progress.render(stream)


def _read_password_stdin() -> str:
    text = sys.stdin.read()
    return text.removesuffix("\n").removesuffix("\r")


@click.command()
@click.argument("server", required=False, default="")
@click.option("-u", "--username", default="", help="Username.")
@click.option("-p", "--password", default="", help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@pass_client
def login(client: Client, server: str, username: str, password: str, password_stdin: bool) -> None:
    """Log in to a registry (Docker Hub when no SERVER is given) and save the credentials.

    Example: dockyard login -u alice --password-stdin 127.0.0.1:5000 < password.txt
    """
    if password and password_stdin:
        raise click.UsageError("--password and --password-stdin are mutually exclusive")
    if password:
        click.echo(PASSWORD_WARNING, err=True)
    if password_stdin:
        if not username:
            raise click.UsageError("Must provide --username with --password-stdin")
        password = _read_password_stdin()
    if not (username and password):
        if not _stdin_is_tty():
            raise InvalidArgument("Cannot perform an interactive login from a non TTY device")
        username = username or click.prompt("Username")
        password = password or click.prompt("Password", hide_input=True)
    key = credentials.server_key(server)
    address = credentials.DOCKER_HUB_KEY if key == credentials.DOCKER_HUB_KEY else server
    body = {"username": username, "password": password, "serveraddress": address}
    reply = client.request("POST", "/auth", body).read()
    token = str(_json(reply).get("IdentityToken") or "")
    path = credentials.config_path(os.environ)
    credentials.store(path, key, username, "" if token else password, identitytoken=token)
    click.echo("Login Succeeded")


def _json(raw: bytes) -> dict[str, object]:
    try:
        data = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


@click.command()
@click.argument("server", required=False, default="")
def logout(server: str) -> None:
    """Remove the saved credentials for a registry (Docker Hub when no SERVER is given).

    Example: dockyard logout 127.0.0.1:5000
    """
    key = credentials.server_key(server)
    if credentials.erase(credentials.config_path(os.environ), key):
        click.echo(f"Removing login credentials for {key}")
    else:
        click.echo(f"Not logged in to {key}")


COMMANDS = (pull, push, login, logout)
