"""Peers: what flannel.1 (or host-gw routes) hold for each other node, stale entries for subnets
nobody leases, and the result of probing each peer (pure checks over NodeFacts).

The peer list comes from the lease store when one was given; else from what the node's own
routes imply (each route on the VTEP names a peer subnet and its VTEP address).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from cni_flannel.net.types import normalize_cidr

from . import model as M
from .common import backend_type, networks, plural, subnets, underlay, vtep
from .facts import NodeFacts

NUD_PERMANENT = 0x80  # flanneld's entries; the kernel's own (multicast, learnt) are not peers


@dataclass(frozen=True)
class Peer:
    subnet: str                  # "10.244.2.0/24"
    public_ip: Optional[str]     # None when only the routes tell us about it
    vtep_mac: Optional[str]


def _gw(subnet: str) -> str:
    return str(ipaddress.ip_network(subnet).network_address)


def expected_peers(f: NodeFacts, family: int = 4) -> Tuple[List[Peer], str]:
    """(peers, where they come from)."""
    mine = {str(s) for s in subnets(f)}
    src = f.lease_source
    if src is not None and src.own is not None:  # our lease, even when subnet.env disagrees (see "lease")
        mine |= {str(s.subnet) for s in src.own.sides()}
    if src is not None:
        peers = [Peer(str(s.subnet), s.public_ip, s.vtep_mac) for l in src.leases for s in l.sides()
                 if s.family == family and str(s.subnet) not in mine]
        return sorted(peers, key=lambda p: ipaddress.ip_network(p.subnet)), f"{src.kind} leases"
    dev = vtep(f, family)
    out = []
    if dev is not None:
        for r in f.routes:
            if r.index == dev.index and r.gw and r.family == family and r.dst not in mine:
                out.append(Peer(normalize_cidr(r.dst), None, None))
        # A peer whose route was lost still has its neighbour <subnet>.0 (peers' subnets are as long as ours)
        own = [s for s in subnets(f) if s.version == family]
        nets = [n for n in networks(f) if n.version == family]
        seen = {p.subnet for p in out}
        for n in f.neighbours:
            if n.index != dev.index or not n.ip or not n.state & NUD_PERMANENT or not own:
                continue
            net = ipaddress.ip_network(f"{n.ip}/{own[0].prefixlen}", strict=False)
            if str(net.network_address) == n.ip and str(net) not in seen | mine and any(
                    net.subnet_of(x) for x in nets):  # type: ignore[arg-type]
                out.append(Peer(str(net), None, None))
                seen.add(str(net))
    elif backend_type(f) == "host-gw":
        nets = [n for n in networks(f) if n.version == family]
        for r in f.routes:
            if r.gw and r.family == family and r.dst not in mine and any(
                    ipaddress.ip_network(r.dst).subnet_of(n) for n in nets):  # type: ignore[arg-type]
                out.append(Peer(normalize_cidr(r.dst), r.gw, None))
    return sorted(out, key=lambda p: ipaddress.ip_network(p.subnet)), "routes and neighbours on this node"


def _vxlan_entries(f: NodeFacts, family: int):
    dev = vtep(f, family)
    assert dev is not None
    routes = {normalize_cidr(r.dst): r for r in f.routes if r.index == dev.index and r.gw}
    neigh = {n.ip: n.mac.lower() for n in f.neighbours if n.index == dev.index and n.ip
             and n.state & NUD_PERMANENT and not ipaddress.ip_address(n.ip).is_multicast}
    fdb: Dict[str, List[str]] = {}
    for e in f.fdb:
        if e.index == dev.index and e.ip:
            fdb.setdefault(e.mac.lower(), []).append(e.ip)
    return dev, routes, neigh, fdb


def peer_entries(f: NodeFacts) -> M.Check:
    cid, title = "peers", "peer routes, neighbours, FDB"
    btype = backend_type(f)
    if btype is None:
        return M.unknown(cid, title, "backend unknown (no net-conf.json and no flannel device)")
    if btype == "udp":
        dev = f.link("flannel0")
        if dev is None:
            return M.fail(cid, title, "flannel0 does not exist", "restart flanneld (it creates flannel0)")
        return M.ok(cid, title, "udp: one route for the Network via flannel0; peers are flanneld's own table")
    items, bad = [], 0
    families = sorted({s.version for s in subnets(f)}) or [4]
    source = ""
    for family in families:
        peers, source = expected_peers(f, family)
        if btype == "host-gw":
            ext = underlay(f)
            for p in peers:
                r = next((r for r in f.routes if normalize_cidr(r.dst) == p.subnet), None)
                ok = r is not None and (p.public_ip is None or r.gw == p.public_ip)
                bad += not ok
                got = f"via {r.gw}" if r is not None else "no route"
                items.append(f"{p.subnet}: {got}{'' if ok else f' (want via {p.public_ip} dev {ext.name if ext else None})'}")
            continue
        dev = vtep(f, family)
        if dev is None:
            return M.fail(cid, title, f"vxlan backend but no flannel VTEP (flannel.<VNI>) on this node",
                          "restart flanneld: it creates the VTEP and re-adds every peer")
        dev, routes, neigh, fdb = _vxlan_entries(f, family)
        for p in peers:
            gw, wrong = _gw(p.subnet), []
            r = routes.get(p.subnet)
            if r is None or r.gw != gw or not r.onlink:
                wrong.append("route " + ("missing" if r is None else f"via {r.gw}{'' if r.onlink else ' not onlink'}"))
            mac = neigh.get(gw)
            if mac is None:
                wrong.append(f"no neighbour for {gw}")
            elif p.vtep_mac and mac != p.vtep_mac:
                wrong.append(f"neighbour {gw} has {mac}, lease says {p.vtep_mac}")
            want_mac = p.vtep_mac or mac
            dsts = fdb.get(want_mac or "", [])
            if want_mac and not dsts:
                wrong.append(f"no FDB entry for {want_mac}")
            elif p.public_ip and dsts and p.public_ip not in dsts:
                wrong.append(f"FDB sends {want_mac} to {', '.join(dsts)}, lease says {p.public_ip}")
            bad += bool(wrong)
            public = p.public_ip or (dsts[0] if dsts else "")
            items.append(f"{p.subnet}{f' ({public})' if public else ''}: "
                         + ("; ".join(wrong) if wrong else f"route, neighbour and FDB on {dev.name} ✔"))
    if bad:
        return M.fail(cid, title, f"{plural(bad, 'peer')} of {len(items)} lack correct entries ({source})",
                      "restart flanneld: it re-adds every peer's route, neighbour and FDB entry at start-up",
                      items=tuple(items))
    if not items:
        return M.ok(cid, title, f"no peers ({source})")
    return M.ok(cid, title, f"{plural(len(items), 'peer')} with correct entries ({source})", items=tuple(items))


def stale_entries(f: NodeFacts) -> M.Check:
    cid, title = "stale", "stale peer entries"
    btype = backend_type(f)
    if btype not in ("vxlan", "host-gw"):
        return M.ok(cid, title, f"{btype or 'no'} backend: nothing per peer to go stale") if btype else \
            M.unknown(cid, title, "backend unknown")
    leased = f.lease_source is not None
    families = sorted({s.version for s in subnets(f)}) or [4]
    stale: List[str] = []
    cmds: List[str] = []
    for family in families:
        peers, _ = expected_peers(f, family)
        known = {p.subnet for p in peers}
        nets = [n for n in networks(f) if n.version == family]
        if btype == "host-gw":
            if not leased:
                continue
            for r in f.routes:
                dst = normalize_cidr(r.dst)
                if r.gw and r.family == family and dst not in known and dst not in {str(s) for s in subnets(f)} \
                        and any(ipaddress.ip_network(dst).subnet_of(n) for n in nets):  # type: ignore[arg-type]
                    stale.append(f"route {dst} via {r.gw} (no lease)")
                    cmds.append(f"ip route del {dst} via {r.gw}")
            continue
        dev = vtep(f, family)
        if dev is None:
            continue
        dev, routes, neigh, fdb = _vxlan_entries(f, family)
        if leased:
            for dst, r in routes.items():
                if dst not in known:
                    stale.append(f"route {dst} via {r.gw} dev {dev.name} (no lease)")
                    cmds.append(f"ip route del {dst} dev {dev.name}")
        gws = {_gw(s) for s in known}  # no lease store: the peers routes and neighbours imply
        for ip, mac in neigh.items():
            if ip not in gws:
                stale.append(f"neighbour {ip} {mac} on {dev.name} ({'no lease' if leased else 'no route uses it'})")
                cmds.append(f"ip neigh del {ip} dev {dev.name}")
        macs = {mac for ip, mac in neigh.items() if ip in gws}
        if leased:
            macs |= {p.vtep_mac for p in peers if p.vtep_mac}
        for mac, dsts in fdb.items():
            if mac not in macs:
                for dst in dsts:
                    stale.append(f"FDB {mac} dst {dst} on {dev.name} ({'no lease' if leased else 'no neighbour uses it'})")
                    cmds.append(f"bridge fdb del {mac} dev {dev.name} dst {dst}")
    how = "compared with the leases" if leased else "routes vs neighbours vs FDB (no lease store given)"
    if stale:
        return M.fail(cid, title, f"{plural(len(stale), 'entry', 'entries')} for subnets no node leases ({how}): "
                      "traffic to them goes to a node that is gone",
                      "restart flanneld (it removes stale entries at start-up), or by hand: " + "; ".join(cmds),
                      items=tuple(stale))
    return M.ok(cid, title, f"no stale entries ({how})")


def peer_probe(f: NodeFacts) -> M.Check:
    cid, title = "probe", "peer probe"
    if "probe" in f.unavailable:
        return M.unknown(cid, title, f"not probed: {f.unavailable['probe']}")
    if not f.probes:
        return M.ok(cid, title, "no peers to probe")
    items = tuple(f"{p.peer} → {p.target}: " + (f"{p.rtt_ms:.1f} ms" if p.rtt_ms is not None else
                                                 f"no answer{f' ({p.error})' if p.error else ''}") for p in f.probes)
    dead = [p for p in f.probes if p.rtt_ms is None]
    if dead:
        names = ", ".join(p.peer for p in dead)
        return M.fail(cid, title, f"{len(f.probes) - len(dead)} of {plural(len(f.probes), 'peer')} answer; none from {names}",
                      "for a live peer: check that UDP 8472 (vxlan) passes between the nodes (cloud security "
                      "groups, host firewalls) and that flanneld runs there; for a node that is gone: its "
                      "entries here are stale (see 'stale peer entries')", items=items)
    answer = "the peer answers" if len(f.probes) == 1 else f"all {len(f.probes)} peers answer"
    return M.ok(cid, title, answer, items=items)
