"""ICMP echo packets for raw sockets (IPv4 and IPv6), stdlib only: the doctor's overlay probe
and the test harness's ping build and read them here."""

from __future__ import annotations

import struct
from typing import Optional, Tuple

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(version: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An echo request; for IPv6 the checksum stays 0 (the kernel fills ICMPv6's)."""
    header = struct.pack("!BBHHH", ECHO_REQUEST[version], 0, 0, ident, seq)
    csum = checksum(header + payload) if version == 4 else 0
    return struct.pack("!BBHHH", ECHO_REQUEST[version], 0, csum, ident, seq) + payload


def echo_reply(version: int, data: bytes) -> Optional[Tuple[int, int]]:
    """(ident, seq) of an echo reply read from a raw socket, else None (IPv4 raw sockets
    return the IP header too; IPv6 ones do not)."""
    icmp = data[(data[0] & 0x0F) * 4:] if version == 4 and data else data
    if len(icmp) < 8:
        return None
    kind, _, _, ident, seq = struct.unpack("!BBHHH", icmp[:8])
    return (ident, seq) if kind == ECHO_REPLY[version] else None
