"""The ``dockyard`` command: a thin client of the daemon's API (one command, one job)."""

from __future__ import annotations

import importlib
from typing import Any, Final

import click

from cli.client import DEFAULT_HOST, Client, TLSConfig
from cli.exits import CommandError
from engine.errors import EngineError

# Every command by name, as "module:attribute". A command's module is imported only when the
# command runs (or help lists them all), so `dockyard pull` does not pay for `run`'s imports.
COMMANDS: Final = {
    **dict.fromkeys(("daemon",), "cli.daemon:daemon"),
    "job": "cli.jobs:job",
    "jobs": "cli.jobs:jobs",
    "version": "cli.system:version",
    "info": "cli.system:info",
    "events": "cli.events:events",
    "import": "cli.images:import_",
    **{name: f"cli.images:{name}" for name in ("images", "inspect", "history", "tag", "rmi")},
    **{name: f"cli.images:{name}" for name in ("save", "load")},
    "volume": "cli.volumes:volume",
    **{name: f"cli.prune:{name}" for name in ("container", "image", "system")},
    "network": "cli.networks:network",
    "port": "cli.port:port",
    **{name: f"cli.registry:{name}" for name in ("pull", "push", "login", "logout")},
    "exec": "cli.containers:exec_",
    **{
        name: f"cli.containers:{name}"
        for name in (
            "attach", "commit", "cp", "create", "diff", "export", "kill", "logs", "pause", "ps",
            "rename", "restart", "rm", "run", "start", "stats", "stop", "top", "unpause",
            "update", "wait",
        )
    },
}  # fmt: skip


class DockyardGroup(click.Group):
    """A click group that turns engine errors into CommandError (message, exit code by class)
    and loads each command from ``COMMANDS`` when it is first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            module, attribute = COMMANDS[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)

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


def main() -> None:
    """Console entry point."""
    cli(prog_name="dockyard")
