"""iptables mode, FORWARD policy, flanneld's masquerade rules, and the plugins' rule leftovers
(pure checks over the snapshots in NodeFacts)."""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from cni_flannel.cni.errors import CNIError
from cni_flannel.daemon import masq
from cni_flannel.firewall import _iptables as ipt
from cni_flannel.firewall import _nft as nft
from cni_flannel.firewall import layouts as L

from . import model as M
from .common import networks, plural
from .facts import IptablesSave, NodeFacts


_TABLE_RE = re.compile(r"^table (\w+) (\S+) \{", re.M)
_POLICY_RE = re.compile(r"^:(\S+) (\S+) ", re.M)


# --- snapshot readers --------------------------------------------------------------------------

def nft_tables(ruleset: str) -> Dict[Tuple[str, str], str]:
    """`nft -a list ruleset` text -> {(family, table): that table's text}."""
    out: Dict[Tuple[str, str], str] = {}
    starts = list(_TABLE_RE.finditer(ruleset))
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(ruleset)
        out[(m.group(1), m.group(2))] = ruleset[m.start():end]
    return out


def _save(f: NodeFacts, mode: str, family: str) -> Optional[IptablesSave]:
    return next((s for s in f.iptables if s.mode == mode and s.family == family), None)


def _families(f: NodeFacts) -> List[str]:
    fams = sorted({"ipv6" if n.version == 6 else "ipv4" for n in networks(f)}) or ["ipv4"]
    return fams


def _flannel_chains(f: NodeFacts, mode: str) -> List[str]:
    found = []
    for s in f.iptables:
        if s.mode != mode:
            continue
        for table, text in s.tables.items():
            for chain in ipt.parse_save(text):
                if chain in (L.FLANNEL_POSTRTG, L.FLANNEL_FWD_CHAIN):
                    found.append(f"{s.family} {table} {chain}")
    return found


def _nft_in_use(f: NodeFacts) -> bool:
    if f.netconf is not None:
        return f.netconf.enable_nftables
    tables = nft_tables(f.nft_text) if f.nft_text else {}
    return any(key[1].startswith("flannel-ip") for key in tables) and not _flannel_chains(f, f.iptables_mode)


# --- checks ------------------------------------------------------------------------------------

def iptables_mode(f: NodeFacts) -> M.Check:
    cid, title = "iptables-mode", "iptables mode"
    if not f.iptables_mode:
        return M.unknown(cid, title, f"not checked: {f.unavailable.get('iptables', 'no iptables snapshot')}")
    if _nft_in_use(f):
        return M.ok(cid, title, f"flanneld uses nftables (EnableNFTables); the node's iptables is {f.iptables_mode}")
    other = "legacy" if f.iptables_mode == "nft" else "nft"
    ours, stray = _flannel_chains(f, f.iptables_mode), _flannel_chains(f, other)
    if stray and not ours:
        return M.fail(cid, title, f"flanneld's chains are in iptables-{other} ({', '.join(stray)}) but the node uses "
                      f"iptables-{f.iptables_mode} (kube-proxy decides the same way): its rules do not apply",
                      f"restart flanneld (it detects the mode again at start-up), then remove the old chains: "
                      f"iptables-{other} -t nat -F FLANNEL-POSTRTG; iptables-{other} -t nat -D POSTROUTING -j FLANNEL-POSTRTG; "
                      f"iptables-{other} -t nat -X FLANNEL-POSTRTG (same for filter FLANNEL-FWD from FORWARD)")
    where = f"; flanneld's chains are there too" if ours else ""
    extra = f" (leftovers in iptables-{other}: {', '.join(stray)})" if stray else ""
    return M.ok(cid, title, f"the node uses iptables-{f.iptables_mode}{where}{extra}")


