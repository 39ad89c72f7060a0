"""Portmap-shaped sample rule sets that exercise the firewall layer (DNAT, marks, multi-port
entry rules, nft base chains).  Test data only: what the portmap plugin really writes is built
in cni_flannel/portmap and checked against the Go reference in test_portmap_differential.py."""

from __future__ import annotations

import ipaddress
from typing import NamedTuple, Optional, Sequence

from cni_flannel.firewall import Chain, Hook, Rule, RuleSet
from cni_flannel.firewall._names import dnat_chain_name, dnat_comment_for
from cni_flannel.firewall.layouts import family_of


class PortMapping(NamedTuple):
    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: Optional[str] = None


HOSTPORT_DNAT, HOSTPORT_SETMARK, HOSTPORT_MASQ = "CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"


def portmap_iptables(container_ip: str, container_net: str, mappings: Sequence[PortMapping],
                     network: str, container_id: str, mark_bit: int = 13) -> RuleSet:
    family, mark = family_of(container_ip), 1 << mark_bit
    dn, c = dnat_chain_name(network, container_id), dnat_comment_for(network, container_id)
    maps = [m for m in mappings if m.host_ip is None or family_of(m.host_ip) == family]
    entry = tuple(Rule(proto=proto, dports=tuple(m.host_port for m in maps if m.protocol == proto),
                       comment=c, target=dn, insert=True)
                  for proto in sorted({m.protocol for m in maps}))
    rules = []
    for m in maps:
        base = dict(proto=m.protocol, dports=(m.host_port,),
                    dst=m.host_ip if m.host_ip and not ipaddress.ip_address(m.host_ip).is_unspecified else None)
        rules.append(Rule(src=container_net, target=HOSTPORT_SETMARK, **base))
        if family == "ipv4":
            rules.append(Rule(src="127.0.0.1", target=HOSTPORT_SETMARK, **base))
        rules.append(Rule(target="DNAT", to_addr=container_ip, to_port=m.container_port, **base))
    local = Rule(dst_local=True, target=HOSTPORT_DNAT, keep=True)
    return RuleSet(family, "nat", (
        Chain(HOSTPORT_SETMARK, (Rule(comment="CNI portfwd masquerade mark", target="MARK",
                                      set_mark=mark, keep=True),)),
        Chain(HOSTPORT_MASQ, (Rule(mark=mark, target="MASQUERADE", keep=True),)),
        Chain("POSTROUTING", (Rule(comment="CNI portfwd requiring masquerade", target=HOSTPORT_MASQ,
                                   insert=True, keep=True),)),
        Chain(dn, tuple(rules), owned=True),
        Chain(HOSTPORT_DNAT, entry),
        Chain("PREROUTING", (local,)),
        Chain("OUTPUT", (local,)),
    ), comment=c)


def portmap_iptables_owner(family: str, network: str, container_id: str) -> RuleSet:
    return RuleSet(family, "nat", (Chain(dnat_chain_name(network, container_id), owned=True),),
                   comment=dnat_comment_for(network, container_id))


NFT_HOSTPORT_TABLE = "cni_hostport"


def portmap_nft(container_ip: str, mappings: Sequence[PortMapping], container_id: str) -> RuleSet:
    """ip/ip6 cni_hostport, rules commented with the container ID (as upstream)."""
    family = family_of(container_ip)
    maps = [m for m in mappings if m.host_ip is None or family_of(m.host_ip) == family]
    hostports, hostip = [], []
    for m in maps:
        specific = m.host_ip is not None and not ipaddress.ip_address(m.host_ip).is_unspecified
        rule = Rule(dst=m.host_ip if specific else None, proto=m.protocol, dports=(m.host_port,),
                    target="DNAT", to_addr=container_ip, to_port=m.container_port, comment=container_id)
        (hostip if specific else hostports).append(rule)
    masq = [Rule(src=container_ip, dst=container_ip, target="MASQUERADE", comment=container_id)]
    if family == "ipv4":
        masq.append(Rule(src="127.0.0.1", dst=container_ip, target="MASQUERADE", comment=container_id))
    return RuleSet(family, NFT_HOSTPORT_TABLE, (
        Chain("hostports", tuple(hostports)),
        Chain("hostip_hostports", tuple(hostip)),
        Chain("prerouting", (Rule(target="hostip_hostports", keep=True),
                             Rule(target="hostports", keep=True)), hook=Hook("nat", "prerouting", "dstnat")),
        Chain("output", (Rule(target="hostip_hostports", keep=True),
                         Rule(dst_local=True, target="hostports", keep=True)), hook=Hook("nat", "output", -100)),  # "dstnat" is prerouting-only
        Chain("masquerading", tuple(masq), hook=Hook("nat", "postrouting", "srcnat")),
    ), comment=container_id)


def portmap_nft_owner(family: str, container_id: str) -> RuleSet:
    return RuleSet(family, NFT_HOSTPORT_TABLE, (), comment=container_id)


