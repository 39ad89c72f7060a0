"""A link (RTM_NEWLINK) reply to :class:`Link`, reading only the attributes ``Link`` holds.

pyroute2 decodes every attribute of a link message — statistics, the per-family
``IFLA_AF_SPEC`` arrays, ``IFLA_PROP_LIST`` — into Python objects: ~0.3 ms of
CPU per message, and a pod's bridge ADD reads a dozen links.  This walks the
attributes as bytes and decodes the eight it needs.  vxlan links (the daemon's,
never on a pod's path) still go through pyroute2: see :func:`parse`.

Sans-I/O: bytes in, Link (or None: "ask pyroute2") out.
"""

from __future__ import annotations

import struct
from typing import Dict, Iterator, Optional, Tuple

from cni_flannel.net.types import Link

_NLMSG = 16  # struct nlmsghdr
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_NLA = struct.Struct("=HH")
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_LINK_NETNSID = 16, 18, 37
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
IFLA_BR_VLAN_FILTERING = 7
#: bridge port attributes -> Link.port keys
_PORT_FLAGS = {4: "hairpin", 8: "learning", 33: "isolated"}  # IFLA_BRPORT_MODE, _LEARNING, _ISOLATED
#: RFC 2863 operational states, as pyroute2 names them
_OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")


def _attrs(data: bytes, start: int, end: int) -> Iterator[Tuple[int, bytes]]:
    """(type, payload) of each attribute in data[start:end]; stops at a malformed one."""
    pos = start
    while pos + 4 <= end:
        length, kind = _NLA.unpack_from(data, pos)
        if length < 4 or pos + length > end:
            return
        yield kind & _NLA_TYPE_MASK, data[pos + 4:pos + length]
        pos += (length + 3) & ~3


def _table(payload: bytes) -> Dict[int, bytes]:
    return dict(_attrs(payload, 0, len(payload)))


def _string(payload: bytes) -> str:
    return payload.split(b"\0", 1)[0].decode("utf-8", "replace")


def _u32(payload: bytes) -> int:
    return struct.unpack_from("=I", payload)[0]


def parse(chunk: bytes) -> Optional[Link]:
    """The Link in one netlink message (header included); None when pyroute2 must decode it."""
    if len(chunk) < _NLMSG + _IFINFO.size:
        return None
    _family, _type, index, flags, _change = _IFINFO.unpack_from(chunk, _NLMSG)
    top = dict(_attrs(chunk, _NLMSG + _IFINFO.size, len(chunk)))
    kind = ""
    port: Dict[str, int] = {}
    vlan_filtering: Optional[bool] = None
    if IFLA_LINKINFO in top:
        info = _table(top[IFLA_LINKINFO])
        kind = _string(info.get(IFLA_INFO_KIND, b""))
        if kind == "vxlan":
            return None
        if _string(info.get(IFLA_INFO_SLAVE_KIND, b"")) == "bridge" and IFLA_INFO_SLAVE_DATA in info:
            for attr, value in _attrs(info[IFLA_INFO_SLAVE_DATA], 0, len(info[IFLA_INFO_SLAVE_DATA])):
                if attr in _PORT_FLAGS and value:
                    port[_PORT_FLAGS[attr]] = value[0]
        if kind == "bridge" and IFLA_INFO_DATA in info:
            value = _table(info[IFLA_INFO_DATA]).get(IFLA_BR_VLAN_FILTERING)
            if value:
                vlan_filtering = bool(value[0])
    mac = top.get(IFLA_ADDRESS, b"")
    state = top.get(IFLA_OPERSTATE, b"")
    netnsid = top.get(IFLA_LINK_NETNSID)
    return Link(index=index, name=_string(top.get(IFLA_IFNAME, b"")), kind=kind,
                mac=":".join(f"{b:02x}" for b in mac),
                mtu=_u32(top[IFLA_MTU]) if IFLA_MTU in top else 0, flags=flags,
                master=_u32(top[IFLA_MASTER]) if IFLA_MASTER in top else 0,
                peer_netnsid=struct.unpack_from("=i", netnsid)[0] if netnsid else None, port=port,
                vlan_filtering=vlan_filtering,
                operstate=_OPERSTATES[state[0]] if state and state[0] < len(_OPERSTATES) else "",
                vxlan=None)
