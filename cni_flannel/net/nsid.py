"""Which id the current network namespace gives another one (RTM_GETNSID; stdlib only).

A veth whose peer lives in another namespace reports that namespace by id
(``Link.peer_netnsid``); ``nsid_of(fd)`` answers the id of a namespace given
by file descriptor, -1 when it has none here -- so the namespaces on the
other end of our veths can be told apart from every other one without
entering them.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

from cni_flannel.net.errors import NetlinkError

RTM_NEWNSID, RTM_GETNSID = 88, 90
NETNSA_NSID, NETNSA_FD = 1, 3
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 2
_HDR = struct.Struct("=IHHII")


class NsidSocket:
    """One NETLINK_ROUTE socket of the calling thread's namespace, for many lookups."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        self._sock.bind((0, 0))
        self._seq = 0

    def nsid_of(self, fd: int) -> int:
        self._seq += 1
        body = struct.pack("=B3x", socket.AF_UNSPEC) + struct.pack("=HHI", 8, NETNSA_FD, fd)
        self._sock.send(_HDR.pack(_HDR.size + len(body), RTM_GETNSID, NLM_F_REQUEST, self._seq, 0) + body)
        while True:
            data = self._sock.recv(65536)
            length, mtype, _flags, seq, _pid = _HDR.unpack_from(data, 0)
            if seq != self._seq:
                continue
            if mtype == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, _HDR.size)
                raise NetlinkError(-code, os.strerror(-code))
            if mtype != RTM_NEWNSID:
                raise NetlinkError(0, f"unexpected netlink reply type {mtype}")
            offset = _HDR.size + 4
            while offset + 4 <= length:
                alen, atype = struct.unpack_from("=HH", data, offset)
                if atype == NETNSA_NSID and alen >= 8:
                    return struct.unpack_from("=i", data, offset + 4)[0]
                offset += (alen + 3) & ~3
            return -1

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "NsidSocket":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
