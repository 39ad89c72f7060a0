"""flanneld masquerade/forward rules without root: the exact rules (written out from
upstream's pkg/trafficmngr), the reconcile plan, and the manager against a simulated
iptables (an in-memory iptables-save / iptables-restore --noflush)."""

from __future__ import annotations

import copy
import shlex
import subprocess
from typing import Dict, List, Optional, Tuple

import pytest

from cni_flannel.cni.errors import InternalError, InvalidConfig
from cni_flannel.daemon import masq as M
from cni_flannel.daemon.masq import APPLY, REMOVE, MasqConfig, MasqManager
from cni_flannel.firewall import Firewall, IptablesFirewall, NftFirewall, RuleSet, Runner
from cni_flannel.firewall import _iptables as ipt
from cni_flannel.firewall import _nft as nft

NET4, SUB4, NEW4 = "10.244.0.0/16", "10.244.1.0/24", "10.244.7.0/24"
NET6, SUB6, NEW6 = "fd00::/48", "fd00:0:0:1::/64", "fd00:0:0:7::/64"
MASQ, FWD = '-m comment --comment "flanneld masq"', '-m comment --comment "flanneld forward"'


# --- upstream's rules, written out from iptables.go masqRules/forwardRules -------------------

def expected_nat(net: str, sub: str, random_fully: bool = True) -> List[str]:
    """iptables-save -t nat lines upstream's masqRules/masqIP6Rules produce."""
    mc = "ff00::/8" if ":" in net else "224.0.0.0/4"
    rf = " --random-fully" if random_fully else ""
    return ["-A POSTROUTING " + MASQ + " -j FLANNEL-POSTRTG",
            "-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 " + MASQ + " -j RETURN",
            f"-A FLANNEL-POSTRTG -s {sub} -d {net} {MASQ} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {net} -d {sub} {MASQ} -j RETURN",
            f"-A FLANNEL-POSTRTG ! -s {net} -d {sub} {MASQ} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {net} ! -d {mc} {MASQ} -j MASQUERADE{rf}",
            f"-A FLANNEL-POSTRTG ! -s {net} -d {net} {MASQ} -j MASQUERADE{rf}"]


def expected_filter(net: str) -> List[str]:
    return ["-A FORWARD " + FWD + " -j FLANNEL-FWD",
            f"-A FLANNEL-FWD -s {net} {FWD} -j ACCEPT",
            f"-A FLANNEL-FWD -d {net} {FWD} -j ACCEPT"]


def expected_nft(net: str, sub: str) -> Dict[str, List[str]]:
    """What `nft list table` shows per chain: upstream's nftables.go rules with the
    iptables semantics kept (masked mark, '! -s Network -d podCIDR' return) and comments."""
    f = "ip6" if ":" in net else "ip"
    mc = "ff00::/8" if f == "ip6" else "224.0.0.0/4"
    m, w = 'comment "flanneld masq"', 'comment "flanneld forward"'
    return {"postrtg": [f"meta mark & 0x00004000 == 0x00004000 return {m}",
                        f"{f} saddr {sub} {f} daddr {net} return {m}",
                        f"{f} saddr {net} {f} daddr {sub} return {m}",
                        f"{f} saddr != {net} {f} daddr {sub} return {m}",
                        f"{f} saddr {net} {f} daddr != {mc} masquerade fully-random {m}",
                        f"{f} saddr != {net} {f} daddr {net} masquerade fully-random {m}"],
            "forward": [f"{f} saddr {net} accept {w}", f"{f} daddr {net} accept {w}"]}


def rendered(rs: RuleSet) -> List[str]:
    return [f"-A {c.name} {ipt.rule_spec(r)}" for c in reversed(rs.chains) for r in c.rules]


def cfg(*pairs: Tuple[str, str], **kw) -> MasqConfig:
    return MasqConfig(tuple(n for n, _ in pairs), tuple(s for _, s in pairs), **kw)


# --- exact rule sets --------------------------------------------------------------------------

@pytest.mark.parametrize("net,sub", [(NET4, SUB4), (NET6, SUB6)])
def test_iptables_rules_are_upstreams(net, sub):
    fam = "ipv6" if ":" in net else "ipv4"
    nat, fwd = M.desired(cfg((net, sub)))
    assert (nat.family, nat.table, fwd.family, fwd.table) == (fam, "nat", fam, "filter")
    assert rendered(nat) == expected_nat(net, sub)
    assert rendered(fwd) == expected_filter(net)
    assert [c.owned for c in nat.chains] == [True, False]  # POSTROUTING is shared, never flushed


def test_dual_stack_is_one_code_path_per_family():
    sets = M.desired(cfg((NET4, SUB4), (NET6, SUB6)))
    assert [(rs.family, rs.table) for rs in sets] == [("ipv4", "nat"), ("ipv4", "filter"),
                                                      ("ipv6", "nat"), ("ipv6", "filter")]
    assert rendered(sets[2]) == expected_nat(NET6, SUB6) and rendered(sets[3]) == expected_filter(NET6)


