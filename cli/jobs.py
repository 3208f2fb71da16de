"""``dockyard job`` (run any job) and ``dockyard jobs`` (list, inspect and cancel jobs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import click
import orjson

from cli import render
from cli.client import Client
from engine.errors import EngineError, InvalidArgument, from_kind

pass_client = click.make_pass_decorator(Client)


def parse_param(text: str) -> tuple[str, object]:
    """``key=value`` gives a string, ``key:=json`` a JSON value (number, bool, list, object)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InvalidArgument(f"param: {text!r} is not key=value or key:=json")
    if key.endswith(":"):
        try:
            return key[:-1], orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise InvalidArgument(f"{key[:-1]}: invalid JSON value: {exc}") from None
    return key, value


def _show(record: Mapping[str, object]) -> None:
    if any(isinstance(v, Mapping) for v in record.values()):
        render.keyvalues(record)
        click.echo()
    elif len(record) == 1:
        click.echo(render.cell(next(iter(record.values()))))
    else:
        click.echo(" ".join(f"{k}={render.cell(v)}" for k, v in record.items()))


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("name")
@click.argument("args", nargs=-1)
@click.option("-p", "--param", "params", multiple=True, help="key=value (string) or key:=JSON.")
@render.json_option
@pass_client
def job(
    client: Client, name: str, args: tuple[str, ...], params: tuple[str, ...], as_json: bool
) -> None:
    """Run job NAME with ARGS and params; print its records as they come.

    Example: dockyard job jobs -p which=history -p limit:=5
    """
    values = dict(parse_param(p) for p in params)
    status: dict[str, Any] = {}
    for record in client.run_job(name, list(args), values):
        if "job" in record and "state" in record and "status" in record:
            status = record
        elif as_json:
            click.echo(orjson.dumps(record).decode())
        else:
            _show(record)
    error = cast(Mapping[str, str] | None, status.get("error"))
    if not status:
        raise EngineError(f"the stream of job {name} ended without a status")
    if error:
        raise from_kind(error["kind"], error["message"])


@click.group()
def jobs() -> None:
    """List, inspect and cancel jobs."""


@jobs.command("ls")
@render.json_option
@pass_client
def ls(client: Client, as_json: bool) -> None:
    """List the registered jobs with their args and params.

    Example: dockyard jobs ls
    """
    rows = cast(list[dict[str, Any]], client.get("/jobs"))
    if as_json:
        return render.json_lines(rows)
    for row in rows:
        props = row["params"]["properties"]
        required = set(row["params"]["required"])
        row["params"] = " ".join(f"{k}{'' if k in required else '?'}" for k in props)
    render.table(rows, [("NAME", "name"), ("ARGS", "args"), ("PARAMS", "params"), ("DOC", "doc")])


@jobs.command("ps")
@render.json_option
@pass_client
def ps(client: Client, as_json: bool) -> None:
    """List the running jobs.

    Example: dockyard jobs ps
    """
    rows = cast(list[dict[str, Any]], client.get("/jobs/running"))
    if as_json:
        return render.json_lines(rows)
    render.table(rows, [("ID", "id"), ("NAME", "name"), ("ARGS", "args"), ("STARTED", "started")])


@jobs.command("history")
@click.option("-n", "--limit", default=20, show_default=True, help="How many jobs.")
@render.json_option
@pass_client
def history(client: Client, limit: int, as_json: bool) -> None:
    """List the most recently finished jobs, newest first.

    Example: dockyard jobs history -n 5
    """
    rows = cast(list[dict[str, Any]], client.get("/jobs/history", limit=limit))
    if as_json:
        return render.json_lines(rows)
    columns = [("ID", "id"), ("NAME", "name"), ("ARGS", "args"), ("STATE", "state")]
    columns += [("STATUS", "status"), ("ENDED", "ended"), ("SECONDS", "duration")]
    render.table(rows, [*columns, ("ERROR", "error")])


@jobs.command("cancel")
@click.argument("id")
@pass_client
def cancel(client: Client, id: str) -> None:
    """Cancel the running job ID.

    Example: dockyard jobs cancel 3f2a9c01d4e5b6a7
    """
    client.delete(f"/jobs/running/{id}")
    click.echo(id)
