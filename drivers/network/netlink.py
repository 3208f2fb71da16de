"""The netlink seam of the network drivers: links, addresses and routes through pyroute2.

Vocabulary: a *link* is a network device (``Link``: name, index, kind, MTU, IPv4 addresses as
CIDR strings); a *peer* is the container's end of a veth pair (``Peer``), configured inside the
network namespace of a process. Every method opens its own ``IPRoute`` socket and closes it;
nothing is cached, so one ``Netlink`` may be shared by threads.

Inside a container's namespace nothing forks (pyroute2's ``NetNS`` would start a process): a
short-lived thread joins the namespace with ``setns(2)`` (a network namespace belongs to a
thread, not to the process), opens its socket there and goes back to the thread's own namespace
before it ends. ``add_veth`` starts that thread first, so that opening its socket overlaps
with the veth being made on the host; the thread then sends one batch of requests (``lo`` up,
address, link up, default route), a single round trip.

pyroute2 0.9's synchronous ``IPRoute`` runs its own asyncio loop and fails inside a thread whose
loop is running; calls made from such a thread are moved to a helper thread.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import os
import random
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, ParamSpec, TypeVar

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink import (  # type: ignore[import-untyped]
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    rtnl,
)
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg  # type: ignore[import-untyped]
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg  # type: ignore[import-untyped]
from pyroute2.netlink.rtnl.rtmsg import rtmsg  # type: ignore[import-untyped]

from drivers.exec.native.linux import CLONE_NEWNET, setns

T = TypeVar("T")
P = ParamSpec("P")
MAIN_TABLE: Final = 254
RTPROT_STATIC: Final = 4
RTN_UNICAST: Final = 1
IFF_UP: Final = 0x1
LOOPBACK_INDEX: Final = 1  # loopback is the first device the kernel makes in every namespace
MAX_IFNAME: Final = 15  # IFNAMSIZ - 1


@dataclass(frozen=True, slots=True)
class Link:
    """A network device of the host."""

    name: str
    index: int
    kind: str  # "bridge", "veth", … ("" for devices without link info, e.g. lo)
    mtu: int
    up: bool
    addresses: tuple[str, ...]  # IPv4, as "10.1.2.1/24"


@dataclass(frozen=True, slots=True)
class Peer:
    """The container's end of a veth pair: where it goes and how it is configured."""

    pid: int  # a process in the target network namespace
    ifname: str  # eth0, eth1, …
    address: str  # IPv4 with prefix: "10.1.2.3/24"
    mtu: int
    mac: str = ""  # "" lets the kernel pick one
    gateway: str = ""  # "" adds no default route


def _off_loop(fn: Callable[[], T]) -> T:
    """Run *fn* here, or in a helper thread when an asyncio loop runs in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    with ThreadPoolExecutor(1, thread_name_prefix="netlink") as pool:
        return pool.submit(fn).result()


def _blocking(fn: Callable[P, T]) -> Callable[P, T]:
    """Make a pyroute2 call work from an event loop's thread and fail with ``OSError``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return _off_loop(lambda: fn(*args, **kwargs))
        except NetlinkError as exc:  # callers see errno values, as from any system call
            raise OSError(exc.code, f"netlink: {os.strerror(exc.code)}") from exc

    return wrapper


