"""The reference layouts (containernetworking/plugins, flanneld) as RuleSets.

Each ``*_owner`` function gives the rule set to *remove* when only the
network name and container ID are known (DEL without prevResult): the owned
chain plus the owner comment find every rule the full layout added.
"""

from __future__ import annotations

import ipaddress
from typing import Tuple

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


# --- flanneld --------------------------------------------------------------------------------

FLANNEL_MASQ, FLANNEL_FWD = "flanneld masq", "flanneld forward"


def _flannel_masq_rules(network: str, pod_cidr: str) -> Tuple[Rule, ...]:
    family, c = family_of(network), FLANNEL_MASQ
    return (Rule(mark=0x4000, target="RETURN", comment=c),
            Rule(src=pod_cidr, dst=network, target="RETURN", comment=c),
            Rule(src=network, dst=pod_cidr, target="RETURN", comment=c),
            Rule(src="!" + network, dst=pod_cidr, target="RETURN", comment=c),
            Rule(src=network, dst="!" + MULTICAST[family], target="MASQUERADE", random_fully=True, comment=c),
            Rule(src="!" + network, dst=network, target="MASQUERADE", random_fully=True, comment=c))


def flannel_masq_iptables(network: str, pod_cidr: str) -> RuleSet:
    return RuleSet(family_of(network), "nat", (
        Chain("FLANNEL-POSTRTG", _flannel_masq_rules(network, pod_cidr), owned=True),
        Chain("POSTROUTING", (Rule(target="FLANNEL-POSTRTG", comment=FLANNEL_MASQ),)),
    ))


def flannel_forward_iptables(network: str) -> RuleSet:
    c = FLANNEL_FWD
    return RuleSet(family_of(network), "filter", (
        Chain("FLANNEL-FWD", (Rule(src=network, target="ACCEPT", comment=c),
                              Rule(dst=network, target="ACCEPT", comment=c)), owned=True),
        Chain("FORWARD", (Rule(target="FLANNEL-FWD", comment=c),)),
    ))


def flannel_nft(network: str, pod_cidr: str) -> RuleSet:
    """ip flannel-ipv4 / ip6 flannel-ipv6 with base chains postrtg and forward."""
    family = family_of(network)
    return RuleSet(family, "flannel-" + family, (
        Chain("postrtg", _flannel_masq_rules(network, pod_cidr), owned=True,
              hook=Hook("nat", "postrouting", "srcnat")),
        Chain("forward", (Rule(src=network, target="ACCEPT", comment=FLANNEL_FWD),
                          Rule(dst=network, target="ACCEPT", comment=FLANNEL_FWD)), owned=True,
              hook=Hook("filter", "forward", "filter")),
    ))
