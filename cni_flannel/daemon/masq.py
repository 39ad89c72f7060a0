"""flanneld's masquerade and forward rules, as upstream's trafficmngr writes them.

    cfg = MasqConfig(networks=("10.244.0.0/16", "fd00::/48"),
                     subnets=("10.244.1.0/24", "fd00:0:0:1::/64"))
    mgr = MasqManager(cfg)  # iptables (legacy or nft, as the node uses) or nftables
    mgr.reconcile()         # start-up, lease or config change: exactly these rules, stale ones gone
    mgr.apply()             # the periodic ensure: one snapshot per table while all is in place
    mgr.remove()            # clean shutdown: nothing of ours is left

The rules (``firewall/layouts.py``): nat FLANNEL-POSTRTG and filter FLANNEL-FWD, or the
tables ``ip flannel-ipv4`` / ``ip6 flannel-ipv6`` with base chains postrtg and forward.  Our
chains are owned by us, so an apply rewrites a chain whose rules differ in one transaction:
the rules of an older lease or Network go in the same batch that adds the current ones --
upstream's fault (it deletes only the rules of the one previous lease it remembers, so a
restart or two changes leak rules that keep masquerading) cannot happen.  reconcile() also
sweeps what older flannel versions or the other backend left (see reconcile_plan).

IPv4 and IPv6 go through one code path: everything is planned per family.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple, Union

from cni_flannel.cni.errors import CNIError, InvalidConfig
from cni_flannel.firewall import Chain, Firewall, NftFirewall, RuleSet, Runner, backend_for
from cni_flannel.firewall import layouts as L

log = logging.getLogger(__name__)

FAMILIES = ("ipv4", "ipv6")
APPLY, REMOVE = "apply", "remove"
Step = Tuple[str, RuleSet]  # (APPLY or REMOVE, rule set), run in order


Net = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def _family(net: Net) -> str:
    return "ipv4" if net.version == 4 else "ipv6"


def _parse(what: str, text: str) -> Net:
    try:
        return ipaddress.ip_network(text, strict=False)
    except (TypeError, ValueError):
        raise InvalidConfig(f"invalid {what} {text!r}: must be a CIDR such as 10.244.0.0/16") from None


@dataclass(frozen=True)
class MasqConfig:
    """What flanneld knows: the cluster Network per family (net-conf.json Network /
    IPv6Network), this node's lease subnet per family, and the switches (--ip-masq,
    --iptables-forward-rules, EnableNFTables, --ip-masq-random-fully-disable inverted)."""

    networks: Tuple[str, ...]
    subnets: Tuple[str, ...] = ()
    ip_masq: bool = True
    forward: bool = True
    enable_nftables: bool = False
    random_fully: bool = True

    def __post_init__(self) -> None:
        nets = [_parse("Network", n) for n in self.networks]
        subs = [_parse("lease subnet", s) for s in self.subnets]
        for what, parsed in (("Network", nets), ("lease subnet", subs)):
            fams = [_family(n) for n in parsed]
            if len(set(fams)) != len(fams):
                raise InvalidConfig(f"more than one {what} per IP family: "
                                    f"{', '.join(map(str, parsed))}; give one IPv4 and/or one IPv6")
        if not nets:
            raise InvalidConfig("no Network: give the cluster's IPv4 and/or IPv6 Network")
        by_family = {_family(n): n for n in nets}
        for sub in subs:
            net = by_family.get(_family(sub))
            if net is None:
                raise InvalidConfig(f"lease subnet {sub} has no {_family(sub)} Network to belong to")
            if not sub.subnet_of(net):  # type: ignore[arg-type]
                raise InvalidConfig(f"lease subnet {sub} is not inside the Network {net}; "
                                    "the lease and net-conf.json disagree")
        if self.ip_masq and len(subs) != len(nets):
            have = {_family(s) for s in subs}
            missing = [str(n) for n in nets if _family(n) not in have]
            raise InvalidConfig(f"ip-masq needs this node's lease subnet for Network {', '.join(missing)}")
        # canonical text, so equal configs render equal rules
        object.__setattr__(self, "networks", tuple(str(n) for n in nets))
        object.__setattr__(self, "subnets", tuple(str(s) for s in subs))

    def family(self, family: str) -> Tuple[Optional[str], Optional[str]]:
        """(Network, lease subnet) of one family; None where not configured."""
        net = next((n for n in self.networks if L.family_of(n) == family), None)
        sub = next((s for s in self.subnets if L.family_of(s) == family), None)
        return net, sub


# --- planning (pure) -----------------------------------------------------------------------

def desired(cfg: MasqConfig) -> List[RuleSet]:
    """The rule sets that should exist: per family, nat + filter (iptables) or one table (nft)."""
    out: List[RuleSet] = []
    for family in FAMILIES:
        net, sub = cfg.family(family)
        if net is None:
            continue
        if cfg.enable_nftables:
            if cfg.ip_masq or cfg.forward:
                out.append(L.flannel_nft(net, sub, cfg.ip_masq, cfg.forward, cfg.random_fully))
            continue
        if cfg.ip_masq:
            out.append(L.flannel_masq_iptables(net, str(sub), cfg.random_fully))
        if cfg.forward:
            out.append(L.flannel_forward_iptables(net))
    return out


def owners(nftables: bool, families: Sequence[str] = FAMILIES) -> List[RuleSet]:
    """Address-free rule sets that remove everything of ours (remove() and stale slots)."""
    if nftables:
        return [L.flannel_nft_owner(f) for f in families]
    return [rs for f in families for rs in (L.flannel_masq_iptables_owner(f), L.flannel_forward_iptables_owner(f))]


def sweep(rs: RuleSet) -> RuleSet:
    """Deletes every rule in rs's table carrying rs's comment except rs's own rules (kept):
    e.g. "flanneld masq" rules older flannel versions wrote straight into POSTROUTING."""
    chains = tuple(Chain(c.name, tuple(replace(r, keep=True) for r in c.rules)) for c in rs.chains)
    return RuleSet(rs.family, rs.table, chains, comment=rs.comment)


def reconcile_plan(cfg: MasqConfig, nft_chains: Optional[Dict[str, List[str]]] = None) -> List[Step]:
    """Steps making the node's rules exactly ``desired(cfg)`` on cfg's backend.

    iptables, per family and table: apply (rewrites our chain if any rule differs, e.g.
    an older lease's), then sweep; a slot not wanted (ip-masq or forwarding off, family
    gone) is removed.  nftables: our tables are ours alone, so apply, then remove every
    chain in them that is not wanted (nft_chains: {family: chains listed now}).
    """
    want = {(rs.family, rs.table): rs for rs in desired(cfg)}
    steps: List[Step] = []
    for family in FAMILIES:
        if cfg.enable_nftables:
            table = L.flannel_nft_table(family)
            rs = want.get((family, table))
            keep = {c.name for c in rs.chains} if rs else set()
            if rs:
                steps.append((APPLY, rs))
            known = (L.NFT_POSTRTG, L.NFT_FORWARD)
            stale = [n for n in known if n not in keep]
            stale += sorted(set((nft_chains or {}).get(family, ())) - keep - set(known))
            if stale:
                hooked = {L.NFT_POSTRTG: L.NFT_POSTRTG_HOOK, L.NFT_FORWARD: L.NFT_FORWARD_HOOK}
                steps.append((REMOVE, RuleSet(family, table, tuple(
                    Chain(n, owned=True, hook=hooked.get(n)) for n in stale))))
            continue
        for owner in owners(False, (family,)):
            rs = want.get((family, owner.table))
            steps += [(APPLY, rs), (REMOVE, sweep(rs))] if rs else [(REMOVE, owner)]
    return steps


# --- the manager -----------------------------------------------------------------------------

class MasqManager:
    """Applies a MasqConfig through the firewall layer, one batch per table and family."""

    def __init__(self, cfg: MasqConfig, firewall: Optional[Firewall] = None,
                 runner: Optional[Runner] = None, other: Optional[Firewall] = None,
                 clean_other_backend: bool = True) -> None:
        """firewall: default nftables with EnableNFTables, else iptables as the node uses it.
        other: the other backend, whose flannel rules reconcile() removes (after a switch
        of EnableNFTables); built on first use unless clean_other_backend is false."""
        self.cfg = cfg
        self.runner = runner or (firewall.runner if firewall else Runner())
        self.fw = firewall or backend_for("nftables" if cfg.enable_nftables else None, self.runner)
        if isinstance(self.fw, NftFirewall) != cfg.enable_nftables:
            raise InvalidConfig(f"firewall {self.fw.name} does not match EnableNFTables="
                                f"{str(cfg.enable_nftables).lower()}")
        self._other = other
        self.clean_other_backend = clean_other_backend

    def apply(self) -> None:
        """Ensure the current rules (idempotent; rewrites our chains only when they differ)."""
        for rs in desired(self.cfg):
            self.fw.apply(rs)

    def check(self) -> List[str]:
        """What is missing or wrong; [] when the current rules are exactly in place."""
        return [p for rs in desired(self.cfg) for p in self.fw.check(rs)]

    def reconcile(self) -> None:
        """Exactly the current rules: stale leases/Networks/families/switches removed."""
        wanted = {L.family_of(n) for n in self.cfg.networks}
        nft_chains = None
        if self.cfg.enable_nftables:
            nft_chains = {f: self.fw.chains(f, L.flannel_nft_table(f)) for f in FAMILIES}
        for verb, rs in reconcile_plan(self.cfg, nft_chains):
            if verb == APPLY:
                self.fw.apply(rs)
            else:
                self._remove(self.fw, rs, must=rs.family in wanted)
        if self.clean_other_backend:
            other = self._other_backend()
            for rs in owners(not self.cfg.enable_nftables):
                self._remove(other, rs, must=False)

    def update(self, cfg: MasqConfig) -> None:
        """A new lease or config (e.g. the node's subnet changed): switch and reconcile."""
        if cfg.enable_nftables != self.cfg.enable_nftables:
            self.remove()  # leave nothing on the backend we stop using
            self.fw, self._other = self._other_backend(), self.fw
        self.cfg = cfg
        self.reconcile()

    def remove(self) -> None:
        """Everything of ours on this backend goes, whatever lease or Network wrote it."""
        wanted = {L.family_of(n) for n in self.cfg.networks}
        for rs in owners(self.cfg.enable_nftables):
            self._remove(self.fw, rs, must=rs.family in wanted)
        if isinstance(self.fw, NftFirewall):  # our nft tables are ours alone: leave no empty shell
            for family in FAMILIES:
                self.fw.delete_table(family, L.flannel_nft_table(family))

    # --- helpers ---------------------------------------------------------------------------
    def _other_backend(self) -> Firewall:
        if self._other is None:
            self._other = backend_for(None if self.cfg.enable_nftables else "nftables", self.runner)
        return self._other

    @staticmethod
    def _remove(fw: Firewall, rs: RuleSet, must: bool) -> None:
        """Remove rs; for a family or backend we do not use, failing tools are only logged
        (no ip6tables on an IPv4-only node must not stop the daemon)."""
        try:
            fw.remove(rs)
        except InvalidConfig:
            raise
        except CNIError as exc:
            if must:
                raise
            log.warning("could not check %s %s %s for stale flannel rules: %s",
                        fw.name, rs.family, rs.table, exc)
