"""bridge's macspoofchk: frames from a pod must carry the pod's MAC.

As upstream pkg/link/spoofcheck.go (its knftables version), through the
firewall layer, in the nftables table ``bridge cni_spoofcheck``::

    chain prerouting { type filter hook prerouting priority -300; policy accept;
        iifname "<host veth>" jump cni-br-iface-<ref> comment "macspoofchk-<ref>" }
    chain cni-br-iface-<ref> { jump cni-br-iface-<ref>-mac comment "macspoofchk-<ref>" }
    chain cni-br-iface-<ref>-mac {
        ether saddr <container MAC> return comment "macspoofchk-<ref>"
        drop comment "macspoofchk-<ref>" }

with ``<ref>`` = ``<container id>-<ifname>``.  The table and its base chain
are shared by every pod and stay; the per-pod chains and the jump to them are
ours.  Removal goes by chain name and comment only, so DEL needs neither the
veth nor the MAC and works with an empty or deleted CNI_NETNS.  It also
removes the layout of upstream's older go-nft version (table ``bridge nat``,
base chain ``PREROUTING``, e.g. Debian's 1.1.1) for pods that plugin set up.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Set, Tuple

TABLE = "cni_spoofcheck"
BASE_CHAIN = "prerouting"
PRIORITY = -300
LEGACY_TABLE, LEGACY_BASE_CHAIN = "nat", "PREROUTING"  # go-nft versions of upstream
CHAIN_PREFIX = "cni-br-iface-"
COMMENT_PREFIX = "macspoofchk-"
_COMMENT = re.compile(r' comment "macspoofchk-([^"]*)"$')


def ref_id(container_id: str, ifname: str) -> str:
    """upstream bridge.go uniqueID()."""
    return f"{container_id}-{ifname}"


def comment(ref: str) -> str:
    return COMMENT_PREFIX + ref


def iface_chain(ref: str):
    from cni_flannel.firewall import NftChainName

    return NftChainName(CHAIN_PREFIX + ref)


def mac_chain(ref: str):
    from cni_flannel.firewall import NftChainName

    return NftChainName(CHAIN_PREFIX + ref + "-mac")


def _base_chain(name: str = BASE_CHAIN, rules: tuple = ()):
    from cni_flannel.firewall import Chain, Hook

    return Chain(name, rules, hook=Hook("filter", "prerouting", PRIORITY))


def ruleset(container_id: str, ifname: str, host_veth: str, mac: str):
    """The rules ADD installs for one attachment (pure)."""
    from cni_flannel.firewall import Chain, Rule, RuleSet

    ref = ref_id(container_id, ifname)
    c, ifc, macc = comment(ref), iface_chain(ref), mac_chain(ref)
    return RuleSet("bridge", TABLE, (
        _base_chain(rules=(Rule(target=ifc, iif=host_veth, comment=c),)),
        Chain(ifc, (Rule(target=macc, comment=c),), owned=True),
        Chain(macc, (Rule(target="RETURN", ether_src=mac.lower(), comment=c),
                     Rule(target="DROP", comment=c)), owned=True),
    ), comment=c)


def owner(container_id: str, ifname: str, table: str = TABLE, base: str = BASE_CHAIN):
    """What removal needs: the owned chains' names and the comment (pure)."""
    return _owner_of_ref(ref_id(container_id, ifname), table, base)


def _owner_of_ref(ref: str, table: str, base: str):
    from cni_flannel.firewall import Chain, RuleSet

    return RuleSet("bridge", table, (_base_chain(base), Chain(iface_chain(ref), owned=True),
                                     Chain(mac_chain(ref), owned=True)), comment=comment(ref))


def validate(container_id: str, ifname: str) -> None:
    """Refuse (InvalidConfig, 7) an attachment nftables cannot name, before ADD changes anything."""
    from cni_flannel.cni.errors import CNIError, InvalidConfig
    from cni_flannel.firewall import NftFirewall

    try:
        NftFirewall().supports(owner(container_id, ifname))
    except CNIError as exc:
        raise InvalidConfig(f"macspoofchk cannot name the nftables chains for container "
                            f"{container_id!r} interface {ifname!r}: {exc.msg}",
                            "chain names and comments allow letters, digits, '_', '.', '-', "
                            "chains up to 255 and comments up to 128 characters; use a plainer "
                            "CNI_IFNAME or drop macspoofchk") from None


def _firewall():
    from cni_flannel.firewall import NftFirewall

    return NftFirewall()


def setup(container_id: str, ifname: str, host_veth: str, mac: str) -> None:
    _firewall().apply(ruleset(container_id, ifname, host_veth, mac))


def teardown(container_id: str, ifname: str) -> None:
    fw = _firewall()
    fw.remove(owner(container_id, ifname))
    fw.remove(owner(container_id, ifname, LEGACY_TABLE, LEGACY_BASE_CHAIN))


def missing(container_id: str, ifname: str, host_veth: str, mac: str) -> List[str]:
    return _firewall().check(ruleset(container_id, ifname, host_veth, mac))


def _stale(rules: Dict[str, List[str]], base: str, valid_refs: Set[str]) -> Dict[str, Optional[str]]:
    """{ref: host veth named by its jump rule (None if none)} for refs not in valid_refs (pure)."""
    found: Dict[str, Optional[str]] = {}
    for chain, texts in rules.items():
        for text in texts:
            m = _COMMENT.search(text)
            if m is None or m.group(1) in valid_refs:
                continue
            ref = m.group(1)
            found.setdefault(ref, None)
            if chain == base and text.startswith('iifname "'):
                found[ref] = text.split('"', 2)[1]
    return found


def gc(bridge: str, valid: Set[Tuple[str, str]]) -> None:
    """Remove the rules of attachments not in the valid list.

    The table is shared by every bridge network on the node and a ref does not
    name its network, so a stale-looking ref is only removed when its veth is
    gone (its rules can only do harm then: a new veth may get the name) or is a
    port of this network's bridge.
    """
    from cni_flannel.net.handle import Handle

    fw = _firewall()
    valid_refs = {ref_id(cid, ifn) for cid, ifn in valid}
    with Handle() as node:
        br = node.find_link(bridge)
        for table, base in ((TABLE, BASE_CHAIN), (LEGACY_TABLE, LEGACY_BASE_CHAIN)):
            for ref, veth in sorted(_stale(fw.rules("bridge", table), base, valid_refs).items()):
                link = node.find_link(veth) if veth else None
                if link is not None and (br is None or link.master != br.index):
                    continue  # another bridge network's pod
                fw.remove(_owner_of_ref(ref, table, base))
