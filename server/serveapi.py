"""The ``serveapi`` job: serve the API on every address given, until shutdown.

One aiohttp ``AppRunner``, one site per address. It emits ``{"listening": address}`` once per
address when that listener accepts connections, then runs until cancelled (the engine cancels it
after draining the other jobs), closing the listeners and removing its unix sockets on the way out.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aiohttp import web

from engine import ArgSpec, Engine, Job
from engine.errors import InvalidArgument, Unavailable
from server.app import build_app
from server.listeners import (
    Address,
    group_id,
    parse_address,
    remove_socket,
    tls_context,
    unix_socket,
)

MAX_LINE: Final = 64 * 1024

log = logging.getLogger(__name__)

INSECURE_TCP = (
    "Binding to {address} without TLS is insecure and gives root access on this machine to "
    "everyone who can reach that address; use --tlscert/--tlskey with --tlsverify."
)


@dataclass(frozen=True, slots=True)
class ServeParams:
    group: str = field(default="root", metadata={"doc": "group owning the unix sockets"})
    tlscert: str = field(default="", metadata={"doc": "server certificate (PEM) for tcp"})
    tlskey: str = field(default="", metadata={"doc": "server key (PEM) for tcp"})
    tlscacert: str = field(default="", metadata={"doc": "CA that client certificates chain to"})
    tlsverify: bool = field(default=False, metadata={"doc": "require client certificates"})
    insecure_tcp: bool = field(default=False, metadata={"doc": "allow tcp without TLS"})


async def serveapi(job: Job[ServeParams]) -> None:
    """Serve the API on each address arg; emit {"listening": address} per listener."""
    p = job.params
    tls = bool(p.tlscert or p.tlskey or p.tlsverify)
    addresses = [parse_address(a, tls=tls) for a in job.args]
    ssl_context = None
    if tls:
        if not (p.tlscert and p.tlskey):
            raise InvalidArgument("tlscert: TLS needs both --tlscert and --tlskey")
        ssl_context = tls_context(p.tlscert, p.tlskey, p.tlscacert, p.tlsverify)
    for address in addresses:
        if address.proto == "tcp" and ssl_context is None and not p.insecure_tcp:
            raise InvalidArgument(
                f"host: {address} needs --tlscert and --tlskey (or --insecure-tcp to serve "
                "plain HTTP, which gives root on this machine to anyone who can connect)"
            )
    gid = group_id(p.group) if any(a.proto == "unix" for a in addresses) else 0
    runner = web.AppRunner(
        build_app(job.engine),
        handler_cancellation=True,
        access_log=None,
        # X-Registry-Auth/-Config carry base64 JSON and filters ride in the query string: allow
        # 64 KiB lines and fields (aiohttp's default is 8 KiB), within Go's 1 MiB of headers.
        max_line_size=MAX_LINE,
        max_field_size=MAX_LINE,
    )
    await runner.setup()
    sockets: list[tuple[Path, int]] = []
    try:
        for address in addresses:
            await _start_site(runner, address, gid, ssl_context, sockets)
            job.emit({"listening": str(address)})
        await asyncio.Future()  # serve until cancelled
    finally:
        await runner.cleanup()
        for path, inode in sockets:
            remove_socket(path, inode)


async def _start_site(
    runner: web.AppRunner,
    address: Address,
    gid: int,
    ssl_context: ssl.SSLContext | None,
    sockets: list[tuple[Path, int]],
) -> None:
    site: web.BaseSite
    if address.proto == "unix":
        sock, inode = unix_socket(Path(address.path), gid)
        sockets.append((Path(address.path), inode))
        site = web.SockSite(runner, sock, shutdown_timeout=5.0)
    else:
        if ssl_context is None:
            log.warning(INSECURE_TCP.format(address=address))
        site = web.TCPSite(
            runner,
            address.host,
            address.port,
            ssl_context=ssl_context,
            shutdown_timeout=5.0,
        )
    try:
        await site.start()
    except OSError as exc:
        raise Unavailable(f"host: cannot listen on {address}: {exc.strerror}") from None
    log.info("API listening on %s%s", address, " (TLS)" if ssl_context else "")


def install(engine: Engine) -> None:
    """Register serveapi (a service job: it runs until shutdown)."""
    engine.register(
        "serveapi",
        serveapi,
        params=ServeParams,
        args=ArgSpec(("address",), "address"),
        service=True,
    )
