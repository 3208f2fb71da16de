"""The ``dockyard`` command: a thin client of the daemon's API (one command, one job)."""

from __future__ import annotations

from typing import Any

import click

from cli import containers, daemon, events, images, jobs, networks, port, prune, system, volumes
from cli.client import DEFAULT_HOST, Client, TLSConfig
from cli.exits import CommandError
from engine.errors import EngineError


class DockyardGroup(click.Group):
    """A click group that turns engine errors into CommandError (message, exit code by class)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EngineError as exc:
            raise CommandError(exc) from None


@click.group(cls=DockyardGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-H",
    "--host",
    envvar="DOCKYARD_HOST",
    default=DEFAULT_HOST,
    show_default=True,
    help="Daemon address (unix:///path or tcp://host:port); also DOCKYARD_HOST.",
)
@click.option("--tls", is_flag=True, help="Use TLS (implied by --tlsverify).")
@click.option("--tlsverify", is_flag=True, help="Use TLS and verify the daemon's certificate.")
@click.option("--tlscacert", default="", help="CA certificate to trust.")
@click.option("--tlscert", default="", help="Client certificate.")
@click.option("--tlskey", default="", help="Client key.")
@click.version_option(package_name="dockyard", prog_name="dockyard")
@click.pass_context
def cli(
    ctx: click.Context,
    host: str,
    tls: bool,
    tlsverify: bool,
    tlscacert: str,
    tlscert: str,
    tlskey: str,
) -> None:
    """dockyard: a container engine on the architecture of early Docker.

    Example: dockyard -H unix:///run/dockyard.sock info
    """
    use_tls = tls or tlsverify or bool(tlscert)
    config = TLSConfig(tlscacert, tlscert, tlskey, verify=tlsverify) if use_tls else None
    ctx.obj = Client(host, config)


cli.add_command(daemon.daemon)
cli.add_command(jobs.job)
cli.add_command(jobs.jobs)
cli.add_command(system.version)
cli.add_command(system.info)
cli.add_command(events.events)
for command in (images.import_, images.images, images.inspect, images.history, images.tag,
                images.rmi, images.save, images.load):  # fmt: skip
    cli.add_command(command)
cli.add_command(volumes.volume)
for command in containers.COMMANDS:
    cli.add_command(command)
for command in (*prune.COMMANDS, *networks.COMMANDS, *port.COMMANDS):
    cli.add_command(command)


def main() -> None:
    """Console entry point."""
    cli(prog_name="dockyard")
