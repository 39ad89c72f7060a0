"""The reference nftables layout (plugins/meta/portmap/portmap_nftables.go) as RuleSets.

Tables ``ip cni_hostport`` and ``ip6 cni_hostport``; every per-container rule
carries the container ID as its comment (so the reference's DEL finds ours
and ours finds its):

    prerouting  nat hook prerouting priority dstnat
                [conditions] jump hostip_hostports
                [conditions] fib daddr type local jump hostports
    output      nat hook output priority -100 — the same two rules
    hostip_hostports   ip daddr <hostIP> <proto> dport <hostPort> dnat to <pod>:<port>
    hostports          <proto> dport <hostPort> dnat to <pod>:<port>
    masquerading       nat hook postrouting priority srcnat (snat only)
                       ip saddr <pod> ip daddr <pod> masquerade       (hairpin)
                       ip saddr 127.0.0.1 ip daddr <pod> masquerade  (IPv4 localhost)

Unlike the reference (GHSA-jv3w-x3r3-g6rm), prerouting reaches ``hostports``
only for packets addressed to this node (``fib daddr type local``), so a
mapping without hostIP never captures traffic passing through to other
hosts; a hostIP mapping matches exactly that destination.  The hook chains
hold only those two fixed rules and are rewritten when they differ, as the
reference flushes and refills them on every ADD.
"""

from __future__ import annotations

from typing import List, Tuple

from cni_flannel.firewall import Chain, Hook, Rule, RuleSet

from .config import PortmapConfig

TABLE = "cni_hostport"
HOSTPORTS, HOSTIP_HOSTPORTS, MASQUERADING = "hostports", "hostip_hostports", "masquerading"
LOCALHOST = "127.0.0.1"


def hook_chains(conf: PortmapConfig, family: str) -> Tuple[Chain, ...]:
    extra = conf.conditions.get(family)
    matches = extra.fields() if extra is not None else {}
    entry = (Rule(target=HOSTIP_HOSTPORTS, **matches),
             Rule(dst_local=True, target=HOSTPORTS, **matches))
    return (Chain("prerouting", entry, owned=True, hook=Hook("nat", "prerouting", "dstnat")),
            # the dstnat keyword is prerouting-only; output takes the number
            Chain("output", entry, owned=True, hook=Hook("nat", "output", -100)))


def container_ruleset(conf: PortmapConfig, family: str, container_id: str) -> RuleSet:
    net = conf.container_nets[family]
    pod = str(net.ip)
    hostports: List[Rule] = []
    hostip: List[Rule] = []
    for m in conf.mappings:
        if not m.applies_to(family):
            continue
        rule = Rule(dst=m.dst, proto=m.protocol, dports=(m.host_port,), target="DNAT",
                    to_addr=pod, to_port=m.container_port, comment=container_id)
        (hostip if m.dst is not None else hostports).append(rule)
    chains = (Chain(HOSTPORTS, tuple(hostports)), Chain(HOSTIP_HOSTPORTS, tuple(hostip)))
    chains += hook_chains(conf, family)
    if conf.snat:
        masq = [Rule(src=pod, dst=pod, target="MASQUERADE", comment=container_id)]
        if family == "ipv4":
            masq.append(Rule(src=LOCALHOST, dst=pod, target="MASQUERADE", comment=container_id))
        chains += (Chain(MASQUERADING, tuple(masq), hook=Hook("nat", "postrouting", "srcnat")),)
    return RuleSet(family, TABLE, chains, comment=container_id)


def owner_ruleset(family: str, container_id: str) -> RuleSet:
    """DEL: every rule in the table commented with the container ID."""
    return RuleSet(family, TABLE, (), comment=container_id)
