"""A container's network files: its hostname, ``/etc/hosts`` and ``/etc/resolv.conf`` contents.

The daemon writes these into the container's bundle (``hostname``, ``hosts``, ``resolv.conf``)
and the exec driver bind-mounts them over the image's files. ``resolv_conf`` follows moby's
resolvconf package: the host's file with loopback nameservers dropped (they mean nothing in the
container's own network namespace), Google's public resolvers when none remain, and the
container's Dns/DnsSearch/DnsOptions in place of the host's lines when given.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from typing import Final

from jobs.jsonfields import Fields

FALLBACK_NAMESERVERS: Final = ("8.8.8.8", "8.8.4.4")
# moby's etchosts defaults, in its order.
_LOCAL_HOSTS: Final = (
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
    ("fe00::0", "ip6-localnet"),
    ("ff00::0", "ip6-mcastprefix"),
    ("ff02::1", "ip6-allnodes"),
    ("ff02::2", "ip6-allrouters"),
)


def hostname_for(id: str, config: Mapping[str, object], host_config: Mapping[str, object]) -> str:
    """The container's hostname: Config.Hostname, else the host's one when it shares the host's
    network or UTS namespace, else the first 12 characters of its id."""
    hostname = Fields(config, "Config").text("Hostname")
    if hostname:
        return hostname
    hc = Fields(host_config, "HostConfig")
    if hc.text("NetworkMode") == "host" or hc.text("UTSMode") == "host":
        return socket.gethostname()
    return id[:12]


def hosts_file(
    hostname: str, domainname: str, extra_hosts: Sequence[str], address: str = ""
) -> str:
    """``/etc/hosts``: the local names, each ``ExtraHosts`` entry (``name:ip``), and *hostname*
    when the container has an *address* of its own."""
    lines = [f"{ip}\t{names}" for ip, names in _LOCAL_HOSTS]
    for entry in extra_hosts:
        name, _, ip = entry.partition("=") if "=" in entry else entry.partition(":")
        lines.append(f"{ip.removeprefix('[').removesuffix(']')}\t{name}")
    if address:
        names = f"{hostname}.{domainname} {hostname}" if domainname else hostname
        lines.append(f"{address}\t{names}")
    return "\n".join(lines) + "\n"


def _loopback(word: str) -> bool:
    try:
        ip = ipaddress.ip_address(word.split("%")[0])
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def resolv_conf(
    host_resolv_text: str,
    dns: Sequence[str],
    dns_search: Sequence[str],
    dns_options: Sequence[str],
    host_network: bool,
) -> str:
    """The container's ``/etc/resolv.conf`` from the host's text and the container's settings
    (with the host's network and no settings of its own, the host's file as it is)."""
    if host_network and not (dns or dns_search or dns_options):
        return host_resolv_text
    kept, servers, search, options = [], [], [], []
    for line in host_resolv_text.splitlines():
        words = line.split()
        key = words[0] if words else ""
        if key == "nameserver" and len(words) > 1:
            if not host_network and _loopback(words[1]):
                continue  # the host's local resolver is unreachable from the container
            servers.append(words[1])
        elif key in ("search", "domain"):
            search = words[1:]
        elif key == "options":
            options += words[1:]
        kept.append(line)
    if not (dns or dns_search or dns_options):
        if not servers:
            kept += [f"nameserver {ip}" for ip in FALLBACK_NAMESERVERS]
        return "\n".join(kept) + "\n"
    servers = list(dns) or servers or list(FALLBACK_NAMESERVERS)
    if dns_search:
        search = [] if list(dns_search) == ["."] else list(dns_search)
    options = list(dns_options) or options
    lines = [f"nameserver {ip}" for ip in servers]
    if search:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"
