"""The reference layouts (containernetworking/plugins, flanneld) as RuleSets.

Each ``*_owner`` function gives the rule set to *remove* when only the
network name and container ID are known (DEL without prevResult): the owned
chain plus the owner comment find every rule the full layout added.
"""

from __future__ import annotations

import ipaddress
from typing import Optional, Tuple

from cni_flannel.cni.errors import InvalidConfig

from ._model import Chain, Hook, Rule, RuleSet
from ._names import chain_name, comment_for, nft_comment_for

MULTICAST = {"ipv4": "224.0.0.0/4", "ipv6": "ff00::/8"}


def family_of(address: str) -> str:
    return "ipv6" if ipaddress.ip_network(address, strict=False).version == 6 else "ipv4"


# --- bridge ipMasq ---------------------------------------------------------------------------

def ipmasq_iptables(ip: str, subnet: str, network: str, container_id: str) -> RuleSet:
    """nat: POSTROUTING -s <ip> -j CNI-<hash>; CNI-<hash>: -d <subnet> ACCEPT, ! -d multicast MASQUERADE."""
    family, chain, c = family_of(ip), chain_name(network, container_id), comment_for(network, container_id)
    return RuleSet(family, "nat", (
        Chain(chain, (Rule(dst=subnet, target="ACCEPT", comment=c),
                      Rule(dst="!" + MULTICAST[family], target="MASQUERADE", comment=c)), owned=True),
        Chain("POSTROUTING", (Rule(src=ip, target=chain, comment=c),)),
    ), comment=c)


def ipmasq_iptables_owner(family: str, network: str, container_id: str) -> RuleSet:
    return RuleSet(family, "nat", (Chain(chain_name(network, container_id), owned=True),),
                   comment=comment_for(network, container_id))


NFT_MASQ_TABLE = "cni_plugins_masquerade"


def _nft_masq_base() -> Tuple[Chain, Chain]:
    return (Chain("masq_checks"),
            Chain("postrouting", (Rule(dst=MULTICAST["ipv4"], target="RETURN", keep=True),
                                  Rule(dst=MULTICAST["ipv6"], target="RETURN", keep=True),
                                  Rule(target="masq_checks", keep=True)),
                  hook=Hook("nat", "postrouting", "srcnat")))


def ipmasq_nft(ip: str, subnet: str, network: str, ifname: str, container_id: str) -> RuleSet:
    """inet cni_plugins_masquerade: masq_checks gets `saddr <ip> daddr != <subnet> masquerade`."""
    c = nft_comment_for(network, ifname, container_id)
    checks, post = _nft_masq_base()
    rule = Rule(src=ip, dst="!" + subnet, target="MASQUERADE", comment=c)
    return RuleSet("inet", NFT_MASQ_TABLE, (Chain(checks.name, (rule,)), post), comment=c)


def ipmasq_nft_owner(network: str, ifname: str, container_id: str) -> RuleSet:
    return RuleSet("inet", NFT_MASQ_TABLE, (), comment=nft_comment_for(network, ifname, container_id))


# --- flanneld ---------------------------------------------------------------------------------
# flannel-io/flannel pkg/trafficmngr/iptables/iptables.go (masqRules, masqIP6Rules, forwardRules)
# and pkg/trafficmngr/nftables/nftables.go.  The nftables layout keeps the iptables semantics on
# purpose, where upstream's knftables rules differ from its own iptables mode: the mark match is
# masked (0x4000/0x4000, like iptables, not "meta mark 0x4000" equality), the fourth rule is
# "saddr != <Network> daddr <podCIDR> return" (upstream's "saddr != <podCIDR> daddr <Network>"
# makes its last rule dead), and rules carry the comments (upstream comments only chains/table).
# Switching EnableNFTables thus never changes who is masqueraded.

FLANNEL_MASQ, FLANNEL_FWD = "flanneld masq", "flanneld forward"
FLANNEL_POSTRTG, FLANNEL_FWD_CHAIN = "FLANNEL-POSTRTG", "FLANNEL-FWD"
NFT_POSTRTG, NFT_FORWARD = "postrtg", "forward"
KUBE_PROXY_MARK = 0x4000  # kube-proxy's masquerade bit: it masquerades those itself
NFT_POSTRTG_HOOK = Hook("nat", "postrouting", "srcnat")
NFT_FORWARD_HOOK = Hook("filter", "forward", "filter")


