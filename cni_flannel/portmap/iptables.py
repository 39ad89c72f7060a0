"""The reference iptables layout (plugins/meta/portmap/portmap.go) as RuleSets.

All in the nat table, per family:

    PREROUTING, OUTPUT    -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
    CNI-HOSTPORT-DNAT     -p <proto> -m comment --comment "dnat name: \\"<net>\\" id: \\"<cid>\\""
                          -m multiport --dports <up to 15 host ports> [conditions] -j CNI-DN-<hash>
    CNI-DN-<hash>         per mapping, in order: [-s <pod net> -j <setmark>]
                          [-s 127.0.0.1 -j <setmark>] (IPv4) and -j DNAT --to-destination
    CNI-HOSTPORT-SETMARK  -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark M/M
    CNI-HOSTPORT-MASQ     -m mark --mark M/M -j MASQUERADE
    POSTROUTING (first)   -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ

The shared chains are created when missing and never flushed; their
infrastructure rules are ``keep`` (other pods rely on them).  CNI-DN-<hash>
is ours alone.  As upstream, the entry rules list every host port of a
protocol, also those of mappings whose hostIP is of the other family.
"""

from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple

from cni_flannel.firewall import Chain, Rule, RuleSet, chain_name, dnat_chain_name, dnat_comment_for

from .config import Interface, PortmapConfig

TABLE = "nat"
HOSTPORT_DNAT = "CNI-HOSTPORT-DNAT"
HOSTPORT_SETMARK = "CNI-HOSTPORT-SETMARK"
HOSTPORT_MASQ = "CNI-HOSTPORT-MASQ"
SETMARK_COMMENT = "CNI portfwd masquerade mark"
MASQ_COMMENT = "CNI portfwd requiring masquerade"
MULTIPORT_MAX = 15
LOCALHOST = "127.0.0.1"


def old_snat_chain_name(network: str, container_id: str) -> str:
    """``CNI-SN-<hash>``: made by old plugin versions; DEL still tears it down."""
    return chain_name(network, container_id, "SN-")


def _chunks(ports: Sequence[int]) -> Iterable[Tuple[int, ...]]:
    for i in range(0, len(ports), MULTIPORT_MAX):
        yield tuple(ports[i:i + MULTIPORT_MAX])


def entry_rules(conf: PortmapConfig, family: str, dn_chain: str, comment: str) -> Tuple[Rule, ...]:
    extra = conf.conditions.get(family)
    matches = extra.fields() if extra is not None else {}
    rules = []
    for proto in sorted({m.protocol for m in conf.mappings}):
        ports = [m.host_port for m in conf.mappings if m.protocol == proto]
        for chunk in _chunks(ports):
            rules.append(Rule(proto=proto, dports=chunk, comment=comment, multiport=True,
                              comment_first=True, target=dn_chain, **matches))
    return tuple(rules)


def dnat_rules(conf: PortmapConfig, family: str, net: Interface) -> Tuple[Rule, ...]:
    setmark = conf.external_set_mark_chain or HOSTPORT_SETMARK
    # masqAll marks every source; -s 0.0.0.0/0 is no match at all, so iptables-save omits it
    hairpin_src = None if conf.masq_all else str(net)
    rules: List[Rule] = []
    for m in conf.mappings:
        if not m.applies_to(family):
            continue
        base = dict(proto=m.protocol, dports=(m.host_port,), dst=m.dst)
        if conf.snat:
            rules.append(Rule(src=hairpin_src, target=setmark, **base))
            if family == "ipv4" and not conf.masq_all:
                rules.append(Rule(src=LOCALHOST, target=setmark, **base))
        rules.append(Rule(target="DNAT", to_addr=str(net.ip), to_port=m.container_port, **base))
    return tuple(rules)


def masquerade_chains(mark: int) -> Tuple[Chain, ...]:
    return (
        Chain(HOSTPORT_SETMARK, (Rule(comment=SETMARK_COMMENT, target="MARK", set_mark=mark, keep=True),)),
        Chain(HOSTPORT_MASQ, (Rule(mark=mark, target="MASQUERADE", keep=True),)),
        Chain("POSTROUTING", (Rule(comment=MASQ_COMMENT, target=HOSTPORT_MASQ, insert=True, keep=True),)),
    )


def container_ruleset(conf: PortmapConfig, family: str, container_id: str) -> RuleSet:
    """Everything one container's mappings need in one family."""
    net = conf.container_nets[family]
    dn = dnat_chain_name(conf.network, container_id)
    comment = dnat_comment_for(conf.network, container_id)
    chains: Tuple[Chain, ...] = ()
    if conf.snat and conf.external_set_mark_chain is None:
        chains += masquerade_chains(conf.mark)
    local = Rule(dst_local=True, target=HOSTPORT_DNAT, keep=True)
    chains += (
        Chain(HOSTPORT_DNAT, entry_rules(conf, family, dn, comment)),
        Chain("PREROUTING", (local,)),
        Chain("OUTPUT", (local,)),
        Chain(dn, dnat_rules(conf, family, net), owned=True),
    )
    return RuleSet(family, TABLE, chains, comment=comment)


def owner_ruleset(family: str, network: str, container_id: str) -> RuleSet:
    """What DEL removes knowing only the names: the per-container chains (and every
    jump to them) and every rule carrying the container's comment."""
    return RuleSet(family, TABLE, (
        Chain(dnat_chain_name(network, container_id), owned=True),
        Chain(old_snat_chain_name(network, container_id), owned=True),
    ), comment=dnat_comment_for(network, container_id))


def stale_ruleset(family: str, owners: Sequence[Tuple[str, str]]) -> RuleSet:
    """GC: the per-container chains of (network, container ID) pairs, in one transaction."""
    return RuleSet(family, TABLE, tuple(Chain(dnat_chain_name(n, c), owned=True) for n, c in owners))


def owner_of(comment: str) -> Tuple[str, str]:
    """('<net>', '<cid>') from ``dnat name: "<net>" id: "<cid>"``; ('', '') otherwise."""
    head, tail = 'dnat name: "', '"'
    if not comment.startswith(head) or not comment.endswith(tail) or '" id: "' not in comment:
        return "", ""
    network, cid = comment[len(head):-len(tail)].split('" id: "', 1)
    return network, cid
