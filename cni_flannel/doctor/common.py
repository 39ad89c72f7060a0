"""Small readings of NodeFacts that several checks share (pure)."""

from __future__ import annotations

import ipaddress
import re
from typing import List, Optional, Tuple

from cni_flannel.net.types import Link

from .facts import NodeFacts

VTEP_RE = re.compile(r"^flannel\.(\d+)$")
VTEP6_RE = re.compile(r"^flannel-v6\.(\d+)$")
BRIDGE = "cni0"


def backend_type(f: NodeFacts) -> Optional[str]:
    """net-conf.json's Backend.Type, else what the devices say (flannel.N: vxlan, flannel0: udp)."""
    if f.netconf is not None:
        return f.netconf.backend.type
    if vtep(f) is not None:
        return "vxlan"
    if f.link("flannel0") is not None:
        return "udp"
    return None


def vtep(f: NodeFacts, family: int = 4) -> Optional[Link]:
    """The vxlan device of a family: flannel.<VNI> (v4) / flannel-v6.<VNI> (v6)."""
    if f.netconf is not None and f.netconf.backend.type == "vxlan":
        name = f"flannel.{f.netconf.backend.vni}" if family == 4 else f"flannel-v6.{f.netconf.backend.vni}"
        return f.link(name)
    rx = VTEP_RE if family == 4 else VTEP6_RE
    return next((l for l in f.links if rx.match(l.name)), None)


def vtep_name(f: NodeFacts, family: int = 4) -> str:
    dev = vtep(f, family)
    if dev is not None:
        return dev.name
    vni = f.netconf.backend.vni if f.netconf is not None else 1
    return f"flannel.{vni}" if family == 4 else f"flannel-v6.{vni}"


def underlay(f: NodeFacts) -> Optional[Link]:
    """The external interface: the VTEP's underlay device, else the default route's."""
    dev = vtep(f)
    if dev is not None and dev.vxlan is not None and dev.vxlan.link:
        found = f.link_by_index(dev.vxlan.link)
        if found is not None:
            return found
    if dev is not None and dev.vxlan is not None and dev.vxlan.local:
        for a in f.addresses:
            if a.address == dev.vxlan.local:
                return f.link_by_index(a.index)
    default = next((r for r in f.routes if r.dst in ("0.0.0.0/0", "::/0") and r.index), None)
    return f.link_by_index(default.index) if default is not None else None


def subnets(f: NodeFacts) -> List[ipaddress._BaseNetwork]:
    return list(f.subnet_env.subnets) if f.subnet_env is not None else []


def networks(f: NodeFacts) -> List[ipaddress._BaseNetwork]:
    if f.subnet_env is not None and f.subnet_env.networks:
        return list(f.subnet_env.networks)
    if f.netconf is not None:
        return [p.network for p in f.netconf.pools]
    return []


def node_ips(f: NodeFacts) -> List[str]:
    return [a.address for a in f.addresses]


def bridge_ports(f: NodeFacts, bridge: str = BRIDGE) -> List[Link]:
    br = f.link(bridge)
    return [] if br is None else [l for l in f.links if l.master == br.index]


def live_ips(f: NodeFacts) -> set:
    return {ip for p in f.pods for ip in p.addresses}


def live_attachments(f: NodeFacts) -> List[Tuple[str, str]]:
    """(container ID, ifname) of held addresses a pod on this node carries."""
    live = live_ips(f)
    return sorted({(h.container_id, h.ifname) for h in f.held if h.ip in live})


def plural(n: int, word: str, many: str = "") -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 0:
        return "-" + duration(-seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")
