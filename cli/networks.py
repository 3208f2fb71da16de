"""Network commands: ``dockyard network ls|inspect|create|rm|connect|disconnect|prune``, over
Docker's ``/networks`` routes.

A network is a bridge the daemon owns (or one of the predefined ``bridge``, ``host`` and
``none``); a container joins it through an endpoint, whose settings (``EndpointConfig``: aliases,
an IPv4 address, links) are given at ``connect`` or by ``run --network``. Each command sends the
body the docker CLI 28 sends for the same flags and prints what it prints: ``create`` the new id,
``rm`` each name removed (going on past failures, then exit 1), ``prune`` the names deleted.
Client-side checks (subnets, ranges and gateways that do not fit, bad links) raise
InvalidArgument in docker's words, before anything is sent.
"""

from __future__ import annotations

import csv
import ipaddress
import sys
from collections.abc import Sequence
from typing import Any, Final, cast
from urllib.parse import quote

import click
import orjson

from cli import render
from cli.client import Client, DaemonUnreachable, filters
from cli.prune import _confirm, _prune
from cli.runflags import ENDPOINT
from engine.errors import EngineError, InvalidArgument, NotFound

pass_client = click.make_pass_decorator(Client)
PRUNE_WARNING: Final = (
    "WARNING! This will remove all custom networks not used by at least one container."
)


def _n(name: str, suffix: str = "") -> str:
    return f"/networks/{quote(name.strip(), safe='')}{suffix}"


def _slices(values: Sequence[str]) -> list[str]:
    """Repeated comma-separated values (a pflag string slice: ``--subnet a,b --subnet c``)."""
    return [item for value in values if value for item in next(csv.reader([value]))]


def _kv(values: Sequence[str]) -> dict[str, str]:
    return {k: v for k, _, v in (value.partition("=") for value in values)}


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as Go's subnet checks read it: ``ip/prefix`` (its ip) or a bare ip."""
    if "/" not in text:
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            return None  # Go's ParseIP gives nil, which no subnet contains
    return _cidr(text).ip


