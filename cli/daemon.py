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
@click.option(
    "-b",
    "--bridge",
    default="dockyard0",
    show_default=True,
    help="The default network's bridge (created when missing).",
)
@click.option("--bip", default="", help="The default bridge's address, CIDR (e.g. 172.30.0.1/16).")
@click.option("--fixed-cidr", default="", help="Give default-network addresses from this range.")
@click.option("--mtu", default=0, type=int, help="Container MTU (default: the host route's).")
@click.option(
    "--icc",
    default=True,
    type=click.BOOL,
    show_default=True,
    help="Let containers on the default bridge talk to each other.",
)
@click.option(
    "--iptables",
    default=True,
    type=click.BOOL,
    show_default=True,
    help="Add NAT and filter rules (ignored when iptables is missing).",
)
@click.option(
    "--ip-forward",
    default=True,
    type=click.BOOL,
    show_default=True,
    help="Turn on net.ipv4.ip_forward.",
)
@click.option(
    "--ip-masq",
    default=True,
    type=click.BOOL,
    show_default=True,
    help="Masquerade traffic leaving a bridge's subnet.",
)
@click.option(
    "--ip",
    "default_ip",
    default="0.0.0.0",
    show_default=True,
    help="Host address ports are published on by default.",
)
@click.option(
    "--network-driver",
    default="",
    envvar="DOCKER_NETWORKDRIVER",
    help="Driver of the default network: bridge, host or none.",
)
@click.option(
    "--insecure-registry",
    "insecure_registries",
    multiple=True,
    help="host[:port] or CIDR of a registry to reach without verified TLS (repeatable).",
)
@click.option(
    "--registry-mirror",
    "registry_mirrors",
    multiple=True,
    help="Docker Hub mirror URL (repeatable).",
)
@click.option("--max-concurrent-downloads", default=3, show_default=True, type=click.IntRange(1))
@click.option("--max-concurrent-uploads", default=5, show_default=True, type=click.IntRange(1))
@click.option("--max-download-attempts", default=5, show_default=True, type=click.IntRange(1))
@click.option(
    "--download-retry-delay",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to wait before a blob's second try (times the try's number after that).",
)
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
    bridge: str,
    bip: str,
    fixed_cidr: str,
    mtu: int,
    icc: bool,
    iptables: bool,
    ip_forward: bool,
    ip_masq: bool,
    default_ip: str,
    network_driver: str,
    insecure_registries: tuple[str, ...],
    registry_mirrors: tuple[str, ...],
    max_concurrent_downloads: int,
    max_concurrent_uploads: int,
    max_download_attempts: int,
    download_retry_delay: float,
) -> None:
    """Run the daemon in the foreground until SIGINT or SIGTERM.

    Example: dockyard daemon -H unix:///run/dockyard.sock --data-root /var/lib/dockyard
    """
    import asyncio  # the daemon's imports stay out of client commands

    from drivers.network.base import Settings
    from registry.download import Retry
    from registry.endpoint import RegistryConfig
    from registry.service import RegistryService
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
        network=Settings(
            bridge=bridge, bip=bip, fixed_cidr=fixed_cidr, mtu=mtu, icc=icc, iptables=iptables,
            ip_forward=ip_forward, ip_masq=ip_masq, default_ip=default_ip,
        ),
        network_driver=network_driver,
        registry=RegistryService(
            RegistryConfig(insecure_registries, registry_mirrors),
            max_downloads=max_concurrent_downloads,
            max_uploads=max_concurrent_uploads,
            retry=Retry(max_download_attempts, download_retry_delay),
        ),
    )  # fmt: skip
    try:
        with asyncio.Runner(loop_factory=server_daemon.event_loop) as runner:
            runner.run(server_daemon.run(config))
    except EngineError as exc:
        server_daemon.log.error("cannot run the daemon: %s", exc)
        raise
    except KeyboardInterrupt:
        sys.exit(130)
