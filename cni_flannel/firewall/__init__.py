"""Firewall rules as data, applied in one transaction to iptables (legacy or
nft) or nftables -- idempotent, and safe beside other writers.

    rs = RuleSet("ipv4", "nat", (
        Chain("POSTROUTING", (Rule(src="10.244.1.5", target=chain, comment=c),)),
        Chain(chain, (Rule(dst="10.244.1.0/24", target="ACCEPT", comment=c),
                      Rule(dst="!224.0.0.0/4", target="MASQUERADE", comment=c)), owned=True),
    ), comment=c)
    fw = backend_for()          # iptables-legacy or iptables-nft, as the node uses
    fw.apply(rs); fw.check(rs) == []; fw.remove(rs)

Values are validated when the objects are built (InvalidConfig, code 7);
iptables/nft failures surface as CNI errors carrying the command's stderr.
"""

from __future__ import annotations

from typing import Optional

from ._backend import Firewall
from ._exec import Runner
from ._iptables import IptablesFirewall, detect_mode
from ._model import Chain, Hook, NftChainName, Rule, RuleSet
from ._names import chain_name, comment_for, dnat_chain_name, dnat_comment_for
from ._nft import NftFirewall

BACKENDS = ("iptables", "iptables-nft", "iptables-legacy", "nftables")

__all__ = ["BACKENDS", "Chain", "Firewall", "Hook", "IptablesFirewall", "NftChainName", "NftFirewall",
           "Rule", "RuleSet", "Runner", "backend_for", "chain_name", "comment_for", "detect_mode",
           "dnat_chain_name", "dnat_comment_for"]


def backend_for(prefer: Optional[str] = None, runner: Optional[Runner] = None) -> Firewall:
    """The Firewall to use. prefer: None or "iptables" (detect legacy vs nft like
    kube-proxy), "iptables-nft", "iptables-legacy" or "nftables"."""
    runner = runner or Runner()
    if prefer in (None, "iptables"):
        return IptablesFirewall(detect_mode(runner), runner)
    if prefer in ("iptables-nft", "iptables-legacy"):
        return IptablesFirewall(prefer.split("-", 1)[1], runner)
    if prefer == "nftables":
        return NftFirewall(runner)
    from cni_flannel.cni.errors import InvalidConfig

    raise InvalidConfig(f"unknown firewall backend {prefer!r}; use one of {', '.join(BACKENDS)}")