def _cidr(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    address, _, prefix = text.partition("/")
    try:
        if not prefix.isdigit() or not address:
            raise ValueError
        return ipaddress.ip_interface(text)
    except ValueError:
        raise InvalidArgument(f"invalid CIDR address: {text}") from None


def _contains(subnet: str, text: str) -> bool:
    try:
        network = _cidr(subnet).network
    except InvalidArgument as exc:
        raise InvalidArgument(f"invalid subnet: {exc}") from None
    address = _address(text)
    return address is not None and address in network


def ipam_configs(
    subnets: Sequence[str], ranges: Sequence[str], gateways: Sequence[str]
) -> list[dict[str, str]]:
    """``--subnet``, ``--ip-range`` and ``--gateway`` as ``IPAM.Config`` (one entry a subnet, in
    command-line order), checked as docker's CLI checks them."""
    if len(subnets) < len(ranges) or len(subnets) < len(gateways):
        raise InvalidArgument("every ip-range or gateway must have a corresponding subnet")
    configs: dict[str, dict[str, str]] = {}
    for subnet in subnets:
        for known in configs:
            if _contains(subnet, known) or _contains(known, subnet):
                raise InvalidArgument("multiple overlapping subnet configuration is not supported")
        configs[subnet] = {"Subnet": subnet}
    for key, given, what in (("IPRange", ranges, "range"), ("Gateway", gateways, "gateway")):
        for value in given:
            if key == "IPRange":
                _cidr(value)
            matched = [s for s in subnets if _contains(s, value)]
            for subnet in matched:
                if key in configs[subnet]:
                    several = "ranges" if key == "IPRange" else "gateways"
                    raise InvalidArgument(
                        f"cannot configure multiple {several} ({value}, {configs[subnet][key]})"
                        f" {'on' if key == 'IPRange' else 'for'} the same subnet ({subnet})"
                    )
                configs[subnet][key] = value
            if not matched:
                raise InvalidArgument(f"no matching subnet for {what} {value}")
    return [{k: c[k] for k in ("Subnet", "IPRange", "Gateway") if k in c} for c in configs.values()]


def _labels(values: Sequence[str]) -> dict[str, str]:
    for value in values:
        key = value.partition("=")[0]
        if not key.strip():
            raise InvalidArgument(
                f'invalid argument "{value}" for "--label" flag: invalid label \'{value}\':'
                " empty name"
            )
        if any(c.isspace() for c in key):
            raise InvalidArgument(
                f'invalid argument "{value}" for "--label" flag: label \'{value}\' contains'
                " whitespaces"
            )
    return _kv(values)


def _links(values: Sequence[str]) -> list[str]:
    for value in values:
        parts = value.split(":")
        reason = ("bad format for links: " + value if len(parts) > 2
                  else "empty string specified for links" if "" in parts else "")  # fmt: skip
        if reason:
            raise InvalidArgument(f'invalid argument "{value}" for "--link" flag: {reason}')
    return list(values)


@click.group()
def network() -> None:
    """Manage networks: user-defined bridges and the predefined bridge, host and none.

    Example: dockyard network create --subnet 10.20.0.0/24 backend
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


@network.command()
@click.option("-d", "--driver", default="bridge", show_default=True, help="Network driver.")
@click.option("--subnet", multiple=True, help="Subnet in CIDR form (e.g. 10.20.0.0/24).")
@click.option("--gateway", multiple=True, help="Gateway of the subnet (e.g. 10.20.0.1).")
@click.option("--ip-range", multiple=True, help="Allocate container addresses from this range.")
@click.option("--internal", is_flag=True, help="No route out to the outside world.")
@click.option("--attachable", is_flag=True, help="Let containers attach to it at any time.")
@click.option("--label", multiple=True, help="Set a label (key=value).")
@click.option("-o", "--opt", multiple=True, help="Driver option (key=value).")
@click.argument("name")
@pass_client
def create(client: Client, name: str, driver: str, subnet: tuple[str, ...],
           gateway: tuple[str, ...], ip_range: tuple[str, ...], internal: bool, attachable: bool,
           label: tuple[str, ...], opt: tuple[str, ...]) -> None:  # fmt: skip
    """Create a network; print its id.

    Example: dockyard network create --subnet 10.20.0.0/24 --gateway 10.20.0.1 backend
    """
    configs = ipam_configs(_slices(subnet), _slices(ip_range), _slices(gateway))
    body = {
        "Driver": driver, "Scope": "", "IPAM": {"Driver": "default", "Options": {},
                                               "Config": configs},
        "Internal": internal, "Attachable": attachable, "Ingress": False, "ConfigOnly": False,
        "ConfigFrom": None, "Options": _kv(opt), "Labels": _labels(label), "Name": name,
    }  # fmt: skip
    created = orjson.loads(client.request("POST", "/networks/create", body).read())
    click.echo(created["Id"])


@network.command()
@click.option("-f", "--force", is_flag=True, help="Do not fail when a network does not exist.")
@click.argument("names", nargs=-1, required=True)
@pass_client
def rm(client: Client, names: tuple[str, ...], force: bool) -> None:
    """Remove networks; print each one removed (rm and remove are the same).

    Example: dockyard network rm backend frontend
    """
    failed = False
    for name in names:
        try:
            client.delete(_n(name))
        except DaemonUnreachable:
            raise
        except EngineError as exc:
            if not (force and isinstance(exc, NotFound)):
                click.echo(f"Error response from daemon: {exc}", err=True)
                failed = True
            continue
        click.echo(name)
    if failed:
        sys.exit(1)


network.add_command(rm, "remove")


@network.command()
@click.option("--alias", multiple=True, help="Add a network-scoped alias (repeatable).")
@click.option("--ip", default="", help="IPv4 address (e.g. 10.20.0.5).")
@click.option("--link", "links", multiple=True, help="Add a link to another container (c:alias).")
@click.argument("network_")
@click.argument("container")
@pass_client
def connect(client: Client, network_: str, container: str, alias: tuple[str, ...], ip: str,
            links: tuple[str, ...]) -> None:  # fmt: skip
    """Connect a container to a network.

    Example: dockyard network connect --alias db --ip 10.20.0.5 backend web
    """
    ipam = {"IPv4Address": ip} if ip else {}
    endpoint = {**ENDPOINT, "IPAMConfig": ipam, "Links": _links(links) or None,
                "Aliases": _slices(alias), "DriverOpts": {}}  # fmt: skip
    body = {"Container": container.strip(), "EndpointConfig": endpoint}
    client.request("POST", _n(network_, "/connect"), body).read()


@network.command()
@click.option("-f", "--force", is_flag=True, help="Force the container to disconnect.")
@click.argument("network_")
@click.argument("container")
@pass_client
def disconnect(client: Client, network_: str, container: str, force: bool) -> None:
    """Disconnect a container from a network.

    Example: dockyard network disconnect backend web
    """
    body = {"Container": container.strip(), "Force": force}
    client.request("POST", _n(network_, "/disconnect"), body).read()


@network.command()
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--filter", "filter_", multiple=True, help="until=<time>, label=..., label!=...")
@pass_client
def prune(client: Client, force: bool, filter_: tuple[str, ...]) -> None:
    """Remove every user-defined network no container uses.

    Example: dockyard network prune -f --filter until=24h
    """
    if not force and not _confirm(PRUNE_WARNING):
        return click.echo("network prune has been cancelled", err=True)
    deleted = _prune(client, "/networks/prune", filter_).get("NetworksDeleted") or []
    if deleted:
        click.echo("Deleted Networks:\n" + "\n".join(deleted) + "\n")


COMMANDS: Final = (network,)
