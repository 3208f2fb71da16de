"""``dockyard events``: the daemon's event stream, printed as ``docker events`` prints it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlencode

import click

from cli import render
from cli.client import Client, filters

pass_client = click.make_pass_decorator(Client)


def line(message: Mapping[str, object]) -> str:
    """One message as ``docker events`` prints it: time, type, action, actor id, attributes."""
    nanos = message.get("timeNano") or int(str(message.get("time") or 0)) * 10**9
    assert isinstance(nanos, int)
    when = datetime.fromtimestamp(nanos // 10**9).astimezone()
    offset = when.strftime("%z")
    zone = "Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
    stamp = f"{when:%Y-%m-%dT%H:%M:%S}.{nanos % 10**9:09d}{zone}"
    actor = message.get("Actor")
    actor = actor if isinstance(actor, Mapping) else {}
    attrs = actor.get("Attributes")
    text = f"{stamp} {message.get('Type')} {message.get('Action')} {actor.get('ID', '')}"
    if isinstance(attrs, Mapping) and attrs:
        text += " (" + ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs)) + ")"
    return text


@click.command()
@click.option(
    "--since", default="", help="Replay events from this time (unix seconds, RFC 3339, or 10m ago)."
)
@click.option("--until", default="", help="Stop at this time (same forms).")
@click.option(
    "-f", "--filter", "filter_", multiple=True, help="k=v: type, event, container, image, label…"
)
@click.option("--format", "fmt", default="", help="Print with a template, e.g. '{{json .}}'.")
@pass_client
def events(client: Client, since: str, until: str, filter_: tuple[str, ...], fmt: str) -> None:
    """Print the daemon's events as they happen (replaying stored ones with --since/--until).

    Example: dockyard events --since 10m --filter type=container --filter event=die
    """
    query = {k: v for k, v in (("since", since), ("until", until)) if v}
    if filter_:
        query["filters"] = filters(filter_)
    try:
        for message in client.messages("GET", "/events?" + urlencode(query)):
            click.echo(render.template(fmt, message) if fmt else line(message))
    except KeyboardInterrupt:  # the usual way to stop following
        pass
