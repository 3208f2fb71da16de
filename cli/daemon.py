"""``dockyard daemon``: run the engine and serve its API."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from engine.errors import EngineError


@click.command()
@click.option(
    "-H",
    "--host",
    "hosts",
    multiple=True,
    help="Address to listen on, repeatable: unix:///path or tcp://host:port "
    "[default: unix:///run/dockyard.sock].",
)
@click.option("--data-root", default="/var/lib/dockyard", show_default=True, type=Path)
@click.option("--exec-root", default="/run/dockyard", show_default=True, type=Path)
@click.option("--storage-driver", default="", envvar="DOCKER_DRIVER", help="Graph driver to use.")
@click.option("--exec-driver", default="", envvar="DOCKER_EXECDRIVER", help="Exec driver to use.")
@click.option(
    "--cgroup-parent",
    default="",
    help="Parent cgroup of containers (default: dockyard under the daemon's own cgroup).",
)
@click.option("--plugin", "plugins", multiple=True, help="Job plugin module:install, repeatable.")
@click.option("-G", "--group", default="root", show_default=True, help="Group of unix sockets.")
@click.option("--tlscert", default="", help="Server certificate (PEM).")
@click.option("--tlskey", default="", help="Server key (PEM).")
@click.option("--tlscacert", default="", help="CA whose client certificates are accepted.")
@click.option("--tlsverify", is_flag=True, help="Require client certificates (mutual TLS).")
@click.option("--insecure-tcp", is_flag=True, help="Allow tcp:// without TLS (root for anyone).")
@click.option("--shutdown-timeout", default=15.0, show_default=True, help="Seconds to drain jobs.")
@click.option("-D", "--debug", is_flag=True, help="Log at debug level (every +job/-job).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text")
def daemon(
    hosts: tuple[str, ...],
    data_root: Path,
    exec_root: Path,
    storage_driver: str,
    exec_driver: str,
    cgroup_parent: str,
    plugins: tuple[str, ...],
    group: str,
    tlscert: str,
    tlskey: str,
    tlscacert: str,
    tlsverify: bool,
    insecure_tcp: bool,
    shutdown_timeout: float,
    debug: bool,
    log_format: str,
) -> None:
    """Run the daemon in the foreground until SIGINT or SIGTERM.

    Example: dockyard daemon -H unix:///run/dockyard.sock --data-root /var/lib/dockyard
    """
    import asyncio  # the daemon's imports stay out of client commands

    from server import daemon as server_daemon
    from server.logs import configure

    configure(debug=debug, fmt=log_format)
    config = server_daemon.DaemonConfig(
        hosts=hosts or ("unix:///run/dockyard.sock",),
        data_root=data_root.absolute(),
        exec_root=exec_root.absolute(),
        storage_driver=storage_driver,
        exec_driver=exec_driver,
        cgroup_parent=cgroup_parent,
        plugins=plugins,
        group=group,
        tlscert=tlscert,
        tlskey=tlskey,
        tlscacert=tlscacert,
        tlsverify=tlsverify,
        insecure_tcp=insecure_tcp,
        debug=debug,
        shutdown_timeout=shutdown_timeout,
    )
    try:
        with asyncio.Runner(loop_factory=server_daemon.event_loop) as runner:
            runner.run(server_daemon.run(config))
    except EngineError as exc:
        server_daemon.log.error("cannot run the daemon: %s", exc)
        raise
    except KeyboardInterrupt:
        sys.exit(130)