def test_random_fully_off_and_switches():
    (nat,) = M.desired(cfg((NET4, SUB4), random_fully=False, forward=False))
    assert rendered(nat) == expected_nat(NET4, SUB4, random_fully=False)
    (fwd,) = M.desired(cfg((NET4, SUB4), ip_masq=False))
    assert fwd.table == "filter"
    assert M.desired(MasqConfig((NET4,), ip_masq=False, forward=False)) == []


@pytest.mark.parametrize("net,sub", [(NET4, SUB4), (NET6, SUB6)])
def test_nftables_rules(net, sub):
    (rs,) = M.desired(cfg((net, sub), enable_nftables=True))
    fam = "ipv6" if ":" in net else "ipv4"
    assert (rs.family, rs.table) == (fam, "flannel-" + fam)
    got = {c.name: [nft.rule_text(r, nft.NFT_FAMILIES[fam]) for r in c.rules] for c in rs.chains}
    assert got == expected_nft(net, sub)
    hooks = {c.name: (c.hook.type, c.hook.hook, c.hook.priority) for c in rs.chains}
    assert hooks == {"postrtg": ("nat", "postrouting", "srcnat"), "forward": ("filter", "forward", "filter")}
    lines = nft.plan_apply(rs, None)
    assert lines[:3] == [f"add table {nft.NFT_FAMILIES[fam]} flannel-{fam}",
                         f"create chain {nft.NFT_FAMILIES[fam]} flannel-{fam} postrtg {{ type nat hook "
                         "postrouting priority srcnat; policy accept; }",
                         f"create chain {nft.NFT_FAMILIES[fam]} flannel-{fam} forward {{ type filter hook "
                         "forward priority filter; policy accept; }"]


def test_nftables_masq_only_has_no_forward_chain():
    (rs,) = M.desired(cfg((NET4, SUB4), enable_nftables=True, forward=False))
    assert [c.name for c in rs.chains] == ["postrtg"]


@pytest.mark.parametrize("kw,msg", [
    (dict(networks=()), "no Network"),
    (dict(networks=(NET4, "10.0.0.0/8"), subnets=(SUB4,)), "more than one Network"),
    (dict(networks=(NET4,), subnets=("10.245.1.0/24",)), "not inside the Network"),
    (dict(networks=(NET4,), subnets=(SUB6,)), "no ipv6 Network"),
    (dict(networks=(NET4, NET6), subnets=(SUB4,)), "lease subnet for Network fd00::/48"),
    (dict(networks=("10.244.0.0/33",), subnets=()), "invalid Network"),
])
def test_config_is_validated(kw, msg):
    with pytest.raises(InvalidConfig, match=msg):
        MasqConfig(**kw)


def test_config_canonicalises_addresses():
    c = MasqConfig(("10.244.0.1/16",), ("10.244.1.1/24",))  # subnet.env style
    assert (c.networks, c.subnets) == ((NET4,), (SUB4,))
    assert MasqConfig((NET4,), ip_masq=False).family("ipv4") == (NET4, None)


# --- the reconcile plan --------------------------------------------------------------------

OLD_NAT = "\n".join(["*nat", ":PREROUTING ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]",
                     ":FLANNEL-POSTRTG - [0:0]", ":KUBE-POSTROUTING - [0:0]",
                     '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
                     f'-A POSTROUTING -s {NET4} -d {NET4} {MASQ} -j RETURN',  # flannel <= 0.14 style
                     *expected_nat(NET4, SUB4), "COMMIT", ""])


def test_reconcile_plan_iptables_replaces_old_lease_in_one_batch():
    (nat, _), state = M.desired(cfg((NET4, NEW4))), ipt.parse_save(OLD_NAT)
    batch = ipt.plan_apply(nat, state)
    # our chain is declared (flushed) and rewritten in the same transaction; POSTROUTING untouched
    assert batch == [":FLANNEL-POSTRTG - [0:0]"] + [l for l in expected_nat(NET4, NEW4)
                                                      if l.startswith("-A FLANNEL-POSTRTG")]
    after = dict(state, **{"FLANNEL-POSTRTG": [l.split(" ", 2)[2] for l in batch[1:]]})
    assert not any(SUB4 in s for s in after["FLANNEL-POSTRTG"])
    # then the sweep: the old-style comment rule in POSTROUTING goes, the jump and kube's stay
    assert ipt.plan_remove(M.sweep(nat), after) == [f"-D POSTROUTING -s {NET4} -d {NET4} {MASQ} -j RETURN"]


