"""Firewall layer against the real tools, each test in its own network namespace.

For iptables-nft, iptables-legacy and nftables and every reference layout:
apply -> check passes; apply again -> nothing changes; remove -> check fails
and nothing of ours is left; remove again -> success, nothing changes. Plus:
other writers' rules survive, and DEL without the config finds everything.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from typing import Callable, Dict, List

import pytest

from cni_flannel.firewall import IptablesFirewall, NftFirewall, RuleSet, Runner
from cni_flannel.firewall import _iptables as ipt
from cni_flannel.firewall import _nft as nft
from cni_flannel.firewall import layouts as L
from tests import firewall_samples as S

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

BACKENDS = ["iptables-nft", "iptables-legacy", "nftables"]
PORTS = [S.PortMapping(8080, 80), S.PortMapping(8081, 81), S.PortMapping(53, 53, "udp"),
         S.PortMapping(8443, 443, "tcp", "192.0.2.1"), S.PortMapping(9443, 443, "tcp", "2001:db8::1")]

IPTABLES_LAYOUTS: Dict[str, Callable[[], RuleSet]] = {
    "ipmasq4": lambda: L.ipmasq_iptables("10.244.1.5", "10.244.1.0/24", "cbr0", "c1"),
    "ipmasq6": lambda: L.ipmasq_iptables("fd00:1::5", "fd00:1::/64", "cbr0", "c1"),
    "portmap4": lambda: S.portmap_iptables("10.244.1.5", "10.244.1.0/24", PORTS, "cbr0", "c1"),
    "portmap6": lambda: S.portmap_iptables("fd00:1::5", "fd00:1::/64", PORTS, "cbr0", "c1"),
    "flannel-masq4": lambda: L.flannel_masq_iptables("10.244.0.0/16", "10.244.1.0/24"),
    "flannel-masq6": lambda: L.flannel_masq_iptables("fd00::/48", "fd00:0:0:1::/64"),
    "flannel-fwd4": lambda: L.flannel_forward_iptables("10.244.0.0/16"),
}
NFT_LAYOUTS: Dict[str, Callable[[], RuleSet]] = {
    "ipmasq4": lambda: L.ipmasq_nft("10.244.1.5", "10.244.1.0/24", "cbr0", "eth0", "c1"),
    "ipmasq6": lambda: L.ipmasq_nft("fd00:1::5", "fd00:1::/64", "cbr0", "eth0", "c1"),
    "portmap4": lambda: S.portmap_nft("10.244.1.5", PORTS, "c1"),
    "portmap6": lambda: S.portmap_nft("fd00:1::5", PORTS, "c1"),
    "flannel4": lambda: L.flannel_nft("10.244.0.0/16", "10.244.1.0/24"),
    "flannel6": lambda: L.flannel_nft("fd00::/48", "fd00:0:0:1::/64"),
}
CASES = [(b, n) for b in BACKENDS[:2] for n in IPTABLES_LAYOUTS] + [("nftables", n) for n in NFT_LAYOUTS]


# --- namespace and tools ---------------------------------------------------------------------

def sh(argv: List[str], stdin: str = "", check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)
    if check and done.returncode:
        raise AssertionError(f"{argv} exited {done.returncode}: {done.stderr}")
    return done


def make_netns(tag: str = "fw") -> str:
    name = f"cft{secrets.token_hex(2)}-{tag}"
    sh(["ip", "netns", "add", name])
    return name


def delete_netns(name: str) -> None:
    for pid in sh(["ip", "netns", "pids", name], check=False).stdout.split():
        try:
            os.kill(int(pid), 9)
        except ProcessLookupError:
            pass
    sh(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def netns():
    name = make_netns()
    try:
        yield name
    finally:
        delete_netns(name)


def require_backend(ns: str, backend: str) -> None:
    probe = {"iptables-nft": ["iptables-nft-save", "-t", "nat"],
             "iptables-legacy": ["iptables-legacy-save", "-t", "nat"],
             "nftables": ["nft", "list", "ruleset"]}[backend]
    done = sh(["ip", "netns", "exec", ns, *probe], check=False)
    if done.returncode:
        pytest.skip(f"{backend} unusable here (kernel or tools lack it): {done.stderr.strip()}")


def firewall(ns: str, backend: str):
    require_backend(ns, backend)
    runner = Runner.in_netns(ns)
    return NftFirewall(runner) if backend == "nftables" else IptablesFirewall(backend.split("-")[1], runner)


def dump(ns: str, backend: str, family: str = "ipv4") -> List[str]:
    """Everything the backend shows, without timestamps/counters/tables merely loaded."""
    if backend == "nftables":
        text = sh(["ip", "netns", "exec", ns, "nft", "list", "ruleset"]).stdout
    else:
        text = sh(["ip", "netns", "exec", ns, ipt.tool(backend.split("-")[1], family, "save")]).stdout
    return [line for line in (line.rstrip() for line in text.splitlines())
            if line and not line.startswith("#") and line not in ("COMMIT",)
            and not line.startswith("*") and not re.match(r"^:\S+ (ACCEPT|DROP) ", line)]


def families(rs: RuleSet) -> List[str]:
    return ["ipv4", "ipv6"] if rs.family == "inet" else [rs.family]


def ours_left(fw, backend: str, rs: RuleSet, lines: List[str]) -> List[str]:
    """Lines that still show something the rule set removes."""
    owned = {c.name for c in rs.chains if c.owned}
    if backend == "nftables":
        texts = {nft.rule_text(r, nft.NFT_FAMILIES[rs.family]) for c in rs.chains for r in c.rules if not r.keep}
        quoted = f'"{rs.comment}"' if rs.comment else None
        return [l for l in lines if " ".join(l.split()) in texts or (quoted and quoted in l)
                or re.search(r"\b(chain|jump|goto) (%s)\b" % "|".join(map(re.escape, owned or {"-"})), l)]
    specs = {ipt.tokens(ipt.rule_spec(r)) for c in rs.chains for r in c.rules if not r.keep}
    left = []
    for line in lines:
        toks = ipt.tokens(line)
        if (line[1:].split(" ")[0] in owned or (toks and (toks[2:] in specs or toks[-1] in owned))
                or (rs.comment and toks and rs.comment in toks)):
            left.append(line)
    return left


# --- the lifecycle ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend,layout", CASES)
def test_apply_check_reapply_remove_remove(netns, backend, layout):
    rs = (NFT_LAYOUTS if backend == "nftables" else IPTABLES_LAYOUTS)[layout]()
    fw = firewall(netns, backend)
    fam = rs.family if rs.family != "inet" else "ipv4"
    before = dump(netns, backend, fam)

    fw.apply(rs)
    assert fw.check(rs) == []
    applied = dump(netns, backend, fam)
    assert ours_left(fw, backend, rs, applied), "the rule set should be visible"

    calls = fw.runner.calls
    fw.apply(rs)
    assert fw.runner.calls - calls == 1, "a satisfied apply only takes the snapshot"
    assert dump(netns, backend, fam) == applied, "apply again must not duplicate anything"

    fw.remove(rs)
    assert fw.check(rs) != []
    removed = dump(netns, backend, fam)
    assert ours_left(fw, backend, rs, removed) == []
    assert set(before) <= set(removed)

    fw.remove(rs)
    assert dump(netns, backend, fam) == removed


@pytest.mark.parametrize("backend", BACKENDS)
def test_remove_without_config_finds_everything(netns, backend):
    fw = firewall(netns, backend)
    if backend == "nftables":
        pairs = [(L.ipmasq_nft("10.244.1.5", "10.244.1.0/24", "cbr0", "eth0", "c1"),
                  L.ipmasq_nft_owner("cbr0", "eth0", "c1")),
                 (S.portmap_nft("10.244.1.5", PORTS, "c1"), S.portmap_nft_owner("ipv4", "c1"))]
    else:
        pairs = [(L.ipmasq_iptables("10.244.1.5", "10.244.1.0/24", "cbr0", "c1"),
                  L.ipmasq_iptables_owner("ipv4", "cbr0", "c1")),
                 (S.portmap_iptables("10.244.1.5", "10.244.1.0/24", PORTS, "cbr0", "c1"),
                  S.portmap_iptables_owner("ipv4", "cbr0", "c1"))]
    for full, owner in pairs:
        fw.apply(full)
        fw.remove(owner)
        assert ours_left(fw, backend, full, dump(netns, backend)) == []
        assert fw.check(full) != []
        fw.remove(owner)


KUBE = """*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAAA - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:CNI-DN-someoneelse000000000 - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -s 10.244.1.5/32 -m comment --comment "someone else" -j RETURN
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-AAAA
-A KUBE-SVC-AAAA -p tcp -j DNAT --to-destination 192.0.2.10:6443
-A CNI-HOSTPORT-DNAT -p tcp -m multiport --dports 7000 -j CNI-DN-someoneelse000000000
-A CNI-DN-someoneelse000000000 -p tcp -m tcp --dport 7000 -j DNAT --to-destination 10.244.1.9:80
COMMIT
"""


@pytest.mark.parametrize("backend", BACKENDS[:2])
def test_other_writers_rules_survive_iptables(netns, backend):
    fw = firewall(netns, backend)
    mode = backend.split("-")[1]
    sh(["ip", "netns", "exec", netns, ipt.tool(mode, "ipv4", "restore"), "--noflush", "-w", "5"], KUBE)
    foreign = dump(netns, backend)
    sets = [L.ipmasq_iptables("10.244.1.5", "10.244.1.0/24", "cbr0", "c1"),
            S.portmap_iptables("10.244.1.5", "10.244.1.0/24", PORTS, "cbr0", "c1"),
            L.flannel_masq_iptables("10.244.0.0/16", "10.244.1.0/24")]
    for rs in sets:
        fw.apply(rs)
        fw.apply(rs)
    assert all(fw.check(rs) == [] for rs in sets)
    for rs in sets:
        fw.remove(rs)
        fw.remove(rs)
    after = dump(netns, backend)
    for line in foreign:
        assert after.count(line) == foreign.count(line), line


def test_other_writers_rules_survive_nftables(netns):
    fw = firewall(netns, "nftables")
    mine = L.ipmasq_nft("10.244.1.5", "10.244.1.0/24", "cbr0", "eth0", "c1")
    other = L.ipmasq_nft("10.244.1.6", "10.244.1.0/24", "cbr0", "eth0", "c2")
    fw.apply(other)
    sh(["ip", "netns", "exec", netns, "nft", "-f", "-"],
       "add table ip kube-proxy\nadd chain ip kube-proxy svc\nadd rule ip kube-proxy svc ip daddr 10.96.0.1 accept\n")
    foreign = dump(netns, "nftables")
    fw.apply(mine)
    fw.remove(mine)
    fw.remove(mine)
    assert dump(netns, "nftables") == foreign
    assert fw.check(other) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_comments_with_punctuation_round_trip(netns, backend):
    """Quotes (iptables), braces, semicolons, hashes stay one comment and match on re-apply."""
    from cni_flannel.firewall import Chain, Rule
    fw = firewall(netns, backend)
    text = 'a "b" {c}; #d $e -j DROP' if backend != "nftables" else "a {c}; #d $e -j DROP"
    table = "nat" if backend != "nftables" else "cftpunct"
    rs = RuleSet("ipv4", table, (Chain("CFT-PUNCT", (Rule(target="RETURN", comment=text),)),), comment=text)
    fw.apply(rs)
    assert fw.check(rs) == [] and text in fw.comments("ipv4", table)
    calls = fw.runner.calls
    fw.apply(rs)
    assert fw.runner.calls - calls == 1
    fw.remove(rs)
    assert text not in fw.comments("ipv4", table)
    assert fw.chains("ipv4", table, "CFT-") == ["CFT-PUNCT"]  # shared chains stay


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_rule_option_round_trips(netns, backend, family):
    """What we render is what the tool prints back, so check and re-apply find it."""
    from cni_flannel.firewall import Chain, Rule
    fw = firewall(netns, backend)
    v4 = family == "ipv4"
    net, host, other = ("10.0.0.0/8", "192.0.2.7/24", "10.0.0.2") if v4 else ("fd00::/8", "2001:db8::7/64", "fd00::2")
    rules = (Rule(src="!" + net, dst=host, iif="eth0", oif="!cni0", proto="udp", dports=(53,), target="RETURN"),
             Rule(proto="tcp", dports=(80, 81), dst_local=True, mark=0x4000, comment="plain", target="RETURN"),
             Rule(proto="sctp", target="RETURN"),
             Rule(proto="udp", target="ACCEPT"),
             Rule(dst=other, proto="udp", dports=(53,), target="DNAT", to_addr=other, to_port=5353),
             Rule(proto="tcp", target="DNAT", to_addr=other, to_port=80),
             Rule(target="MARK", set_mark=0x2000),
             Rule(src=net, target="MASQUERADE", random_fully=True),
             Rule(src=other, target="MASQUERADE"))
    table = "nat" if backend != "nftables" else "cftopts"
    rs = RuleSet(family, table, (Chain("CFT-OPTS", rules), Chain("CFT-OWNED", rules, owned=True),
                                 Chain("CFT-INS", (Rule(target="ACCEPT", insert=True),
                                                   Rule(target="RETURN", insert=True)))))
    fw.apply(rs)
    assert fw.check(rs) == []
    calls = fw.runner.calls
    fw.apply(rs)
    assert fw.runner.calls - calls == 1
    fw.remove(rs)
    assert fw.chains(family, table, "CFT-") == ["CFT-INS", "CFT-OPTS"]
    assert len(fw.check(rs)) == len(rules) + 1 + 2
