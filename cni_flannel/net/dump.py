"""Read-only netlink dumps without pyroute2: links, addresses, routes, neighbours and FDB of
the calling thread's namespace, as the records of ``types``; and ``nsid_of``, the id this
namespace gives another one (stdlib only).

For readers of many namespaces (``flanneld doctor`` reads every pod's): pyroute2's generic
decoder costs ~5 ms per link message, this ~0.05 ms, and importing it is skipped entirely.
Only the attributes the records carry are parsed; bridge-port flags and VLANs are not
(use :class:`~cni_flannel.net.handle.Handle` for those).
"""

from __future__ import annotations

import socket
import struct
from typing import Dict, Iterator, List, Optional, Tuple

from cni_flannel.net import _rtnl
from cni_flannel.net.types import RT_TABLE_MAIN, Address, Link, Neighbour, Route, VxlanInfo

RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE, RTM_GETNEIGH = 18, 22, 26, 30
RTM_NEWNSID, RTM_GETNSID = 88, 90
NETNSA_NSID, NETNSA_FD = 1, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
AF_BRIDGE = 7
RTNH_F_ONLINK = 4
_HDR = _rtnl.HDR
_ATTR = struct.Struct("=HH")
_OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

Attrs = Dict[int, bytes]


def _attrs(data: bytes, offset: int, end: int) -> Attrs:
    out: Attrs = {}
    while offset + 4 <= end:
        alen, atype = _ATTR.unpack_from(data, offset)
        if alen < 4:
            break
        out[atype & 0x3FFF] = data[offset + 4:offset + alen]
        offset += (alen + 3) & ~3
    return out


def _u32(b: Optional[bytes], default: int = 0) -> int:
    return struct.unpack("=I", b[:4])[0] if b and len(b) >= 4 else default


def _ip(b: Optional[bytes]) -> Optional[str]:
    if not b:
        return None
    if len(b) == 4:
        return socket.inet_ntop(socket.AF_INET, b)
    if len(b) == 16:
        return socket.inet_ntop(socket.AF_INET6, b)
    return None


def _mac(b: Optional[bytes]) -> str:
    return ":".join(f"{x:02x}" for x in b) if b else ""


def _text(b: Optional[bytes]) -> str:
    return b.split(b"\0", 1)[0].decode(errors="replace") if b else ""


class Dumper:
    """One NETLINK_ROUTE socket of the namespace the calling thread is in when it is made."""

    def __init__(self) -> None:
        self._sock = _rtnl.open_socket()
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Dumper":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _dump(self, mtype: int, body: bytes, flags: int = NLM_F_DUMP) -> Iterator[Tuple[bytes, int, int]]:
        """(data, payload offset, message end) for each reply message."""
        self._seq += 1
        self._sock.send(_HDR.pack(_HDR.size + len(body), mtype, NLM_F_REQUEST | flags, self._seq, 0) + body)
        for data, rtype, start, end in _rtnl.replies(self._sock, self._seq):
            yield data, start, end
            if rtype == RTM_NEWNSID:  # the one answer to a GETNSID request
                return

    def links(self) -> List[Link]:
        out = []
        for data, start, end in self._dump(RTM_GETLINK, struct.pack("=BxHiII", 0, 0, 0, 0, 0)):
            _fam, _type, index, flags, _change = struct.unpack_from("=BxHiII", data, start)
            a = _attrs(data, start + 16, end)
            kind, vxlan = "", None
            info = a.get(18)  # IFLA_LINKINFO
            if info:
                ia = _attrs(info, 0, len(info))
                kind = _text(ia.get(1))
                if kind == "vxlan" and 2 in ia:
                    va = _attrs(ia[2], 0, len(ia[2]))
                    port = struct.unpack("!H", va[15][:2])[0] if 15 in va else 0
                    vxlan = VxlanInfo(vni=_u32(va.get(1)), local=_ip(va.get(4)) or _ip(va.get(17)), port=port,
                                      learning=bool(va.get(7, b"\0")[0]), gbp=23 in va, link=_u32(va.get(3)))
            netnsid = struct.unpack("=i", a[37][:4])[0] if 37 in a else None
            state = a.get(16, b"\0")[0]
            out.append(Link(index=index, name=_text(a.get(3)), kind=kind, mac=_mac(a.get(1)), mtu=_u32(a.get(4)),
                            flags=flags, master=_u32(a.get(10)), peer_netnsid=netnsid,
                            operstate=_OPERSTATES[state] if state < len(_OPERSTATES) else str(state), vxlan=vxlan))
        return out

    def addresses(self) -> List[Address]:
        out = []
        for data, start, end in self._dump(RTM_GETADDR, struct.pack("=BBBBI", 0, 0, 0, 0, 0)):
            _fam, prefixlen, _flags, scope, index = struct.unpack_from("=BBBBI", data, start)
            a = _attrs(data, start + 8, end)
            ip = _ip(a.get(2)) or _ip(a.get(1))  # IFA_LOCAL, else IFA_ADDRESS
            if ip is not None:
                out.append(Address(index=index, address=ip, prefixlen=prefixlen, scope=scope))
        return out

    def routes(self, table: Optional[int] = RT_TABLE_MAIN) -> List[Route]:
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for data, start, end in self._dump(RTM_GETROUTE, struct.pack("=BBBBBBBBI", family, 0, 0, 0, 0, 0, 0, 0, 0)):
                fam, dst_len, _src, _tos, tbl, proto, scope, _rtype, flags = struct.unpack_from("=BBBBBBBBI", data, start)
                a = _attrs(data, start + 12, end)
                tbl = _u32(a.get(15), tbl)
                if table is not None and tbl != table:
                    continue
                dst = _ip(a.get(1)) or ("0.0.0.0" if fam == socket.AF_INET else "::")
                out.append(Route(dst=f"{dst}/{dst_len}", gw=_ip(a.get(5)), index=_u32(a.get(4)), table=tbl,
                                 scope=scope, priority=_u32(a.get(6)), onlink=bool(flags & RTNH_F_ONLINK),
                                 src=_ip(a.get(7)), proto=proto))
        return out

    def neighbours(self, bridge: bool = False) -> List[Neighbour]:
        out = []
        body = struct.pack("=BxxxiHBB", AF_BRIDGE if bridge else 0, 0, 0, 0, 0)
        for data, start, end in self._dump(RTM_GETNEIGH, body):
            fam, index, state, _flags, _type = struct.unpack_from("=BxxxiHBB", data, start)
            a = _attrs(data, start + 12, end)
            out.append(Neighbour(index=index, ip=_ip(a.get(1)), mac=_mac(a.get(2)), state=state,
                                 bridge=fam == AF_BRIDGE))
        return out

    def nsid_of(self, fd: int) -> int:
        """The id this namespace gives the namespace open at ``fd``; -1 when it gives none.

        A veth whose peer lives in another namespace names it by this id
        (``Link.peer_netnsid``), so the namespaces at the other end of our veths are told
        apart from every other one without entering them."""
        body = struct.pack("=B3x", socket.AF_UNSPEC) + struct.pack("=HHI", 8, NETNSA_FD, fd)
        for data, start, end in self._dump(RTM_GETNSID, body, flags=0):
            a = _attrs(data, start + 4, end)
            if NETNSA_NSID in a:
                return struct.unpack("=i", a[NETNSA_NSID][:4])[0]
        return -1
