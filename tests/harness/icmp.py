"""Minimal ICMP echo (IPv4 and IPv6) for namespaces without iputils-ping.

Run inside a namespace as a script: ``python icmp.py ADDR [TIMEOUT]`` exits 0
when ADDR answers one echo request, 1 otherwise. Stdlib only, needs root.
"""
from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import sys
import time

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(addr: str, timeout: float = 2.0) -> bool:
    """Send one echo request to addr; True when the matching reply arrives."""
    version = ipaddress.ip_address(addr).version
    family, proto = (socket.AF_INET, socket.IPPROTO_ICMP) if version == 4 else (
        socket.AF_INET6, socket.IPPROTO_ICMPV6)
    ident, seq = os.getpid() & 0xFFFF, 1
    header = struct.pack("!BBHHH", ECHO_REQUEST[version], 0, 0, ident, seq)
    payload = b"cni-flannel-harness"
    csum = _checksum(header + payload) if version == 4 else 0  # kernel fills ICMPv6's
    packet = struct.pack("!BBHHH", ECHO_REQUEST[version], 0, csum, ident, seq) + payload
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        try:
            sock.sendto(packet, (addr, 0))
        except OSError:  # e.g. network unreachable
            return False
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                return False
            data, _ = sock.recvfrom(65535)
            icmp = data[(data[0] & 0x0F) * 4:] if version == 4 else data  # v4 raw includes the IP header
            kind, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
            if kind == ECHO_REPLY[version] and rid == ident and rseq == seq:
                return True
    return False


if __name__ == "__main__":
    sys.exit(0 if ping(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 2.0) else 1)
