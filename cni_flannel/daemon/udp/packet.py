"""IPv4 packet work for the udp backend, as pure functions on bytearrays (no I/O here).

The wire format is flannel's (pkg/backend/udp/proxy_amd64.c): the payload of every UDP
datagram is exactly one inner IPv4 packet, header first, nothing around it.  The proxy
decrements the inner TTL on each side (an expiring TTL drops the packet, no time-exceeded,
as upstream), and answers a destination inside the Network that has no lease with ICMP
"net unreachable" written back into the TUN device.

The hot path works on preallocated buffers in place (``decrement_ttl``); ``checksum``
uses the identity "one's complement sum of 16-bit words == the number mod 0xFFFF", so the
summing runs in C (``int.from_bytes``) rather than a Python loop.
"""

from __future__ import annotations

from typing import Optional, Union

Buffer = Union[bytearray, memoryview]

IPV4_HEADER = 20
ICMP_HEADER = 8
PROTO_ICMP = 1
ICMP_DEST_UNREACH = 3
ICMP_NET_UNREACH = 0
UNREACH_TTL = 8  # what upstream's proxy puts in its ICMP answers

# Why a packet was dropped: the counter names (udp_drops_total{reason=...}).
SHORT = "short"            # shorter than an IPv4 header
NOT_IPV4 = "not_ipv4"      # version nibble is not 4 (IPv6, garbage)
BAD_HEADER = "bad_header"  # IHL < 5, header longer than the packet, or total length != size
BAD_CHECKSUM = "bad_checksum"
TTL_EXPIRED = "ttl_expired"
REASONS = (SHORT, NOT_IPV4, BAD_HEADER, BAD_CHECKSUM, TTL_EXPIRED)


def checksum(data: Buffer) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    if s == 0 and any(data):
        s = 0xFFFF  # the sum is 0xFFFF ("negative zero"), not 0
    return ~s & 0xFFFF


def check_ipv4(buf: Buffer, n: int, verify_checksum: bool = True) -> Optional[str]:
    """None if ``buf[:n]`` is one well-formed IPv4 packet, else the drop reason."""
    if n < IPV4_HEADER:
        return SHORT
    b0 = buf[0]
    if b0 >> 4 != 4:
        return NOT_IPV4
    hlen = (b0 & 0x0F) * 4
    if hlen < IPV4_HEADER or hlen > n or (buf[2] << 8 | buf[3]) != n:
        return BAD_HEADER
    if verify_checksum and int.from_bytes(buf[:hlen], "big") % 0xFFFF:
        # A correct header sums to 0xFFFF (== 0 mod 0xFFFF); a zero header is caught by length.
        return BAD_CHECKSUM
    return None


def decrement_ttl(buf: Buffer) -> bool:
    """TTL - 1 in place with the header checksum fixed incrementally (RFC 1624 eqn. 3);
    False (buffer untouched) when the TTL would reach zero."""
    ttl = buf[8]
    if ttl <= 1:
        return False
    buf[8] = ttl - 1
    # The 16-bit word (TTL, protocol) drops by 0x100:  HC' = ~(~HC + ~m + m') = ~(~HC + 0xFEFF)
    s = ((buf[10] << 8 | buf[11]) ^ 0xFFFF) + 0xFEFF
    s = (s & 0xFFFF) + (s >> 16)
    s = ~s & 0xFFFF
    buf[10] = s >> 8
    buf[11] = s & 0xFF
    return True


def net_unreachable(offender: Buffer, n: int, src: bytes) -> Optional[bytes]:
    """The ICMP "destination net unreachable" for the packet ``offender[:n]``, from ``src``
    (the TUN address, 4 bytes) to its sender; None where RFC 792/1122 forbid one (the
    offender is ICMP or a non-first fragment) or the header is unusable."""
    if n < IPV4_HEADER or offender[0] >> 4 != 4:
        return None
    hlen = (offender[0] & 0x0F) * 4
    if hlen < IPV4_HEADER or hlen > n:
        return None
    if offender[9] == PROTO_ICMP:
        return None  # never ICMP about ICMP (no loops)
    if (offender[6] << 8 | offender[7]) & 0x1FFF:
        return None  # only the first fragment gets an answer
    quoted = bytes(offender[:min(n, hlen + 8)])  # its header and the first 8 payload bytes
    icmp = bytearray([ICMP_DEST_UNREACH, ICMP_NET_UNREACH, 0, 0, 0, 0, 0, 0]) + quoted
    c = checksum(icmp)
    icmp[2], icmp[3] = c >> 8, c & 0xFF
    total = IPV4_HEADER + len(icmp)
    ip = bytearray([0x45, 0, total >> 8, total & 0xFF, 0, 0, 0, 0, UNREACH_TTL, PROTO_ICMP, 0, 0])
    ip += src + bytes(offender[12:16])
    c = checksum(ip)
    ip[10], ip[11] = c >> 8, c & 0xFF
    return bytes(ip + icmp)


def ipv4_packet(src: bytes, dst: bytes, payload: bytes, proto: int = 17, ttl: int = 64,
                ident: int = 0) -> bytes:
    """A well-formed IPv4 packet (tests, benchmarks)."""
    total = IPV4_HEADER + len(payload)
    ip = bytearray([0x45, 0, total >> 8, total & 0xFF, ident >> 8, ident & 0xFF, 0x40, 0, ttl,
                    proto, 0, 0]) + src + dst
    c = checksum(ip)
    ip[10], ip[11] = c >> 8, c & 0xFF
    return bytes(ip) + payload