def flannel_nft_table(family: str) -> str:
    return "flannel-" + family


def _flannel_masq_rules(network: str, pod_cidr: str, random_fully: bool = True) -> Tuple[Rule, ...]:
    family, c, r = family_of(network), FLANNEL_MASQ, random_fully
    if family_of(pod_cidr) != family:
        raise InvalidConfig(f"flannel lease {pod_cidr} and Network {network} are of different IP families")
    return (Rule(mark=KUBE_PROXY_MARK, target="RETURN", comment=c),
            Rule(src=pod_cidr, dst=network, target="RETURN", comment=c),   # pod -> cluster: no NAT
            Rule(src=network, dst=pod_cidr, target="RETURN", comment=c),   # cluster -> pod: no NAT
            Rule(src="!" + network, dst=pod_cidr, target="RETURN", comment=c),  # keep client IPs
            Rule(src=network, dst="!" + MULTICAST[family], target="MASQUERADE", random_fully=r, comment=c),
            Rule(src="!" + network, dst=network, target="MASQUERADE", random_fully=r, comment=c))


def _flannel_forward_rules(network: str) -> Tuple[Rule, ...]:
    return (Rule(src=network, target="ACCEPT", comment=FLANNEL_FWD),
            Rule(dst=network, target="ACCEPT", comment=FLANNEL_FWD))


def flannel_masq_iptables(network: str, pod_cidr: str, random_fully: bool = True) -> RuleSet:
    """nat: POSTROUTING -j FLANNEL-POSTRTG (appended, as upstream); the chain holds the six rules."""
    return RuleSet(family_of(network), "nat", (
        Chain(FLANNEL_POSTRTG, _flannel_masq_rules(network, pod_cidr, random_fully), owned=True),
        Chain("POSTROUTING", (Rule(target=FLANNEL_POSTRTG, comment=FLANNEL_MASQ),)),
    ), comment=FLANNEL_MASQ)


def flannel_forward_iptables(network: str) -> RuleSet:
    """filter: FORWARD -j FLANNEL-FWD; the chain accepts from and to the Network."""
    return RuleSet(family_of(network), "filter", (
        Chain(FLANNEL_FWD_CHAIN, _flannel_forward_rules(network), owned=True),
        Chain("FORWARD", (Rule(target=FLANNEL_FWD_CHAIN, comment=FLANNEL_FWD),)),
    ), comment=FLANNEL_FWD)


def flannel_masq_iptables_owner(family: str) -> RuleSet:
    """Removes FLANNEL-POSTRTG, the jumps to it and every "flanneld masq" rule (older flannel
    versions wrote theirs straight into POSTROUTING) -- no addresses needed."""
    return RuleSet(family, "nat", (Chain(FLANNEL_POSTRTG, owned=True),), comment=FLANNEL_MASQ)


def flannel_forward_iptables_owner(family: str) -> RuleSet:
    return RuleSet(family, "filter", (Chain(FLANNEL_FWD_CHAIN, owned=True),), comment=FLANNEL_FWD)


def flannel_nft(network: str, pod_cidr: Optional[str] = None, masq: bool = True, forward: bool = True,
                random_fully: bool = True) -> RuleSet:
    """ip flannel-ipv4 / ip6 flannel-ipv6: base chains postrtg (nat, srcnat) and forward (filter)."""
    family, chains = family_of(network), []
    if masq:
        if pod_cidr is None:
            raise InvalidConfig(f"flannel masquerade rules for {network} need the node's lease subnet")
        chains.append(Chain(NFT_POSTRTG, _flannel_masq_rules(network, pod_cidr, random_fully),
                            owned=True, hook=NFT_POSTRTG_HOOK))
    if forward:
        chains.append(Chain(NFT_FORWARD, _flannel_forward_rules(network), owned=True, hook=NFT_FORWARD_HOOK))
    return RuleSet(family, flannel_nft_table(family), tuple(chains))


def flannel_nft_owner(family: str, masq: bool = True, forward: bool = True) -> RuleSet:
    """Removes our chains from flannel-<family> (the table is ours alone)."""
    chains = ((Chain(NFT_POSTRTG, owned=True, hook=NFT_POSTRTG_HOOK),) * masq
              + (Chain(NFT_FORWARD, owned=True, hook=NFT_FORWARD_HOOK),) * forward)
    return RuleSet(family, flannel_nft_table(family), chains)
