"""The bridge driver's iptables rules: what they are (pure functions) and who owns them (Chains).

Every daemon owns five chains named after its default bridge, so two daemons with different
bridges never touch each other's rules (``DY-dockyard0``…):

- ``DY-<br>`` (nat): DNAT of published ports; hooked from nat PREROUTING for local destinations
  and from nat OUTPUT for local destinations outside 127.0.0.0/8.
- ``DY-<br>-POST`` (nat): MASQUERADE of traffic leaving a network's subnet; hooked from
  POSTROUTING.
- ``DY-<br>-FWD`` (filter): hooked from FORWARD. Its first rule jumps to ``-ISO``; rules that
  let traffic through (published ports, links) are inserted right after it, so they come before
  a network's inter-container (icc) DROP; a network's own rules are appended.
- ``DY-<br>-ISO`` and ``-ISO2`` (filter): isolation between this daemon's bridges, in two
  stages: traffic that leaves bridge X for another interface goes to ``-ISO2``, which drops it
  if it is headed for any of the daemon's bridges. Internal networks drop all but X-to-X here.

A *rule* is (table, chain, match-and-target arguments); ``position`` 0 appends, n inserts at n.
``Chains`` adds rules idempotently (``-C`` before ``-A``/``-I``), remembers them and removes
all of its chains and hooks in ``close``. Without an ``iptables`` binary it does nothing and
says why (``available``, ``reason``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from drivers.network.base import LinkRule, Network, PortMap
from engine.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)

Table = Literal["filter", "nat"]
MAX_CHAIN: Final = 28  # XT_EXTENSION_MAXNAMELEN - 1
BUILTIN: Final = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
PASS_POSITION: Final = 2  # right after FWD's jump to the isolation chain
SEARCH_PATH: Final = "/usr/sbin:/sbin:/usr/bin:/bin"


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: its table, chain and arguments; *position* 0 appends, n inserts at n."""

    table: Table
    chain: str
    args: tuple[str, ...]
    position: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class ChainNames:
    """The chains one daemon owns, derived from its default bridge's name."""

    nat: str
    post: str
    forward: str
    isolation: str
    isolation2: str

    @classmethod
    def for_bridge(cls, bridge: str) -> ChainNames:
        """The names for a daemon whose default bridge is *bridge*."""
        if not bridge or any(c.isspace() or c in "/!" for c in bridge):
            raise InvalidArgument(f"bridge: {bridge!r} cannot name iptables chains")
        base = f"DY-{bridge}"
        names = cls(base, f"{base}-POST", f"{base}-FWD", f"{base}-ISO", f"{base}-ISO2")
        if len(names.isolation2) > MAX_CHAIN:
            raise InvalidArgument(f"bridge: {bridge!r} is too long to name iptables chains")
        return names

    def owned(self) -> tuple[tuple[Table, str], ...]:
        """Every (table, chain) this daemon creates."""
        return (
            ("nat", self.nat),
            ("nat", self.post),
            ("filter", self.forward),
            ("filter", self.isolation),
            ("filter", self.isolation2),
        )

    def hooks(self) -> list[Rule]:
        """The jumps into the owned chains, FWD's jump to ISO first."""
        return [
            Rule("filter", self.forward, ("-j", self.isolation), 1),
            Rule("nat", "PREROUTING", ("-m", "addrtype", "--dst-type", "LOCAL", "-j", self.nat)),
            Rule(
                "nat",
                "OUTPUT",
                ("-m", "addrtype", "--dst-type", "LOCAL", "!", "-d", "127.0.0.0/8", "-j", self.nat),
            ),
            Rule("nat", "POSTROUTING", ("-j", self.post), 1),
            Rule("filter", "FORWARD", ("-j", self.forward), 1),
        ]


def command(verb: str, rule: Rule) -> list[str]:
    """The arguments of ``iptables`` for -C/-A/-I/-D of *rule* (-A becomes -I with a position)."""
    if verb == "-A" and rule.position:
        return ["-t", rule.table, "-I", rule.chain, str(rule.position), *rule.args]
    return ["-t", rule.table, verb, rule.chain, *rule.args]


def chain_command(verb: str, table: Table, chain: str) -> list[str]:
    """The arguments of ``iptables`` for -N/-F/-X of a chain."""
    return ["-t", table, verb, chain]


def network_rules(names: ChainNames, net: Network) -> list[Rule]:
    """The rules of one network, in the order they are added."""
    br = net.bridge
    rules: list[Rule] = []
    if net.masquerade and not net.internal:
        rules.append(Rule("nat", names.post, ("-s", net.subnet, "!", "-o", br, "-j", "MASQUERADE")))
    if net.internal:
        rules.append(Rule("filter", names.isolation, ("-i", br, "!", "-o", br, "-j", "DROP")))
        rules.append(Rule("filter", names.isolation, ("!", "-i", br, "-o", br, "-j", "DROP")))
    else:
        jump = ("-i", br, "!", "-o", br, "-j", names.isolation2)
        rules.append(Rule("filter", names.isolation, jump))
    rules.append(Rule("filter", names.isolation2, ("-o", br, "-j", "DROP")))
    verdict = "ACCEPT" if net.icc else "DROP"
    rules.append(Rule("filter", names.forward, ("-i", br, "-o", br, "-j", verdict)))
    if not net.internal:
        rules.append(Rule("filter", names.forward, ("-i", br, "!", "-o", br, "-j", "ACCEPT")))
        established = ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
        rules.append(Rule("filter", names.forward, ("-o", br, *established)))
    return rules


