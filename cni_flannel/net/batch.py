"""Many neighbour, FDB and route changes in few netlink round trips (the daemon at scale).

``Handle`` sends one request and waits for its ACK, encoding through pyroute2's message
classes: ~1.5 ms a change, so 2,000 peers (6,000 entries) take ~10 s.  Here the three message
kinds a flannel backend needs are packed with ``struct`` (microseconds each), up to
``WINDOW`` of them go to the kernel in one ``send`` (rtnetlink processes every message of a
datagram in order), and the ACKs are matched back by sequence number: one errno per change.

    with Batch(netns=None) as b:
        errs = b.run([neigh(True, 5, "10.244.2.0", "0a:58:..."), fdb(True, 5, "0a:58:...", "198.18.0.2"),
                      route(True, "10.244.2.0/24", "10.244.2.0", 5, onlink=True)])
    # errs[i]: 0, or the errno of change i (ENOENT on a delete: already gone)
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any, List, Optional, Tuple

from cni_flannel.net import _rtnl, ns

NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
NLMSG_ERROR = 2
RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWNEIGH, RTM_DELNEIGH = 24, 25, 28, 29
NDA_DST, NDA_LLADDR = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
AF_BRIDGE = 7
NUD_PERMANENT = 0x80
NTF_SELF = 0x2
RTNH_F_ONLINK = 0x4
RTPROT_BOOT = 3
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE, RT_SCOPE_NOWHERE = 0, 255
RT_TABLE_MAIN = 254
WINDOW = 256

_HDR = _rtnl.HDR
_NDMSG = struct.Struct("=BBHiHBB")
_RTMSG = struct.Struct("=BBBBBBBBI")

Message = Tuple[int, int, bytes]  # (type, flags, payload after the header)


def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * ((4 - length % 4) % 4)


def _ip(text: str) -> Tuple[int, bytes]:
    addr = ipaddress.ip_address(text)
    return (socket.AF_INET if addr.version == 4 else socket.AF_INET6), addr.packed


def _mac(text: str) -> bytes:
    return bytes(int(p, 16) for p in text.split(":"))


def _change(add: bool, new: int, delete: int) -> Tuple[int, int]:
    return (new, NLM_F_CREATE | NLM_F_REPLACE) if add else (delete, 0)


def neigh(add: bool, index: int, ip: str, mac: Optional[str] = None) -> Message:
    """`ip neigh replace <ip> lladdr <mac> dev <index> nud permanent` / `ip neigh del <ip> dev <index>`."""
    family, packed = _ip(ip)
    body = _NDMSG.pack(family, 0, 0, index, NUD_PERMANENT, 0, 0) + _attr(NDA_DST, packed)
    if mac and add:
        body += _attr(NDA_LLADDR, _mac(mac))
    return (*_change(add, RTM_NEWNEIGH, RTM_DELNEIGH), body)


def fdb(add: bool, index: int, mac: str, dst: Optional[str]) -> Message:
    """`bridge fdb replace <mac> dev <index> dst <dst> self permanent` / `bridge fdb del ...`."""
    body = _NDMSG.pack(AF_BRIDGE, 0, 0, index, NUD_PERMANENT, NTF_SELF, 0) + _attr(NDA_LLADDR, _mac(mac))
    if dst:
        body += _attr(NDA_DST, _ip(dst)[1])
    return (*_change(add, RTM_NEWNEIGH, RTM_DELNEIGH), body)


def route(add: bool, dst: str, gw: Optional[str], index: int, onlink: bool = False,
          metric: int = 0) -> Message:
    """`ip route replace <dst> via <gw> dev <index> [onlink]` in the main table / `ip route del`."""
    net = ipaddress.ip_network(dst, strict=False)
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    scope = RT_SCOPE_UNIVERSE if add else RT_SCOPE_NOWHERE  # a delete matches any scope
    proto = RTPROT_BOOT if add else 0
    body = _RTMSG.pack(family, net.prefixlen, 0, 0, RT_TABLE_MAIN, proto, scope, RTN_UNICAST,
                       RTNH_F_ONLINK if onlink else 0)
    body += _attr(RTA_TABLE, struct.pack("=I", RT_TABLE_MAIN))
    if net.prefixlen:
        body += _attr(RTA_DST, net.network_address.packed)
    if gw:
        body += _attr(RTA_GATEWAY, _ip(gw)[1])
    if index:
        body += _attr(RTA_OIF, struct.pack("=i", index))
    if metric:
        body += _attr(RTA_PRIORITY, struct.pack("=I", metric))
    return (*_change(add, RTM_NEWROUTE, RTM_DELROUTE), body)


class Batch:
    """A NETLINK_ROUTE socket in ``netns`` (None: the caller's) for batches of changes."""

    def __init__(self, netns: Optional[str] = None) -> None:
        with ns.enter(netns):
            self._sock = _rtnl.open_socket()
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, messages: List[Message]) -> List[int]:
        """Apply ``messages`` in order; the errno of each (0: done)."""
        errors: List[int] = []
        for start in range(0, len(messages), WINDOW):
            errors += self._window(messages[start:start + WINDOW])
        return errors

    def _window(self, messages: List[Message]) -> List[int]:
        first = self._seq + 1
        out = bytearray()
        for kind, flags, body in messages:
            self._seq += 1
            out += _HDR.pack(_HDR.size + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, self._seq, 0)
            out += body
        self._sock.send(bytes(out))
        result: List[Optional[int]] = [None] * len(messages)
        pending = len(messages)
        while pending:
            data = _rtnl.receive(self._sock)
            for mtype, seq, start, _end in _rtnl.walk(data):
                if mtype == NLMSG_ERROR and first <= seq < first + len(messages):
                    if result[seq - first] is None:
                        pending -= 1
                    result[seq - first] = _rtnl.error_code(data, start)
        return [r or 0 for r in result]
