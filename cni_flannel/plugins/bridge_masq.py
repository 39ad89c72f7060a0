"""bridge's ipMasq: the reference's masquerade rules through the firewall layer.

iptables (nat): POSTROUTING ``-s <ip> -j CNI-<hash>``; CNI-<hash>: ``-d <subnet>
-j ACCEPT``, ``! -d 224.0.0.0/4 -j MASQUERADE``; comment ``name: "<net>" id:
"<cid>"``.  nftables: table ``inet cni_plugins_masquerade``, chain
``masq_checks``.  Removal goes by chain name / comment only — no addresses are
needed, so DEL works with an empty or deleted CNI_NETNS (upstream leaks here,
plugins#810).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Iterable, List, Optional, Set

from cni_flannel.cni.result import IPConfig
from cni_flannel.plugins.bridge_config import BridgeConfig

NFTABLES = "nftables"


def _families() -> List[str]:
    return ["ipv4", "ipv6"] if os.path.exists("/proc/net/if_inet6") else ["ipv4"]


def _firewall(conf: BridgeConfig):
    from cni_flannel.firewall import NftFirewall, backend_for

    return NftFirewall() if conf.ip_masq_backend == NFTABLES else backend_for("iptables")


def _rulesets(conf: BridgeConfig, cid: str, ifname: str, ips: Iterable[IPConfig]) -> list:
    from cni_flannel.firewall import layouts

    out = []
    for ipc in ips:
        iface = ipaddress.ip_interface(ipc.address)
        ip, subnet = str(iface.ip), str(iface.network)
        if conf.ip_masq_backend == NFTABLES:
            out.append(layouts.ipmasq_nft(ip, subnet, conf.network, ifname, cid))
        else:
            out.append(layouts.ipmasq_iptables(ip, subnet, conf.network, cid))
    return out


def _owners(conf: BridgeConfig, cid: str, ifname: str) -> list:
    from cni_flannel.firewall import layouts

    if conf.ip_masq_backend == NFTABLES:
        return [layouts.ipmasq_nft_owner(conf.network, ifname, cid)]
    return [layouts.ipmasq_iptables_owner(f, conf.network, cid) for f in _families()]


def setup(conf: BridgeConfig, cid: str, ifname: str, ips: Iterable[IPConfig]) -> None:
    fw = _firewall(conf)
    for rs in _rulesets(conf, cid, ifname, ips):
        fw.apply(rs)


def teardown(conf: BridgeConfig, cid: str, ifname: str) -> None:
    fw = _firewall(conf)
    for rs in _owners(conf, cid, ifname):
        fw.remove(rs)


def missing(conf: BridgeConfig, cid: str, ifname: str, ips: Iterable[IPConfig]) -> List[str]:
    fw = _firewall(conf)
    problems: List[str] = []
    for rs in _rulesets(conf, cid, ifname, ips):
        problems += fw.check(rs)
    return problems


def _iptables_owner(comment: str, network: str) -> Optional[str]:
    head = f'name: "{network}" id: "'
    if comment.startswith(head) and comment.endswith('"'):
        return comment[len(head):-1]
    return None


def _nft_owner(comment: str, network: str) -> Optional[tuple]:
    # "<hash(net)>-<hash(if:id)>, net: N, if: I, id: C" (see firewall._names.nft_comment_for)
    parts = dict(p.split(": ", 1) for p in comment.split(", ")[1:] if ": " in p)
    if parts.get("net") != network or "if" not in parts or "id" not in parts:
        return None
    return parts["if"], parts["id"]


def gc(conf: BridgeConfig, valid_cids: Set[str], valid_pairs: Set[tuple]) -> None:
    """Remove the masquerade rules of every attachment of this network not in the valid list."""
    from cni_flannel.firewall import layouts

    fw = _firewall(conf)
    if conf.ip_masq_backend == NFTABLES:
        for comment in fw.comments("inet", layouts.NFT_MASQ_TABLE):
            owner = _nft_owner(comment, conf.network)
            if owner and (owner[1], owner[0]) not in valid_pairs:
                fw.remove(layouts.ipmasq_nft_owner(conf.network, owner[0], owner[1]))
        return
    for family in _families():
        for comment in fw.comments(family, "nat"):
            cid = _iptables_owner(comment, conf.network)
            if cid is not None and cid not in valid_cids:
                fw.remove(layouts.ipmasq_iptables_owner(family, conf.network, cid))
