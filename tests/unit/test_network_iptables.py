"""The bridge driver's iptables layer with a fake ``iptables`` (no root, no kernel rules).

``FakeIptables`` keeps tables of chains and rules and answers -N/-F/-X/-C/-A/-I/-D with the
exit codes of the real binary (0 done, 1 missing or exists), so the tests can check both the
argument lists and that ``Chains.close`` leaves the tables as it found them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import drivers.network as network_drivers
import drivers.network.iptables as ipt
from drivers.network.base import LinkRule, Network, PortMap, Settings
from drivers.network.bridge import BridgeDriver
from drivers.network.iptables import ChainNames, Chains, Result, Rule
from engine.errors import InvalidArgument, Unavailable

BUILTINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
}


class FakeIptables:
    """An in-memory iptables: ``tables[table][chain]`` is the list of rules (argument tuples)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, list[tuple[str, ...]]]] = {
            t: {c: [] for c in chains} for t, chains in BUILTINS.items()
        }
        self.calls: list[list[str]] = []

    def __call__(self, args: Sequence[str]) -> Result:
        self.calls.append(list(args))
        assert args[0] == "-t"
        chains = self.tables[args[1]]
        verb, chain, rest = args[2], args[3], tuple(args[4:])
        if verb == "-N":
            if chain in chains:
                return Result(1, "iptables: Chain already exists.")
            chains[chain] = []
            return Result(0)
        if chain not in chains:
            return Result(1, "iptables: No chain/target/match by that name.")
        rules = chains[chain]
        if verb == "-F":
            rules.clear()
        elif verb == "-X":
            if rules or any(r[-1] == chain for c in chains.values() for r in c):
                return Result(1, "iptables: Directory not empty.")
            del chains[chain]
        elif verb == "-C":
            return Result(0 if rest in rules else 1)
        elif verb == "-A":
            rules.append(rest)
        elif verb == "-I":
            rules.insert(int(rest[0]) - 1, rest[1:])
        elif verb == "-D":
            if rest not in rules:
                return Result(1, "iptables: Bad rule.")
            rules.remove(rest)
        else:
            raise AssertionError(f"unexpected verb {verb}")
        return Result(0)

    def snapshot(self) -> dict[str, dict[str, list[tuple[str, ...]]]]:
        """A deep copy of the tables."""
        return {t: {c: list(r) for c, r in chains.items()} for t, chains in self.tables.items()}


NET = Network(
    id="n1", name="web", bridge="dy1", subnet="10.213.1.0/24", gateway="10.213.1.1", icc=True
)


def test_chain_names_derive_from_the_bridge_and_fit() -> None:
    names = ChainNames.for_bridge("dockyard0")
    assert names.owned() == (
        ("nat", "DY-dockyard0"),
        ("nat", "DY-dockyard0-POST"),
        ("filter", "DY-dockyard0-FWD"),
        ("filter", "DY-dockyard0-ISO"),
        ("filter", "DY-dockyard0-ISO2"),
    )
    longest = ChainNames.for_bridge("b" * 15)
    assert all(len(chain) <= 28 for _, chain in longest.owned())
    assert ChainNames.for_bridge("br-a").nat != ChainNames.for_bridge("br-b").nat
    with pytest.raises(InvalidArgument, match="bridge"):
        ChainNames.for_bridge("has space")
    with pytest.raises(InvalidArgument, match="too long"):
        ChainNames.for_bridge("b" * 30)


def test_hooks_match_docker_1x_placement() -> None:
    hooks = {(r.table, r.chain): r for r in ChainNames.for_bridge("dy0").hooks()}
    pre = hooks[("nat", "PREROUTING")]
    assert pre.args == ("-m", "addrtype", "--dst-type", "LOCAL", "-j", "DY-dy0")
    out = hooks[("nat", "OUTPUT")]
    assert out.args == (
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "!",
        "-d",
        "127.0.0.0/8",
        "-j",
        "DY-dy0",
    )
    assert hooks[("filter", "FORWARD")].args == ("-j", "DY-dy0-FWD")
    assert hooks[("filter", "FORWARD")].position == 1
    assert hooks[("nat", "POSTROUTING")].args == ("-j", "DY-dy0-POST")
    assert hooks[("filter", "DY-dy0-FWD")].args == ("-j", "DY-dy0-ISO")