def _index(name: str) -> int | None:
    """The index of link *name* in the calling thread's namespace (None if there is none)."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def random_mac() -> str:
    """A random locally administered unicast MAC, as the kernel gives a new bridge."""
    octets = [random.randrange(256) for _ in range(6)]
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{o:02x}" for o in octets)


class _NamespaceWorker(threading.Thread):
    """A thread that joins a network namespace, opens a socket there and waits for ``finish``."""

    def __init__(self, ns_fd: int) -> None:
        super().__init__(name="netns", daemon=True)
        self._ns_fd = ns_fd
        self._go = threading.Event()
        self._step: Callable[[Any], None] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(self._ns_fd, CLONE_NEWNET)
                try:
                    with IPRoute() as ipr:
                        self._go.wait()
                        if self._step is not None:
                            self._step(ipr)
                finally:
                    setns(own, CLONE_NEWNET)
            finally:
                os.close(own)
        except BaseException as exc:
            self.error = exc

    def finish(self, step: Callable[[Any], None] | None, *, check: bool = True) -> None:
        """Run *step* (None: nothing) in the namespace, wait, re-raise its failure if *check*."""
        self._step = step
        self._go.set()
        self.join()
        if check and self.error is not None:
            raise self.error


def _open_ns(pid: int) -> int:
    return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)


class Netlink:
    """The link, address and route operations the network drivers need (blocking calls)."""

    @_blocking
    def find_link(self, name: str) -> Link | None:
        """Link *name* of the host with its IPv4 addresses, None when there is none."""
        index = _index(name)
        if index is None:
            return None
        with IPRoute() as ipr:
            try:
                msg = ipr.link("get", index=index)[0]
            except NetlinkError as exc:
                if exc.code == errno.ENODEV:
                    return None
                raise
            addrs = ipr.addr("dump", family=socket.AF_INET, index=index)
        kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""
        cidrs = tuple(f"{a.get('address')}/{a['prefixlen']}" for a in addrs)
        up = bool(msg["flags"] & IFF_UP)
        return Link(name, index, str(kind), int(msg.get("mtu")), up, cidrs)

    @_blocking
    def create_bridge(self, name: str, address: str, mtu: int) -> None:
        """Make bridge *name* with a random MAC, MTU *mtu*, the IPv4 *address* (CIDR), up."""
        with IPRoute() as ipr:
            ipr.link("add", ifname=name, kind="bridge", address=random_mac(), mtu=mtu, state="up")
            index = socket.if_nametoindex(name)
            try:
                ipr.nlm_request_batch([_address(index, address)])
            except BaseException:
                ipr.link("del", index=index)
                raise

    @_blocking
    def add_address(self, name: str, address: str) -> None:
        """Give link *name* the IPv4 *address* (CIDR) and bring it up."""
        with IPRoute() as ipr:
            index = socket.if_nametoindex(name)
            ipr.nlm_request_batch([_address(index, address), _link_up(index)])

    @_blocking
    def set_up(self, name: str) -> None:
        """Bring link *name* up."""
        with IPRoute() as ipr:
            ipr.nlm_request_batch([_link_up(socket.if_nametoindex(name))])

    @_blocking
    def delete_link(self, name: str) -> bool:
        """Delete link *name* (both ends of a veth); False when it did not exist."""
        index = _index(name)
        if index is None:
            return False
        with IPRoute() as ipr:
            try:
                ipr.link("del", index=index)
            except NetlinkError as exc:
                if exc.code == errno.ENODEV:
                    return False
                raise
        return True

    @_blocking
    def bridge_ports(self, name: str) -> int:
        """How many links have bridge *name* as their master (0 when it does not exist)."""
        index = _index(name)
        if index is None:
            return 0
        with IPRoute() as ipr:
            return sum(1 for m in ipr.link("dump", master=index) if m.get("master") == index)

    @_blocking
    def host_routes(self) -> list[str]:
        """Destinations (CIDR) of the main table's IPv4 routes, the default route left out."""
        with IPRoute() as ipr:
            routes = ipr.route("dump", family=socket.AF_INET, table=MAIN_TABLE)
        found = {
            str(ipaddress.ip_network(f"{r.get('dst')}/{r['dst_len']}", strict=False))
            for r in routes
            if r["dst_len"] > 0 and r.get("table") == MAIN_TABLE
        }
        return sorted(found)

    @_blocking
    def default_mtu(self, fallback: int = 1500) -> int:
        """The MTU of the interface of the host's default route, *fallback* without one."""
        with IPRoute() as ipr:
            for r in ipr.route("dump", family=socket.AF_INET, table=MAIN_TABLE):
                oif = r.get("oif")
                if r["dst_len"] == 0 and oif:
                    return int(ipr.link("get", index=oif)[0].get("mtu"))
        return fallback

    @_blocking
    def add_veth(self, bridge: str, host_ifname: str, peer: Peer) -> None:
        """Make veth *host_ifname* (a port of *bridge*, up) whose other end is *peer*."""
        master = _index(bridge)
        if master is None:
            raise FileNotFoundError(errno.ENODEV, f"bridge {bridge} does not exist", bridge)
        fd = _open_ns(peer.pid)
        try:
            worker = _NamespaceWorker(fd)
            worker.start()
            try:
                _create_veth(host_ifname, master, peer, fd)
            except BaseException:
                worker.finish(None, check=False)
                raise
            try:
                worker.finish(lambda ipr: _configure_peer(ipr, peer))
            except BaseException:
                self.delete_link(host_ifname)
                raise
        finally:
            os.close(fd)

    @_blocking
    def delete_in_namespace(self, pid: int, ifname: str) -> bool:
        """Delete *ifname* inside the network namespace of *pid*; False when it is not there."""

        found: list[bool] = []

        def step(ipr: Any) -> None:
            index = _index(ifname)  # an ioctl on a socket of the namespace thread
            if index is not None:
                ipr.link("del", index=index)
            found.append(index is not None)

        fd = _open_ns(pid)
        try:
            worker = _NamespaceWorker(fd)
            worker.start()
            worker.finish(step)
        finally:
            os.close(fd)
        return found[0]