def test_reconcile_plan_steps():
    steps = M.reconcile_plan(cfg((NET4, SUB4), forward=False))
    assert [(v, rs.family, rs.table, [c.name for c in rs.chains]) for v, rs in steps] == [
        (APPLY, "ipv4", "nat", ["FLANNEL-POSTRTG", "POSTROUTING"]),
        (REMOVE, "ipv4", "nat", ["FLANNEL-POSTRTG", "POSTROUTING"]),  # sweep, all ours kept
        (REMOVE, "ipv4", "filter", ["FLANNEL-FWD"]),  # forwarding off: our chain goes
        (REMOVE, "ipv6", "nat", ["FLANNEL-POSTRTG"]),  # family not configured
        (REMOVE, "ipv6", "filter", ["FLANNEL-FWD"])]
    assert all(r.keep for c in steps[1][1].chains for r in c.rules)
    assert all(c.owned for _, rs in steps[2:] for c in rs.chains)


def test_reconcile_plan_nftables_rewrites_postrtg_and_drops_stray_chains():
    c = cfg((NET4, NEW4), enable_nftables=True, forward=False)
    old = {"postrtg": [(t, i) for i, t in enumerate(expected_nft(NET4, SUB4)["postrtg"], 10)],
           "forward": [], "masqueradeTest": []}
    steps = M.reconcile_plan(c, {"ipv4": list(old)})
    (v1, rs), (v2, stale), (v3, v6) = steps
    assert (v1, v2, v3) == (APPLY, REMOVE, REMOVE)
    assert [ch.name for ch in stale.chains] == ["forward", "masqueradeTest"]
    assert [ch.name for ch in v6.chains] == ["postrtg", "forward"] and v6.table == "flannel-ipv6"
    lines = nft.plan_apply(rs, old)
    assert lines[0] == "flush chain ip flannel-ipv4 postrtg"
    assert lines[1:] == [f"add rule ip flannel-ipv4 postrtg {t}" for t in expected_nft(NET4, NEW4)["postrtg"]]
    assert nft.plan_remove(stale, old) == ["flush chain ip flannel-ipv4 forward",
                                           "flush chain ip flannel-ipv4 masqueradeTest",
                                           "delete chain ip flannel-ipv4 forward",
                                           "delete chain ip flannel-ipv4 masqueradeTest"]


# --- the manager against a simulated iptables ------------------------------------------------

BUILTIN = {"nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"), "filter": ("INPUT", "FORWARD", "OUTPUT")}