def forward_policy(f: NodeFacts) -> M.Check:
    cid, title = "forward", "FORWARD policy"
    if not f.iptables_mode:
        return M.unknown(cid, title, f"not checked: {f.unavailable.get('iptables', 'no iptables snapshot')}")
    problems, seen = [], []
    nets = {n.version: str(n) for n in networks(f)}
    for family in _families(f):
        save = _save(f, f.iptables_mode, family)
        text = save.tables.get("filter", "") if save else ""
        policy = dict(_POLICY_RE.findall(text)).get("FORWARD", "ACCEPT")
        state = ipt.parse_save(text)
        jumps = any(ipt._option(ipt.tokens(s), "-j", "-g") == L.FLANNEL_FWD_CHAIN for s in state.get("FORWARD", ()))
        seen.append(f"{family} FORWARD policy {policy}{', jumps to FLANNEL-FWD' if jumps else ''}")
        if policy == "DROP" and not jumps and not _nft_forward_accepts(f, family):
            net = nets.get(6 if family == "ipv6" else 4, "<Network>")
            tool = "ip6tables" if family == "ipv6" else "iptables"
            problems.append((f"{family} FORWARD policy is DROP and nothing accepts the pod network: traffic between "
                             "pods on different nodes is dropped",
                             f"{tool} -A FORWARD -s {net} -j ACCEPT && {tool} -A FORWARD -d {net} -j ACCEPT"))
    for family, chain in _nft_drop_chains(f):
        problems.append((f"nftables {family} chain {chain} drops forwarded packets and does not mention the pod network",
                         f"add `ip saddr <Network> accept` and `ip daddr <Network> accept` to {chain}"))
    if problems:
        return M.fail(cid, title, "; ".join(p for p, _ in problems),
                      "run flanneld with --iptables-forward-rules=true (the default: it adds FLANNEL-FWD), or: "
                      + "; ".join(fx for _, fx in problems))
    return M.ok(cid, title, "; ".join(seen))


def _nft_forward_accepts(f: NodeFacts, family: str) -> bool:
    table = nft_tables(f.nft_text).get(("ip6" if family == "ipv6" else "ip", L.flannel_nft_table(family))) if f.nft_text else None
    return bool(table and "chain forward" in table and "accept" in table)


def _nft_drop_chains(f: NodeFacts) -> List[Tuple[str, str]]:
    """Base chains hooked at forward with policy drop in nftables-native tables (not iptables-nft's)."""
    out = []
    nets = [str(n) for n in networks(f)]
    for (family, table), text in (nft_tables(f.nft_text).items() if f.nft_text else ()):
        if f.iptables_mode == "nft" and table in ("filter", "nat", "mangle", "raw", "security") and family in ("ip", "ip6"):
            continue
        for m in re.finditer(r"chain (\S+) \{[^}]*?hook forward[^}]*?policy drop;([^}]*)\}", text, re.S):
            if not any(n in m.group(0) for n in nets):
                out.append((f"{family} {table}", m.group(1)))
    return out


def masquerade(f: NodeFacts) -> M.Check:
    cid, title = "masquerade", "masquerade rules"
    if f.subnet_env is None:
        return M.unknown(cid, title, "no readable subnet.env (FLANNEL_IPMASQ)")
    if not f.subnet_env.ipmasq:
        return M.ok(cid, title, "FLANNEL_IPMASQ=false: flanneld adds none (the bridge plugin masquerades per pod)")
    if not f.iptables_mode and f.nft_text is None:
        return M.unknown(cid, title, f"not checked: {f.unavailable.get('iptables', 'no firewall snapshot')}")
    nets = tuple(str(n) for n in f.subnet_env.networks)
    subs = tuple(str(s) for s in f.subnet_env.subnets)
    use_nft = _nft_in_use(f)
    best: Optional[List[str]] = None
    for random_fully in (True, False):
        try:
            cfg = masq.MasqConfig(networks=nets, subnets=subs, ip_masq=True, forward=False,
                                  enable_nftables=use_nft, random_fully=random_fully)
        except CNIError as exc:
            return M.unknown(cid, title, f"cannot build the expected rules: {exc.msg}")
        problems = [p for rs in masq.desired(cfg) for p in _problems(f, rs, use_nft)]
        if best is None or len(problems) < len(best):
            best = problems
    assert best is not None
    where = "nftables table flannel-ipv4/6" if use_nft else f"iptables-{f.iptables_mode} nat FLANNEL-POSTRTG"
    if best:
        return M.fail(cid, title, f"FLANNEL_IPMASQ=true but {where} is not complete "
                      f"({plural(len(best), 'problem')}): pods reach the outside world with their pod address, "
                      "and answers never come back",
                      "flanneld re-adds its rules every --iptables-resync seconds (5): if they stay missing it is not "
                      "running, or another tool flushes the chain (flannel#2237) -- restart flanneld and find that tool",
                      items=tuple(best))
    return M.ok(cid, title, f"{where} is complete for {', '.join(subs)}")


def _problems(f: NodeFacts, rs, use_nft: bool) -> List[str]:
    if use_nft:
        fam = "ip6" if rs.family == "ipv6" else "ip"
        text = nft_tables(f.nft_text or "").get((fam, rs.table))
        return nft.plan_check(rs, nft.parse_list(text) if text is not None else None)
    save = _save(f, f.iptables_mode, rs.family)
    return ipt.plan_check(rs, ipt.parse_save(save.tables.get(rs.table, "") if save else ""))
