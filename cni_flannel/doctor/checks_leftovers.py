"""What dead pods leave behind: addresses host-local still holds, flannel's saved configs,
per-container firewall chains (pure checks over NodeFacts).

"Live" means: a pod network namespace on this node carries the held address (see
collect_pods); a held address nobody carries is a leak.
"""

from __future__ import annotations

import re
from typing import Dict, List, Set, Tuple

from cni_flannel.firewall import _iptables as ipt
from cni_flannel.firewall import layouts as L

from . import gc
from . import model as M
from .checks_firewall import nft_tables
from .common import live_attachments, plural, subnets
from .facts import NodeFacts

BRIDGE_MASQ_RE = re.compile(r"^CNI-[0-9a-f]{24}$")
PORTMAP_RE = re.compile(r"^CNI-DN-[0-9a-f]{21}$")
OWNER_RE = re.compile(r'name: "([^"]*)" id: "([^"]*)"')


def firewall_leftovers(f: NodeFacts, bin_dir: str = "/opt/cni/bin") -> M.Check:
    cid, title = "firewall-leftovers", "firewall leftovers"
    if not f.iptables_mode and f.nft_text is None:
        return M.unknown(cid, title, f"not checked: {f.unavailable.get('iptables', 'no firewall snapshot')}")
    if "ipam" in f.unavailable:
        return M.unknown(cid, title, f"cannot tell live containers: {f.unavailable['ipam']}")
    live = live_attachments(f)
    live_ids: Set[str] = {c for c, _ in live}
    refs = {f"{c}-{i}" for c, i in live}
    stale: List[str] = []
    counted = 0
    for s in f.iptables:
        if s.mode != f.iptables_mode:
            continue
        state = ipt.parse_save(s.tables.get("nat", ""))
        owners: Dict[str, str] = {}
        for chain, specs in state.items():
            for spec in specs:
                comment = ipt._option(ipt.tokens(spec), "--comment") or ""
                m = OWNER_RE.search(comment)
                if not m:
                    continue
                target = ipt._option(ipt.tokens(spec), "-j", "-g")
                owners.setdefault(chain, m.group(2))
                if target:
                    owners.setdefault(target, m.group(2))
        for chain in state:
            if BRIDGE_MASQ_RE.match(chain) or PORTMAP_RE.match(chain):
                counted += 1
                owner = owners.get(chain)
                if owner not in live_ids:
                    stale.append(f"{s.family} nat {chain} (container {owner or 'unknown'})")
    tables = nft_tables(f.nft_text) if f.nft_text else {}
    spoof = tables.get(("bridge", "cni_spoofcheck"), "")
    for chain in sorted(set(re.findall(r"chain cni-br-iface-(\S+?)(?:-mac)? \{", spoof))):
        counted += 1
        if chain not in refs:
            stale.append(f"bridge cni_spoofcheck cni-br-iface-{chain}")
    for cid_found in sorted(set(re.findall(r", id: ([^\"\s]+)", tables.get(("inet", L.NFT_MASQ_TABLE), "")))):
        counted += 1
        if cid_found not in live_ids:
            stale.append(f"inet {L.NFT_MASQ_TABLE} rules of container {cid_found}")
    if stale:
        return M.fail(cid, title, f"{plural(len(stale), 'rule chain')} of containers that no longer run on this node",
                      _gc_fix(f, live, bin_dir), items=tuple(stale))
    if not counted:
        return M.ok(cid, title, "no per-container chains (bridge masquerade, portmap, spoof check)")
    return M.ok(cid, title, f"{plural(counted, 'per-container chain')}, all of live containers")


def _gc_fix(f: NodeFacts, live: List[Tuple[str, str]], bin_dir: str) -> str:
    if not f.cni_conf:
        return "release them with CNI GC from the runtime (containerd 2.x does at start-up), listing the live pods"
    return ("release them with CNI GC, which keeps only the live attachments listed "
            f"({plural(len(live), 'pod')} found here; check that list before running it): "
            + gc.command(f.cni_conf, live, bin_dir))


def ipam_leaks(f: NodeFacts, bin_dir: str = "/opt/cni/bin") -> M.Check:
    cid, title = "ipam", "IPAM leaks"
    if "ipam" in f.unavailable:
        return M.unknown(cid, title, f"not checked: {f.unavailable['ipam']}")
    live = {ip for p in f.pods for ip in p.addresses}
    leaked = [h for h in f.held if h.ip not in live]
    where = f"{f.ipam_data_dir}/{f.cni_conf.get('name', 'cbr0') if f.cni_conf else 'cbr0'}"
    if leaked:
        items = tuple(f"{h.ip} held by {h.container_id[:16] or '(empty file)'} {h.ifname}" for h in leaked)
        size = sum(s.num_addresses - 3 for s in subnets(f) if s.version == 4) or 0
        full = f" of {size}" if size > 0 else ""
        verb = "is" if len(leaked) == 1 else "are"
        return M.fail(cid, title, f"{plural(len(leaked), 'address', 'addresses')}{full} in {where} {verb} held for "
                      "containers with no interface on this node (leaks; when the range is full ADD fails with "
                      "'no IP addresses available in range set')",
                      _gc_fix(f, sorted({(h.container_id, h.ifname) for h in f.held if h.ip in live}), bin_dir),
                      items=items)
    return M.ok(cid, title, f"{plural(len(f.held), 'address', 'addresses')} held in {where}, each by a live pod")


def saved_configs(f: NodeFacts, bin_dir: str = "/opt/cni/bin") -> M.Check:
    cid, title = "saved-configs", "flannel saved configs"
    if "ipam" in f.unavailable:
        return M.unknown(cid, title, f"cannot tell live containers: {f.unavailable['ipam']}")
    live = live_attachments(f)
    ids = {c for c, _ in live}
    orphans = [c for c in f.saved_configs if c not in ids]
    if orphans:
        return M.fail(cid, title, f"{plural(len(orphans), 'saved config')} in {f.flannel_data_dir} of containers "
                      "that do not run here", _gc_fix(f, live, bin_dir), items=tuple(orphans))
    return M.ok(cid, title, f"{plural(len(f.saved_configs), 'saved config')} in {f.flannel_data_dir}, each of a live pod")