class SimIptables(Runner):
    """iptables-<mode>-save -t T and -restore --noflush over in-memory tables; a failing
    line fails the whole transaction, as iptables-restore does."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: Dict[Tuple[str, str], Dict[str, List[str]]] = {}
        self.restores: List[str] = []

    def table(self, family: str, table: str) -> Dict[str, List[str]]:
        return self.tables.setdefault((family, table), {c: [] for c in BUILTIN[table]})

    def lines(self, family: str, table: str) -> List[str]:
        return [f"-A {c} {s}" for c, specs in self.table(family, table).items() for s in specs]

    def run(self, argv, stdin="", check=True):
        self.calls += 1
        family = "ipv6" if argv[0].startswith("ip6") else "ipv4"
        if argv[0].startswith("nft"):
            raise InternalError("nft not found; install iptables/nftables on the node")
        if argv[0].endswith("-save"):
            t = self.table(family, argv[argv.index("-t") + 1])
            out = [f":{c} {'ACCEPT' if c.isupper() and c in sum(BUILTIN.values(), ()) else '-'} [0:0]"
                   for c in t] + [f"-A {c} {s}" for c, specs in t.items() for s in specs]
            return subprocess.CompletedProcess(argv, 0, "\n".join(out) + "\n", "")
        self.restores.append(stdin)
        text = stdin.splitlines()
        key = (family, text[0][1:])
        new = copy.deepcopy(self.table(*key))
        for line in text[1:-1]:
            op, chain, rest = (line.split(" ", 2) + [""])[:3]
            if op.startswith(":"):
                new[op[1:]] = []
            elif op == "-N":
                assert chain not in new, line
                new[chain] = []
            elif op == "-A":
                new[chain].append(rest)
            elif op == "-D":
                match = [s for s in new[chain] if shlex.split(s) == shlex.split(rest)]
                assert match, f"Bad rule (does a matching rule exist in that chain?): {line}"
                new[chain].remove(match[0])
            elif op == "-F":
                new[chain] = []
            elif op == "-X":
                del new[chain]
            else:
                raise AssertionError(line)
        self.tables[key] = new
        return subprocess.CompletedProcess(argv, 0, "", "")


def manager(c: MasqConfig, sim: Optional[SimIptables] = None) -> Tuple[MasqManager, SimIptables]:
    sim = sim or SimIptables()
    return MasqManager(c, IptablesFirewall("nft", sim), other=NftFirewall(sim)), sim


def test_manager_apply_is_exact_and_idempotent():
    mgr, sim = manager(cfg((NET4, SUB4), (NET6, SUB6)))
    foreign = '-A POSTROUTING -s 192.0.2.0/24 -m comment --comment "other" -j MASQUERADE'
    sim.table("ipv4", "nat")["POSTROUTING"].append(foreign.split(" ", 2)[2])
    mgr.apply()
    assert sim.lines("ipv4", "nat") == [foreign] + expected_nat(NET4, SUB4)
    assert sim.lines("ipv6", "filter") == expected_filter(NET6)
    assert mgr.check() == []
    writes = len(sim.restores)
    mgr.apply()
    mgr.reconcile()
    assert len(sim.restores) == writes, "nothing to change, nothing written"


def test_manager_lease_change_leaves_only_the_new_rules():
    mgr, sim = manager(cfg((NET4, SUB4)))
    mgr.apply()
    mgr.update(cfg((NET4, NEW4)))
    assert sim.lines("ipv4", "nat") == expected_nat(NET4, NEW4)
    assert not any(SUB4 in l for t in sim.tables for l in sim.lines(*t))
    assert mgr.check() == []


def test_manager_remove_takes_everything_of_ours_but_nothing_else():
    mgr, sim = manager(cfg((NET4, SUB4), (NET6, SUB6)))
    other = "-s 192.0.2.0/24 -j ACCEPT"
    sim.table("ipv4", "filter")["FORWARD"].append(other)
    mgr.apply()
    mgr.remove()
    assert sim.lines("ipv4", "filter") == ["-A FORWARD " + other]
    assert all(not sim.lines(*t) for t in sim.tables if t != ("ipv4", "filter"))
    assert all(not {"FLANNEL-POSTRTG", "FLANNEL-FWD"} & set(t) for t in sim.tables.values())
    mgr.remove()  # again: nothing to do


def test_manager_ip_masq_off_keeps_forwarding():
    mgr, sim = manager(cfg((NET4, SUB4)))
    mgr.apply()
    mgr.update(MasqConfig((NET4,), ip_masq=False))
    assert sim.lines("ipv4", "nat") == [] and sim.lines("ipv4", "filter") == expected_filter(NET4)


def test_manager_dropped_family_is_removed():
    mgr, sim = manager(cfg((NET4, SUB4), (NET6, SUB6)))
    mgr.apply()
    mgr.update(cfg((NET4, SUB4)))
    assert sim.lines("ipv6", "nat") == [] and sim.lines("ipv6", "filter") == []
    assert sim.lines("ipv4", "nat") == expected_nat(NET4, SUB4)


def test_unusable_other_backend_is_only_logged(caplog):
    mgr, sim = manager(cfg((NET4, SUB4)))  # the sim has no nft: cleaning its tables fails
    mgr.reconcile()
    assert "could not check nftables" in caplog.text
    assert sim.lines("ipv4", "nat") == expected_nat(NET4, SUB4)


class Recorder(Firewall):
    name = "recorder"

    def __init__(self, fail: bool = False) -> None:
        super().__init__(Runner())
        self.log: List[Tuple[str, str, str]] = []
        self.fail = fail

    def apply(self, rs: RuleSet) -> None:
        self.log.append(("apply", rs.family, rs.table))

    def remove(self, rs: RuleSet) -> None:
        if self.fail:
            raise InternalError("ip6tables-nft-save failed")
        self.log.append(("remove", rs.family, rs.table))

    def chains(self, family: str, table: str, prefix: str = "") -> List[str]:
        return []


class NftRecorder(Recorder, NftFirewall):
    name = "nftables"


def test_switching_to_nftables_removes_the_iptables_rules_first():
    ipt_fw, nft_fw = Recorder(), NftRecorder()
    mgr = MasqManager(cfg((NET4, SUB4)), ipt_fw, other=nft_fw)
    mgr.update(cfg((NET4, SUB4), enable_nftables=True))
    assert mgr.fw is nft_fw and mgr._other is ipt_fw
    assert ipt_fw.log[:4] == [("remove", "ipv4", "nat"), ("remove", "ipv4", "filter"),
                              ("remove", "ipv6", "nat"), ("remove", "ipv6", "filter")]
    assert nft_fw.log[0] == ("apply", "ipv4", "flannel-ipv4")


def test_failures_on_a_configured_family_raise():
    mgr = MasqManager(cfg((NET4, SUB4)), Recorder(fail=True), clean_other_backend=False)
    with pytest.raises(InternalError):
        mgr.remove()


def test_backend_must_match_enable_nftables():
    with pytest.raises(InvalidConfig, match="EnableNFTables=true"):
        MasqManager(cfg((NET4, SUB4), enable_nftables=True), Recorder())