def test_command_argument_lists() -> None:
    rule = Rule("nat", "DY-x", ("-s", "10.0.0.0/8", "-j", "MASQUERADE"))
    check = ["-t", "nat", "-C", "DY-x", "-s", "10.0.0.0/8", "-j", "MASQUERADE"]
    assert ipt.command("-C", rule) == check
    assert ipt.command("-A", rule)[:4] == ["-t", "nat", "-A", "DY-x"]
    inserted = Rule("filter", "DY-x-FWD", ("-j", "ACCEPT"), 2)
    assert ipt.command("-A", inserted) == ["-t", "filter", "-I", "DY-x-FWD", "2", "-j", "ACCEPT"]
    assert ipt.command("-D", inserted) == ["-t", "filter", "-D", "DY-x-FWD", "-j", "ACCEPT"]
    assert ipt.chain_command("-N", "nat", "DY-x") == ["-t", "nat", "-N", "DY-x"]
    assert inserted == Rule("filter", "DY-x-FWD", ("-j", "ACCEPT"))  # position is not identity


def test_network_rules_for_an_ordinary_network() -> None:
    names = ChainNames.for_bridge("dy0")
    got = [(r.table, r.chain, " ".join(r.args)) for r in ipt.network_rules(names, NET)]
    assert got == [
        ("nat", "DY-dy0-POST", "-s 10.213.1.0/24 ! -o dy1 -j MASQUERADE"),
        ("filter", "DY-dy0-ISO", "-i dy1 ! -o dy1 -j DY-dy0-ISO2"),
        ("filter", "DY-dy0-ISO2", "-o dy1 -j DROP"),
        ("filter", "DY-dy0-FWD", "-i dy1 -o dy1 -j ACCEPT"),
        ("filter", "DY-dy0-FWD", "-i dy1 ! -o dy1 -j ACCEPT"),
        ("filter", "DY-dy0-FWD", "-o dy1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
    ]


def test_network_rules_icc_off_no_masquerade_and_internal() -> None:
    names = ChainNames.for_bridge("dy0")
    quiet = Network("n2", "q", "dy2", "10.213.2.0/24", "10.213.2.1", icc=False, masquerade=False)
    got = [" ".join(r.args) for r in ipt.network_rules(names, quiet)]
    assert "-i dy2 -o dy2 -j DROP" in got
    assert not any("MASQUERADE" in g for g in got)
    internal = Network("n3", "i", "dy3", "10.213.3.0/24", "10.213.3.1", internal=True)
    rules = ipt.network_rules(names, internal)
    placed = [(r.chain, " ".join(r.args)) for r in rules]
    assert ("DY-dy0-ISO", "-i dy3 ! -o dy3 -j DROP") in placed
    assert ("DY-dy0-ISO", "! -i dy3 -o dy3 -j DROP") in placed
    assert not any(
        "MASQUERADE" in a or "ctstate" in a or "! -o dy3 -j ACCEPT" in a for _, a in placed
    )


def test_publish_and_link_rules() -> None:
    names = ChainNames.for_bridge("dy0")
    dnat, accept = ipt.publish_rules(names, "dy1", PortMap("tcp", "", 8080, "10.213.1.2", 80))
    assert (dnat.table, dnat.chain) == ("nat", "DY-dy0")
    assert " ".join(dnat.args) == (
        "-p tcp --dport 8080 ! -i dy1 -j DNAT --to-destination 10.213.1.2:80"
    )
    assert (accept.table, accept.chain, accept.position) == ("filter", "DY-dy0-FWD", 2)
    assert " ".join(accept.args) == "! -i dy1 -o dy1 -p tcp -d 10.213.1.2 --dport 80 -j ACCEPT"
    bound, _ = ipt.publish_rules(names, "dy1", PortMap("udp", "192.0.2.2", 53, "10.213.1.2", 53))
    assert bound.args[:4] == ("-p", "udp", "-d", "192.0.2.2")
    with pytest.raises(InvalidArgument, match="host_ip"):
        ipt.publish_rules(names, "dy1", PortMap("tcp", "fe80::1", 1, "10.213.1.2", 1))
    there, back = ipt.link_rules(names, "dy1", LinkRule("10.213.1.3", "10.213.1.2", 5432, "tcp"))
    assert " ".join(there.args) == (
        "-i dy1 -o dy1 -p tcp -s 10.213.1.3 -d 10.213.1.2 --dport 5432 -j ACCEPT"
    )
    assert " ".join(back.args) == (
        "-i dy1 -o dy1 -p tcp -s 10.213.1.2 -d 10.213.1.3 --sport 5432 -j ACCEPT"
    )
    assert there.position == back.position == 2


def test_chains_add_is_idempotent_and_close_restores_the_tables() -> None:
    fake = FakeIptables()
    before = fake.snapshot()
    chains = Chains("dy0", fake)
    chains.setup()
    assert fake.tables["filter"]["FORWARD"] == [("-j", "DY-dy0-FWD")]
    assert fake.tables["filter"]["DY-dy0-FWD"] == [("-j", "DY-dy0-ISO")]
    rule = ipt.network_rules(chains.names, NET)[0]
    chains.add(rule)
    calls = len(fake.calls)
    chains.add(rule)  # remembered: no command at all
    assert len(fake.calls) == calls
    other = Chains("dy0", fake)  # a second owner finds the rule with -C and does not duplicate
    other.add(rule)
    assert fake.tables["nat"]["DY-dy0-POST"].count(rule.args) == 1
    assert fake.calls[-1][2] == "-C"
    accept = ipt.publish_rules(chains.names, "dy1", PortMap("tcp", "", 80, "10.213.1.2", 80))[1]
    chains.add(Rule("filter", chains.names.forward, ("-i", "dy1", "-j", "DROP")))
    chains.add(accept)
    assert fake.tables["filter"]["DY-dy0-FWD"][1] == accept.args  # ahead of the DROP
    chains.remove(accept)
    assert accept.args not in fake.tables["filter"]["DY-dy0-FWD"]
    assert accept not in chains.rules()
    assert chains.close() == []
    assert fake.snapshot() == before


def test_setup_empties_leftover_chains_and_reuses_hooks() -> None:
    fake = FakeIptables()
    fake(["-t", "nat", "-N", "DY-dy0"])
    fake(["-t", "nat", "-A", "DY-dy0", "-j", "RETURN"])
    fake(["-t", "filter", "-N", "DY-dy0-FWD"])
    fake(["-t", "filter", "-A", "FORWARD", "-j", "DY-dy0-FWD"])
    chains = Chains("dy0", fake)
    chains.setup()
    assert fake.tables["nat"]["DY-dy0"] == []
    assert fake.tables["filter"]["FORWARD"] == [("-j", "DY-dy0-FWD")]
    chains.close()
    assert "DY-dy0-FWD" not in fake.tables["filter"]
    assert fake.tables["filter"]["FORWARD"] == []


def test_daemons_with_different_bridges_do_not_touch_each_other() -> None:
    fake = FakeIptables()
    one, two = Chains("dya", fake), Chains("dyb", fake)
    one.setup()
    two.setup()
    one.add(ipt.network_rules(one.names, NET)[0])
    one.close()
    assert "DY-dyb" in fake.tables["nat"] and "DY-dya" not in fake.tables["nat"]
    assert fake.tables["filter"]["FORWARD"] == [("-j", "DY-dyb-FWD")]
    two.close()


def test_failures_raise_unavailable_and_close_reports_them() -> None:
    fake = FakeIptables()
    chains = Chains("dy0", fake)
    chains.setup()
    with pytest.raises(Unavailable, match="No chain"):
        chains.add(Rule("filter", "NO-SUCH-CHAIN", ("-j", "ACCEPT")))
    fake.tables["filter"]["DY-dy0-ISO"].append(("-j", "DY-dy0-FWD"))  # a loop -X cannot undo
    fake.tables["filter"]["FORWARD"].append(("-j", "DY-dy0-ISO"))
    failures = chains.close()
    assert failures and all(f.startswith("iptables -t filter -X") for f in failures)


def test_without_iptables_nothing_runs_and_the_driver_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ipt, "find_binary", lambda: None)
    chains = Chains("dy0")
    assert not chains.available and "iptables not found" in chains.reason
    chains.setup()
    chains.add(Rule("nat", "DY-dy0", ("-j", "RETURN")))
    assert chains.rules() == [] and chains.close() == []
    driver = BridgeDriver(Settings(bridge="dy0"))
    assert not driver.iptables_active
    assert driver.status() == [("iptables", chains.reason)]
    driver.publish(NET, PortMap("tcp", "", 80, "10.213.1.2", 80))  # no rules, no error
    off = BridgeDriver(Settings(bridge="dy0", iptables=False), runner=FakeIptables())
    assert not off.iptables_active and "disabled" in off.status()[0][1]


def test_select_by_name_env_and_default() -> None:
    settings = Settings(bridge="dy0")
    assert network_drivers.select("host", {}, settings).sandbox == "host"
    assert network_drivers.select("", {"DOCKER_NETWORKDRIVER": "none"}, settings).name == "null"
    chosen = network_drivers.select("", {}, settings)
    assert (chosen.name, chosen.sandbox) == ("bridge", "new")
    assert isinstance(chosen, network_drivers.NetworkDriver)
    with pytest.raises(InvalidArgument, match="bridge, host, none"):
        network_drivers.select("overlay", {}, settings)