def publish_rules(names: ChainNames, bridge: str, port: PortMap) -> list[Rule]:
    """The DNAT rule of a published port and the FORWARD rule that lets it in."""
    if ":" in port.host_ip and port.host_ip != "::":
        raise InvalidArgument(f"host_ip: {port.host_ip} (IPv6) cannot be published by iptables")
    dest = () if port.host_ip in ("", "0.0.0.0", "::") else ("-d", port.host_ip)
    target = f"{port.container_ip}:{port.container_port}"
    dnat = ("-p", port.proto, *dest, "--dport", str(port.host_port), "!", "-i", bridge)
    accept = ("!", "-i", bridge, "-o", bridge, "-p", port.proto, "-d", port.container_ip)
    return [
        Rule("nat", names.nat, (*dnat, "-j", "DNAT", "--to-destination", target)),
        Rule(
            "filter",
            names.forward,
            (*accept, "--dport", str(port.container_port), "-j", "ACCEPT"),
            PASS_POSITION,
        ),
    ]


def link_rules(names: ChainNames, bridge: str, link: LinkRule) -> list[Rule]:
    """The two ACCEPT rules of a legacy link: parent → child port and the child's replies."""
    on_bridge = ("-i", bridge, "-o", bridge, "-p", link.proto)
    port = str(link.port)
    there = ("-s", link.parent_ip, "-d", link.child_ip, "--dport", port, "-j", "ACCEPT")
    back = ("-s", link.child_ip, "-d", link.parent_ip, "--sport", port, "-j", "ACCEPT")
    return [
        Rule("filter", names.forward, (*on_bridge, *there), PASS_POSITION),
        Rule("filter", names.forward, (*on_bridge, *back), PASS_POSITION),
    ]


@dataclass(frozen=True, slots=True)
class Result:
    """What one ``iptables`` run returned."""

    code: int
    stderr: str = ""


Runner = Callable[[Sequence[str]], Result]


def find_binary() -> str | None:
    """The path of ``iptables`` (PATH, then the sbin directories), None when it is missing."""
    path = os.environ.get("PATH", "")
    return shutil.which("iptables", path=f"{path}:{SEARCH_PATH}" if path else SEARCH_PATH)


def subprocess_runner(binary: str) -> Runner:
    """A runner that executes *binary* with ``-w`` (wait for the xtables lock) and the args."""

    def run(args: Sequence[str]) -> Result:
        proc = subprocess.run(
            [binary, "-w", *args], capture_output=True, text=True, check=False, timeout=60
        )
        return Result(proc.returncode, proc.stderr.strip())

    return run


class Chains:
    """The chains and rules one daemon owns; everything it added goes away in ``close``."""

    def __init__(self, bridge: str, runner: Runner | None = None) -> None:
        self.names = ChainNames.for_bridge(bridge)
        self.reason = ""
        if runner is None:
            binary = find_binary()
            if binary is None:
                self.reason = "iptables not found: running without NAT and filter rules"
            else:
                runner = subprocess_runner(binary)
        self._run = runner
        self._rules: dict[Rule, None] = {}  # insertion-ordered set of what was added
        self._created = False
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """Whether rules can be added (an ``iptables`` binary was found)."""
        return self._run is not None

    def _exec(self, args: list[str]) -> Result:
        assert self._run is not None
        return self._run(args)

    def _must(self, args: list[str]) -> None:
        result = self._exec(args)
        if result.code != 0:
            raise Unavailable(f"iptables {' '.join(args)}: {result.stderr or result.code}")

    def _exists(self, rule: Rule) -> bool:
        result = self._exec(command("-C", rule))
        if result.code not in (0, 1):
            raise Unavailable(f"iptables {' '.join(command('-C', rule))}: {result.stderr}")
        return result.code == 0

    def setup(self) -> None:
        """Create the owned chains (emptying leftovers of an earlier daemon) and hook them."""
        if self._run is None:
            return
        with self._lock:
            for table, chain in self.names.owned():
                if self._exec(chain_command("-N", table, chain)).code != 0:
                    self._must(chain_command("-F", table, chain))
            self._created = True
        for rule in self.names.hooks():
            self.add(rule)

    def add(self, rule: Rule) -> None:
        """Add *rule* unless it is there already, and remember it."""
        if self._run is None:
            return
        with self._lock:
            if rule in self._rules:
                return
            if not self._exists(rule):
                self._must(command("-A", rule))
            self._rules[rule] = None

    def remove(self, rule: Rule) -> None:
        """Delete *rule* if it is there, and forget it."""
        if self._run is None:
            return
        with self._lock:
            self._rules.pop(rule, None)
            if self._exists(rule):
                self._must(command("-D", rule))

    def rules(self) -> list[Rule]:
        """What was added and not removed, oldest first."""
        with self._lock:
            return list(self._rules)

    def close(self) -> list[str]:
        """Remove the hooks and the owned chains; return the failures (also logged)."""
        if self._run is None:
            return []
        failures: list[str] = []

        def attempt(args: list[str]) -> None:
            result = self._exec(args)
            if result.code != 0:
                failures.append(f"iptables {' '.join(args)}: {result.stderr or result.code}")

        with self._lock:
            for rule in reversed(self._rules):
                # A daemon that died may have left the same hook twice: delete while present.
                for _ in range(8):
                    if rule.chain not in BUILTIN or self._exec(command("-C", rule)).code != 0:
                        break
                    attempt(command("-D", rule))
            self._rules.clear()
            if self._created:
                for table, chain in self.names.owned():
                    attempt(chain_command("-F", table, chain))
                for table, chain in self.names.owned():
                    attempt(chain_command("-X", table, chain))
            self._created = False
        for failure in failures:
            log.warning("%s", failure)
        return failures