def _create_veth(host_ifname: str, master: int, peer: Peer, ns_fd: int) -> None:
    spec: dict[str, Any] = {"ifname": peer.ifname, "net_ns_fd": ns_fd, "mtu": peer.mtu}
    if peer.mac:
        spec["address"] = peer.mac
    # The peer cannot be brought up in this request: veth_open() fails (ENOTCONN) until both
    # ends exist, so the namespace side sets it up.
    with IPRoute() as ipr:
        ipr.link(
            "add",
            ifname=host_ifname,
            kind="veth",
            mtu=peer.mtu,
            master=master,
            state="up",
            peer=spec,
        )


def _request(msg: Any, kind: int, flags: int = 0) -> Any:
    msg["header"]["type"] = kind
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
    return msg


def _link_up(index: int) -> Any:
    msg = ifinfmsg()
    msg["index"], msg["flags"], msg["change"] = index, IFF_UP, IFF_UP
    return _request(msg, rtnl.RTM_NEWLINK)


def _address(index: int, cidr: str) -> Any:
    iface = ipaddress.IPv4Interface(cidr)
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["index"] = socket.AF_INET, iface.network.prefixlen, index
    ip, broadcast = str(iface.ip), str(iface.network.broadcast_address)
    msg["attrs"] = [["IFA_LOCAL", ip], ["IFA_ADDRESS", ip], ["IFA_BROADCAST", broadcast]]
    return _request(msg, rtnl.RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL)


def _default_route(index: int, gateway: str) -> Any:
    msg = rtmsg()
    msg["family"], msg["table"] = socket.AF_INET, MAIN_TABLE
    msg["proto"], msg["type"] = RTPROT_STATIC, RTN_UNICAST
    msg["attrs"] = [["RTA_GATEWAY", gateway], ["RTA_OIF", index], ["RTA_TABLE", MAIN_TABLE]]
    return _request(msg, rtnl.RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL)


def _configure_peer(ipr: Any, peer: Peer) -> None:
    # if_nametoindex runs an ioctl on a socket made by this (namespace) thread: no dump needed.
    # One batch (lo up, address, up, default route) costs one round trip instead of four.
    index = socket.if_nametoindex(peer.ifname)
    msgs = [_link_up(LOOPBACK_INDEX), _address(index, peer.address), _link_up(index)]
    if peer.gateway:
        msgs.append(_default_route(index, peer.gateway))
    ipr.nlm_request_batch(msgs)
