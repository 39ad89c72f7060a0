"""Plain records the netlink layer returns."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Dict, Optional

IFF_UP = 0x1
IFF_PROMISC = 0x100

RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254


@dataclass(frozen=True)
class VxlanInfo:
    """The VXLAN attributes of a ``kind == "vxlan"`` link (IFLA_VXLAN_*)."""
    vni: int
    local: Optional[str] = None  # source address (IPv4 or IPv6)
    port: int = 0                # UDP destination port
    learning: bool = True
    gbp: bool = False
    link: int = 0                # ifindex of the underlay device (0: none)


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str = ""              # "bridge", "veth", "vxlan", "" for plain devices
    mac: str = ""
    mtu: int = 0
    flags: int = 0
    master: int = 0             # ifindex of the bridge this is a port of (0: none)
    peer_netnsid: Optional[int] = None  # IFLA_LINK_NETNSID: peer lives in another netns
    port: Dict[str, int] = field(default_factory=dict)  # bridge port flags: hairpin, learning, isolated
    vlan_filtering: Optional[bool] = None  # bridges only
    operstate: str = ""         # "UP", "DOWN", "LOWERLAYERDOWN", "UNKNOWN"...
    vxlan: Optional[VxlanInfo] = None  # kind "vxlan" only

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def promisc(self) -> bool:
        return bool(self.flags & IFF_PROMISC)


@dataclass(frozen=True)
class Address:
    index: int
    address: str                # bare IP
    prefixlen: int
    scope: int = 0

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"

    @property
    def interface(self) -> "ipaddress.IPv4Interface | ipaddress.IPv6Interface":
        return ipaddress.ip_interface(self.cidr)

    @property
    def family(self) -> int:
        return 6 if ":" in self.address else 4


@dataclass(frozen=True)
class Route:
    dst: str                    # "10.244.0.0/16", "0.0.0.0/0", "::/0"
    gw: Optional[str] = None
    index: int = 0              # output interface
    table: int = RT_TABLE_MAIN
    scope: int = RT_SCOPE_UNIVERSE
    priority: int = 0
    onlink: bool = False
    mtu: int = 0
    advmss: int = 0
    src: Optional[str] = None
    proto: int = 0

    @property
    def family(self) -> int:
        return 6 if ":" in self.dst else 4


@dataclass(frozen=True)
class Neighbour:
    index: int
    ip: Optional[str]           # None for pure FDB entries without a destination
    mac: str
    state: int = 0
    bridge: bool = False        # an FDB (AF_BRIDGE) entry


@dataclass(frozen=True)
class Vlan:
    vid: int
    pvid: bool = False
    untagged: bool = False


def normalize_cidr(cidr: str) -> str:
    """'10.244.0.0/16' stays; '10.244.1.5' becomes '10.244.1.5/32'; 'default' is 0.0.0.0/0."""
    if cidr == "default":
        return "0.0.0.0/0"
    return str(ipaddress.ip_network(cidr, strict=False)) if "/" in cidr else str(
        ipaddress.ip_network(cidr))
